"""A Mattermost stand-in on loopback: the parts of Mattermost's REST API v4 and websocket that OpenClaw's Mattermost
plugin (2026.9.2) and agentd use, with one team, channels, users and bots, and channel membership deciding who hears
what (as in Mattermost: a `posted` event reaches the members of its channel).

Read from the plugin (dist/channel.runtime-*.js, client-*.js): it logs in with GET /users/me (Bearer bot token),
opens /api/v4/websocket, sends `authentication_challenge` {seq, data: {token}} and waits for {status: OK,
seq_reply}; a `posted` event's data.post is a JSON *string*; it looks up channels (GET /channels/{id}) and users
(GET /users/{id}), shows typing (POST /users/me/typing), and answers with POST /posts, which its preview streaming
edits in place (PUT /posts/{id}) or deletes. The websocket is the small RFC 6455 subset a server needs (the stdlib
has none): handshake, text frames, ping/pong, close.

A test posts as a person with `say(user, channel, text)` or `dm(user, bot, text)` and reads the bots' posts with
`posts_by(bot, channel)`.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from tests.http_json import send_json

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def new_id() -> str:
    """Mattermost ids: 26 lowercase letters and digits."""
    return base64.b32encode(secrets.token_bytes(20)).decode().lower()[:26]


class WebSocket:
    """One server side connection: unmasked frames out (under a lock: events come from other threads), masked in."""

    def __init__(self, sock: socket.socket, rfile):
        self.sock, self.rfile, self.lock = sock, rfile, threading.Lock()
        self.user_id: Optional[str] = None
        self.closed = False

    def send(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        header = bytes([0x80 | opcode]) + (bytes([n]) if n < 126 else
                                            b"\x7e" + struct.pack(">H", n) if n < 65536 else
                                            b"\x7f" + struct.pack(">Q", n))
        with self.lock:
            if self.closed:
                return
            try:
                self.sock.sendall(header + payload)
            except OSError:
                self.closed = True

    def send_json(self, data: dict) -> None:
        self.send(0x1, json.dumps(data).encode())

    def receive(self) -> Optional[tuple[int, bytes]]:
        """The next frame (opcode, payload), or None when the peer is gone. Fragments are not used by the plugin."""
        head = self.rfile.read(2)
        if len(head) < 2:
            return None
        opcode, n = head[0] & 0x0F, head[1] & 0x7F
        if n == 126:
            n = struct.unpack(">H", self.rfile.read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self.rfile.read(8))[0]
        mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
        data = self.rfile.read(n)
        return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


class MattermostStandIn:
    """One team (`team`), channels by name, people and bots; REST and websocket on 127.0.0.1:`port`."""

    def __init__(self, team: str = "agentfleet", channels=("town-square", "dev", "random")):
        self.lock = threading.RLock()
        self.team = {"id": new_id(), "name": team, "display_name": team}
        self.users: dict[str, dict] = {}        # id -> user
        self.tokens: dict[str, str] = {}        # bot token -> user id
        self.channels: dict[str, dict] = {}     # id -> channel (with "members": set of user ids)
        self.posts: dict[str, dict] = {}        # id -> post (edits applied), in creation order
        self.requests: list[tuple[str, str, str]] = []   # (method, path, Authorization) of every request
        self.sockets: list[WebSocket] = []
        self.seq = 0
        for name in channels:
            self.add_channel(name)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    # --- the world a test sets up ---------------------------------------------------------------------------------
    def add_channel(self, name: str, kind: str = "O") -> dict:
        with self.lock:
            channel = {"id": new_id(), "name": name, "display_name": name, "type": kind,
                       "team_id": self.team["id"] if kind in "OP" else "", "members": set()}
            self.channels[channel["id"]] = channel
            return channel

    def add_user(self, username: str, bot_token: str = "", channels=()) -> dict:
        """A person (or, with a token, a bot) on the team, a member of `channels`."""
        with self.lock:
            user = {"id": new_id(), "username": username, "is_bot": bool(bot_token), "update_at": 1,
                    "first_name": "", "last_name": "", "nickname": ""}
            self.users[user["id"]] = user
            if bot_token:
                self.tokens[bot_token] = user["id"]
            for name in channels:
                self.channel(name)["members"].add(user["id"])
            return user

    def user(self, username: str) -> dict:
        return next(u for u in self.users.values() if u["username"] == username)

    def channel(self, name: str) -> dict:
        return next(c for c in self.channels.values() if c["name"] == name)

    def members(self, name: str) -> set[str]:
        return {self.users[u]["username"] for u in self.channel(name)["members"]}

    # --- what a test does and reads -------------------------------------------------------------------------------
    def say(self, username: str, channel: str, text: str) -> dict:
        """`username` posts `text` in `channel` (as the web app would): stored, and a `posted` event to its members."""
        return self._post(self.user(username)["id"], self.channel(channel)["id"], text)

    def dm(self, username: str, to: str, text: str) -> dict:
        a, b = self.user(username)["id"], self.user(to)["id"]
        return self._post(a, self._direct(a, b)["id"], text)

    def posts_by(self, username: str, channel: Optional[str] = None) -> list[dict]:
        """Everything `username` posted (in `channel`), as it reads now (edits applied, deletions gone)."""
        uid = self.user(username)["id"]
        with self.lock:
            return [p for p in self.posts.values() if p["user_id"] == uid and p["delete_at"] == 0
                    and (channel is None or p["channel_id"] == self._channel_id(channel))]

    def direct_channel(self, a: str, b: str) -> str:
        return self._direct(self.user(a)["id"], self.user(b)["id"])["name"]

    def logged_in(self, token: str) -> bool:
        return ("GET", "/api/v4/users/me", f"Bearer {token}") in self.requests

    def connected(self, username: str) -> bool:
        """The user's websocket is open and authenticated."""
        uid = self.user(username)["id"]
        return any(ws.user_id == uid and not ws.closed for ws in list(self.sockets))

    def close(self) -> None:
        for ws in list(self.sockets):
            ws.closed = True
            with contextlib.suppress(OSError):
                ws.sock.shutdown(socket.SHUT_RDWR)
        self.server.shutdown()
        self.server.server_close()

    # --- the model ----------------------------------------------------------------------------------------------------
    def _channel_id(self, name_or_id: str) -> str:
        return name_or_id if name_or_id in self.channels else self.channel(name_or_id)["id"]

    def _direct(self, a: str, b: str) -> dict:
        name = "__".join(sorted((a, b)))
        with self.lock:
            for c in self.channels.values():
                if c["name"] == name:
                    return c
            channel = self.add_channel(name, "D")
            channel["members"].update((a, b))
            return channel

    def _post(self, user_id: str, channel_id: str, message: str, root_id: str = "") -> dict:
        now = int(time.time() * 1000)
        post = {"id": new_id(), "create_at": now, "update_at": now, "edit_at": 0, "delete_at": 0, "user_id": user_id,
                "channel_id": channel_id, "root_id": root_id, "message": message, "type": "", "props": {},
                "hashtags": "", "file_ids": [], "pending_post_id": ""}
        with self.lock:
            self.posts[post["id"]] = post
            channel = self.channels[channel_id]
            sender = self.users[user_id]
            self.seq += 1
            event = {"event": "posted", "seq": self.seq,
                     "data": {"channel_display_name": channel["display_name"], "channel_name": channel["name"],
                              "channel_type": channel["type"], "post": json.dumps(post),
                              "sender_name": f"@{sender['username']}", "team_id": channel["team_id"]},
                     "broadcast": {"channel_id": channel_id, "team_id": "", "user_id": "", "omit_users": None}}
            listeners = [ws for ws in self.sockets if ws.user_id in channel["members"] and not ws.closed]
        for ws in listeners:
            ws.send_json(event)
        return post

    def _user_for(self, auth: str) -> Optional[str]:
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        return self.tokens.get(token)

    def answer(self, method: str, path: str, body, auth: str) -> tuple[int, object]:
        """REST: (status, JSON body) for one request."""
        if path == "/api/v4/system/ping":
            return 200, {"status": "OK"}
        me = self._user_for(auth)
        if me is None:
            return 401, {"id": "api.context.session_expired.app_error", "status_code": 401}
        parts = path.strip("/").split("/")[2:]   # after api/v4
        with self.lock:
            if parts[:1] == ["users"]:
                if parts[1:] == ["me"]:
                    return 200, self.users[me]
                if parts[1:] == ["me", "typing"] and method == "POST":
                    return 200, {"status": "OK"}
                if parts[1:2] == ["username"]:
                    found = [u for u in self.users.values() if u["username"] == parts[2]]
                    return (200, found[0]) if found else (404, {})
                if len(parts) == 3 and parts[2] == "teams":
                    return 200, [self.team]
                if len(parts) == 5 and parts[2] == "teams" and parts[4] == "channels":
                    uid = me if parts[1] == "me" else parts[1]
                    return 200, [self._public(c) for c in self.channels.values()
                                 if c["team_id"] == parts[3] and uid in c["members"]]
                if len(parts) == 2 and parts[1] in self.users:
                    return 200, self.users[parts[1]]
                return 404, {}
            if parts[:1] == ["teams"]:
                if parts[1:3] == ["name", self.team["name"]]:
                    return 200, self.team
                if parts[1:2] == [self.team["id"]] and parts[2:4] == ["channels", "name"]:
                    found = [c for c in self.channels.values() if c["name"] == parts[4] and c["type"] in "OP"]
                    return (200, self._public(found[0])) if found else (404, {})
                return 404, {}
            if parts[:1] == ["channels"]:
                if parts[1:] == ["direct"] and method == "POST":
                    return 201, self._public(self._direct(*body))
                channel = self.channels.get(parts[1]) if len(parts) > 1 else None
                if channel is None:
                    return 404, {}
                if len(parts) == 2:
                    return 200, self._public(channel)
                if parts[2:] == ["members"] and method == "POST":
                    channel["members"].add(body["user_id"])
                    return 201, {"channel_id": channel["id"], "user_id": body["user_id"]}
                if parts[2] == "members" and len(parts) == 4 and method == "DELETE":
                    channel["members"].discard(parts[3])
                    return 200, {"status": "OK"}
                if parts[2:] == ["posts"]:
                    posts = [p for p in self.posts.values() if p["channel_id"] == channel["id"]]
                    return 200, {"order": [p["id"] for p in posts][::-1], "posts": {p["id"]: p for p in posts}}
                return 404, {}
            if parts == ["posts"] and method == "POST":
                if me not in self.channels.get(body.get("channel_id"), {"members": ()})["members"]:
                    return 403, {"id": "api.context.permissions.app_error", "status_code": 403}
                return 201, self._post(me, body["channel_id"], body.get("message", ""), body.get("root_id") or "")
            if parts[:1] == ["posts"] and len(parts) >= 2 and parts[1] in self.posts:
                post = self.posts[parts[1]]
                if method == "DELETE":
                    post["delete_at"] = int(time.time() * 1000)
                    return 200, {"status": "OK"}
                if method in ("PUT", "POST") and body is not None:
                    post.update(message=body.get("message", post["message"]), edit_at=int(time.time() * 1000))
                return 200, post
        return 404, {}

    @staticmethod
    def _public(channel: dict) -> dict:
        return {k: v for k, v in channel.items() if k != "members"}

    # --- HTTP and websocket -----------------------------------------------------------------------------------------
    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self):
                path = self.path.split("?")[0]
                auth = self.headers.get("Authorization", "")
                standin.requests.append((self.command, path, auth))
                if path == "/api/v4/websocket" and self.headers.get("Upgrade", "").lower() == "websocket":
                    return self._websocket()
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                send_json(self, *standin.answer(self.command, path, body, auth))

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def _websocket(self):
                accept = base64.b64encode(hashlib.sha1(
                    (self.headers["Sec-WebSocket-Key"] + WS_GUID).encode()).digest()).decode()
                self.send_response(101)
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.end_headers()
                self.wfile.flush()
                ws = WebSocket(self.connection, self.rfile)
                standin.sockets.append(ws)
                try:
                    while True:
                        frame = ws.receive()
                        if frame is None or frame[0] == 0x8:
                            ws.send(0x8, b"\x03\xe8")
                            break
                        opcode, payload = frame
                        if opcode == 0x9:
                            ws.send(0xA, payload)
                        elif opcode == 0x1:
                            self._action(ws, json.loads(payload))
                finally:
                    ws.closed = True
                    self.close_connection = True

            def _action(self, ws: WebSocket, message: dict):
                if message.get("action") == "authentication_challenge":
                    user = standin.tokens.get((message.get("data") or {}).get("token", ""))
                    if user is None:
                        ws.send(0x8, b"\x0f\xa0")    # 4000: as Mattermost closes an unauthenticated socket
                        return
                    ws.user_id = user
                    ws.send_json({"status": "OK", "seq_reply": message.get("seq")})
                    ws.send_json({"event": "hello", "data": {"server_version": "9.5.0"}, "seq": 0,
                                  "broadcast": {"user_id": user}})

            def log_message(self, *args):
                pass

        return Handler
