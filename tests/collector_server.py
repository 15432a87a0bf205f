"""A real collector for tests: `python -m collector serve` in a subprocess on a free loopback port.

Also used by agentd's delivery tests: `with running_collector(tmp_path) as c: ... c.url, c.token("athena")`.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator, Optional

from agentd.protocol import REPORTS_PATH, agent_token

ROOT = Path(__file__).resolve().parent.parent
SECRET = b"test-collector-secret"
STOP_GRACE_S = 60          # the collector joins its backup thread for up to 60 s (collector/backup.py) on a stop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Collector:
    url: str
    db_url: str
    secret: bytes
    process: subprocess.Popen
    log_path: Path

    def token(self, agent: str) -> str:
        return agent_token(self.secret, agent)

    def post(self, report: dict[str, Any], token: Optional[str] = None) -> tuple[int, dict]:
        """POST a report with the agent's token (or the one given); returns (status, JSON answer)."""
        body = json.dumps(report).encode()
        request = urllib.request.Request(self.url + REPORTS_PATH, data=body, method="POST", headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token if token is not None else self.token(report['agent'])}"})
        return _send(request)

    def get(self, path: str) -> tuple[int, Any]:
        return _send(urllib.request.Request(self.url + path))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """`sig`, then SIGKILL after STOP_GRACE_S: as long as the collector itself gives a backup in progress to
        finish, so that a loaded machine does not turn a clean stop into a kill mid-backup (a `.partial` left)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _send(request: urllib.request.Request) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw, kind = response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        status, raw, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
    return status, json.loads(raw) if kind.startswith("application/json") else raw.decode()


def start_collector(workdir: Path, *extra: str, db_url: Optional[str] = None, port: Optional[int] = None,
                    secret: bytes = SECRET, webhook_url: Optional[str] = None) -> Collector:
    """`webhook_url` goes into a 0600 file passed as --webhook-file (a URL in argv is readable by every user)."""
    workdir.mkdir(parents=True, exist_ok=True)
    secret_file = workdir / "collector.secret"
    secret_file.write_bytes(secret + b"\n")
    secret_file.chmod(0o600)
    if webhook_url is not None:
        webhook_file = workdir / "webhook.url"
        webhook_file.write_text(webhook_url + "\n")
        webhook_file.chmod(0o600)
        extra = ("--webhook-file", str(webhook_file), *extra)
    db_url = db_url or f"sqlite:///{workdir / 'collector.db'}"
    port = port or free_port()
    log_path = workdir / f"collector-{port}.log"
    argv = [sys.executable, "-m", "collector", "serve", "--listen", f"127.0.0.1:{port}", "--db", db_url,
            "--secret-file", str(secret_file), *extra]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    collector = Collector(f"http://127.0.0.1:{port}", db_url, secret, process, log_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"collector exited with {process.returncode}:\n{collector.log()}")
        with contextlib.suppress(OSError):
            if collector.get("/healthz")[0] == 200:
                return collector
        time.sleep(0.05)
    collector.stop(signal.SIGKILL)
    raise RuntimeError(f"collector did not answer /healthz within 20 s:\n{collector.log()}")


@contextlib.contextmanager
def running_collector(workdir: Path, *extra: str, **kwargs: Any) -> Iterator[Collector]:
    collector = start_collector(workdir, *extra, **kwargs)
    try:
        yield collector
    finally:
        collector.stop()


def report(agent: str = "athena", seq: int = 1, **fields: Any) -> dict[str, Any]:
    """A valid report; override any field."""
    base = {"agent": agent, "seq": seq, "sent_at": time.time(), "image_version": "2024.1-abc", "host": "hv1",
            "role": "developer", "checks": [{"name": "disk", "status": "ok", "detail": "41%", "value": 41.0}],
            "metrics": {"load1": 0.25, "mem_used_percent": 37.5}, "drift": [],
            "spool": {"depth": 0, "oldest_age_s": 0.0, "dropped": 0}, "canary_lag_s": 0.12}
    base.update(fields)
    return base


class Webhook:
    """A Mattermost incoming webhook stand-in: records every posted `text`."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.messages.append(body["text"])
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/abc123"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.messages) >= count, f"expected {count} messages, got {self.messages}"
        return self.messages

    def quiet_for(self, seconds: float) -> list[str]:
        before = list(self.messages)
        time.sleep(seconds)
        assert self.messages == before, f"unexpected messages: {self.messages[len(before):]}"
        return before

    def close(self):
        self.server.shutdown()
        self.server.server_close()
