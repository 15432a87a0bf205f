"""Fixtures for agentd's tests: a VM-shaped file tree under tmp_path and a stub collector on loopback.

The stub collector is deliberately tiny (http.server): it validates the bearer token with the shared
`token_matches` and the body with `Report.from_json`, and stores reports by (agent, seq) like the real one.
"""
from __future__ import annotations

import grp
import hashlib
import json
import pwd
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import requests
import yaml

from agentd.protocol import REPORTS_PATH, Report, agent_token, token_matches
from agentd.vm_files import FileState, Identity

REPO = Path(__file__).resolve().parent.parent
SECRET = b"test-collector-secret"

PROC = {
    "proc/stat": "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0 0 0\ncpu1 50 0 50 400 0 0 0 0 0 0\n",
    "proc/meminfo": "MemTotal:       2000000 kB\nMemFree:         500000 kB\nMemAvailable:   1000000 kB\n",
    "proc/loadavg": "0.50 0.40 0.30 1/100 1234\n",
    "proc/uptime": "3600.00 7000.00\n",
}
DPKG_STATUS = """Package: bash
Status: install ok installed
Version: 5.1-6ubuntu1

Package: curl
Status: install ok installed
Version: 7.81.0-1ubuntu1.15
Description: a tool
 continuation line

Package: removed-one
Status: deinstall ok config-files
Version: 1.0
"""
FILES = {
    "etc/hostname": "athena\n",
    "etc/hosts": "127.0.0.1 localhost\n",
    "etc/ssh/sshd_config": "PermitRootLogin no\n",
    "usr/local/bin/tool": "#!/bin/sh\necho tool\n",
    "opt/agentd/agentd/__init__.py": "",
    "opt/baseline-only/unwatched.conf": "outside the watched paths\n",
}


def _owner(path: Path) -> str:
    st = path.stat()
    return f"{pwd.getpwuid(st.st_uid).pw_name}:{grp.getgrgid(st.st_gid).gr_name}"


def baseline_of(root: Path, rel: str) -> dict:
    p = root / rel
    return FileState.of(hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode, _owner(p)).to_json()


def make_vm_tree(root: Path, agent: str = "athena", collector_url: str = "http://127.0.0.1:9",
                 **config) -> Path:
    """A VM root: baseline files, /proc literals, dpkg status, manifest, identity, config and token.
    Returns the config path."""
    for rel, text in {**FILES, **PROC, "var/lib/dpkg/status": DPKG_STATUS}.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (root / "etc/ssh/sshd_config").chmod(0o600)
    agentfleet = root / "etc/agentfleet"
    agentfleet.mkdir(parents=True, exist_ok=True)
    image_files = ["etc/hosts", "etc/ssh/sshd_config", "usr/local/bin/tool", "opt/agentd/agentd/__init__.py",
                   "opt/baseline-only/unwatched.conf"]
    image = {"name": "agent", "version": "v1abc", "baseline": {"/" + f: baseline_of(root, f) for f in image_files},
             "packages": {"dpkg": {"bash": "5.1-6ubuntu1", "curl": "7.81.0-1ubuntu1.15"}}}
    (agentfleet / "image.json").write_text(json.dumps(image))
    (agentfleet / "identity.json").write_text(json.dumps(Identity(
        agent=agent, host="hv1", role="research", ip="10.220.1.21", image_version="v1abc").to_json()))
    token = agentfleet / "agentd.token"
    token.write_text(agent_token(SECRET, agent) + "\n")
    token.chmod(0o600)
    cfg = {"agent": agent, "collector_url": collector_url, "interval_s": 30, "scan_interval_s": 300,
           "watched_paths": ["/etc", "/usr/local/bin", "/opt/agentd"], "spool_dir": "/var/lib/agentd/spool",
           "spool_max": 100, "mattermost_url": "", "openclaw_url": "http://127.0.0.1:9",
           "http_timeout_s": 2, "backoff_initial_s": 0.1, "backoff_max_s": 0.5, "check_timeout_s": 0.5}
    cfg.update(config)
    path = agentfleet / "agentd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    injected = ["etc/hostname", "etc/agentfleet/identity.json", "etc/agentfleet/agentd.token",
                "etc/agentfleet/agentd.yaml"]
    baseline = {"/" + f: baseline_of(root, f) for f in injected}
    (agentfleet / "injected.json").write_text(json.dumps({"baseline": baseline}))
    return path


class StubCollector:
    """Stores reports by (agent, seq). `fail_with` makes it answer that status instead (e.g. 503), as the collector
    does (JSON `{"detail": ...}`) or, with `fail_as_html`, as a web server that is not the collector;
    `refuse` maps seqs to the status the collector answers for that report only (e.g. 422)."""

    def __init__(self) -> None:
        self.reports: Dict[Tuple[str, int], dict] = {}
        self.arrivals: List[Tuple[str, int, float]] = []
        self.attempts: List[int] = []  # the seq of every POST, answered or not
        self.fail_with: Optional[int] = None
        self.fail_as_html = False
        self.refuse: Dict[int, int] = {}
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                if self.path != REPORTS_PATH:
                    return self._answer(404, {"detail": "not found"})
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    seq = json.loads(body).get("seq")
                except (ValueError, AttributeError):
                    seq = None
                with stub.lock:
                    stub.attempts.append(seq)
                if stub.fail_with and stub.fail_as_html:
                    return self._answer(stub.fail_with, "<html><body>It works!</body></html>")
                if stub.fail_with:  # echoing the request's header, as a careless proxy might
                    return self._answer(stub.fail_with, {"detail": "failing on purpose for " +
                                                         self.headers.get("Authorization", "")})
                try:
                    report = Report.from_json(json.loads(body))
                except ValueError as e:
                    return self._answer(422, {"detail": str(e)})
                if report.seq in stub.refuse:
                    return self._answer(stub.refuse[report.seq], {"detail": "refused on purpose"})
                auth = self.headers.get("Authorization", "")
                if not auth.startswith("Bearer ") or not token_matches(SECRET, report.agent, auth[7:]):
                    return self._answer(401, {"detail": "bad token"})
                key = (report.agent, report.seq)
                with stub.lock:
                    duplicate = key in stub.reports
                    stub.reports.setdefault(key, json.loads(body))
                    stub.arrivals.append((report.agent, report.seq, time.time()))
                self._answer(200, {"status": "duplicate" if duplicate else "stored"})

            def _answer(self, code, data):
                html = isinstance(data, str)
                raw = data.encode() if html else json.dumps(data).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/html" if html else "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)  # quick close
        self.thread.start()

    def seqs(self, agent: str = "athena") -> List[int]:
        with self.lock:
            return sorted(s for a, s in self.reports if a == agent)

    def latest(self, agent: str = "athena") -> Optional[dict]:
        with self.lock:
            seqs = [s for a, s in self.reports if a == agent]
            return self.reports[(agent, max(seqs))] if seqs else None

    def wait_for(self, predicate, timeout: float = 10.0, agent: str = "athena") -> dict:
        """Wait until the latest report of `agent` satisfies predicate; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                mine = [r for (a, _), r in sorted(self.reports.items()) if a == agent]
            for report in reversed(mine):
                if predicate(report):
                    return report
            time.sleep(0.02)
        raise AssertionError(f"no matching report from {agent} within {timeout}s; have seqs {self.seqs(agent)}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_agentd(*args: str, root: Path, timeout: float = 60, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentd", "--root", str(root), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


def spawn_agentd(*args: str, root: Path, env: Optional[dict] = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "agentd", "--root", str(root), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def drift_of(report: dict) -> Dict[Tuple[str, str], dict]:
    return {(d["path"], d["kind"]): d for d in report["drift"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Collector:
    """The real collector (`python -m collector serve`) in a subprocess, restartable on the same port/db."""

    def __init__(self, tmp_path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = tmp_path / "collector.db"
        self.secret = tmp_path / "collector.secret"
        self.secret.write_bytes(SECRET)
        self.secret.chmod(0o600)
        self.log = open(tmp_path / "collector.log", "ab")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "collector", "serve", "--listen", f"127.0.0.1:{self.port}",
             "--db", f"sqlite:///{self.db}", "--secret-file", str(self.secret), "--log-level", "warning"],
            cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise AssertionError("collector did not start; see collector.log")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def agent(self, name):
        return requests.get(f"{self.url}/api/v1/agents/{name}", timeout=5).json()

    def stored_seqs(self, name):
        with sqlite3.connect(self.db) as db:
            return [row[0] for row in db.execute("SELECT seq FROM reports WHERE agent = ? ORDER BY seq", (name,))]
