"""A model API stand-in on loopback: OpenAI's chat completions (`api: openai-completions` in OpenClaw's config), the
simplest API OpenClaw speaks to a provider at a base URL of ours. Answers every request with one canned reply,
streamed as server-sent events when asked (OpenClaw streams), and records each request (its Authorization header
and body) so a test can check what reached the model and with which key."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.http_json import send_json


class ModelStandIn:
    def __init__(self, reply: str, model: str = "standin-1"):
        self.reply, self.model = reply, model
        self.requests: list[dict] = []   # {"path", "auth", "body"} per POST
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                if self.path.split("?")[0].rstrip("/").endswith("/models"):
                    return self._json(200, {"object": "list", "data": [
                        {"id": standin.model, "object": "model", "created": 0, "owned_by": "standin"}]})
                self._json(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    return self._json(400, {"error": {"message": "not JSON"}})
                standin.requests.append({"path": self.path, "auth": self.headers.get("Authorization", ""),
                                         "body": body})
                if not self.path.split("?")[0].endswith("/chat/completions"):
                    return self._json(404, {"error": {"message": "not found"}})
                if body.get("stream"):
                    return self._stream()
                self._json(200, {"id": "chatcmpl-standin", "object": "chat.completion", "created": int(time.time()),
                                 "model": standin.model, "choices": [{
                                     "index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": standin.reply}}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

            def _stream(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                base = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": int(time.time()),
                        "model": standin.model}
                chunks = [{"index": 0, "delta": {"role": "assistant", "content": standin.reply},
                           "finish_reason": None},
                          {"index": 0, "delta": {}, "finish_reason": "stop"}]
                for choice in chunks:
                    self.wfile.write(f"data: {json.dumps({**base, 'choices': [choice]})}\n\n".encode())
                usage = {**base, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                                          "total_tokens": 2}}
                self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
                self.wfile.flush()
                self.close_connection = True

            def _json(self, status: int, data: dict):
                send_json(self, status, data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def user_texts(self) -> list[str]:
        """Every user message's text the model was sent, across requests."""
        return [text for r in self.requests for text in self.texts_of(r)]

    @staticmethod
    def texts_of(request: dict) -> list[str]:
        out = []
        for m in request["body"].get("messages", []):
            if m.get("role") == "user":
                content = m.get("content")
                out.append(content if isinstance(content, str) else
                           " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict)))
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
