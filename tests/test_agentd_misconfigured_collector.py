"""A collector started with the wrong secret refuses every token: agentd keeps every report, says so in the journal
and in systemd's STATUS, backs off, and delivers everything, in order and without a gap, once the collector is fixed.
Real collector (a subprocess on loopback, restarted on the same port and database), real agentd service."""
import os
import signal
import socket
import threading
import time

import pytest

from tests.agentd_fixtures import make_vm_tree, run_agentd, spawn_agentd
from tests.collector_server import SECRET, free_port, start_collector

pytestmark = pytest.mark.slow  # two collector starts and an agentd service: about 7 s


class NotifySocket:
    """systemd's end of sd_notify: every datagram agentd sends, in order."""

    def __init__(self, path):
        self.path = str(path)
        self.messages = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.2)
        self._open = True
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while self._open:
            try:
                self.messages.append(self._sock.recv(4096).decode())
            except socket.timeout:
                continue

    def statuses(self):
        return [m[len("STATUS="):] for m in list(self.messages) if m.startswith("STATUS=")]

    def close(self):
        self._open = False
        self._thread.join(2)
        self._sock.close()


def wait_until(predicate, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def spooled(root):
    return sorted(int(p.name[:-5]) for p in (root / "var/lib/agentd/spool").glob("*.json"))


def test_agentd_behind_a_collector_with_the_wrong_secret_loses_no_report_once_the_secret_is_fixed(tmp_path):
    pytest.importorskip("systemd.daemon")
    port = free_port()
    collector = start_collector(tmp_path / "collector", port=port, secret=b"a secret mangled by YAML")
    root = tmp_path / "vm"
    make_vm_tree(root, collector_url=collector.url, interval_s=0.1, backoff_initial_s=0.05, backoff_max_s=0.3,
                 spool_max=1000)
    notify = NotifySocket(tmp_path / "notify.sock")
    agentd = spawn_agentd(root=root, env=dict(os.environ, NOTIFY_SOCKET=notify.path))
    try:
        wait_until(lambda: len(spooled(root)) >= 5 and any("refuses this agent's token (HTTP 401" in s
                                                           for s in notify.statuses()),
                   "reports piling up while STATUS says the collector refuses the token")
        assert collector.get("/api/v1/agents/athena")[0] == 404  # nothing got through
        assert not (root / "var/lib/agentd/dropped").exists()     # and nothing was thrown away
        collector.stop()
        collector = start_collector(tmp_path / "collector", port=port, secret=SECRET)  # the operator fixes it
        wait_until(lambda: collector.get("/api/v1/agents/athena")[0] == 200 and not spooled(root),
                   "the backlog delivered")
        wait_until(lambda: "delivery failing" not in notify.statuses()[-1], "STATUS back to normal")
    finally:
        agentd.send_signal(signal.SIGTERM)
        out, _ = agentd.communicate(timeout=20)
        notify.close()
    assert agentd.returncode == 0, out
    assert run_agentd("--once", root=root).returncode == 0  # delivers whatever the last turn left spooled
    made = int((root / "var/lib/agentd/seq").read_text())
    state = collector.get("/api/v1/agents/athena")[1]
    history = collector.get("/api/v1/agents/athena/history?limit=1000")[1]
    collector.stop()
    assert [h["seq"] for h in history] == list(range(1, made + 1))  # every seq arrived: no gap, nothing dropped
    assert state["contiguous_seq"] == state["last_seq"] == made and state["spool"]["dropped"] == 0
    assert not (root / "var/lib/agentd/spool/quarantine").exists()
    journal = [line for line in out.splitlines() if "refuses this agent's token" in line]
    assert len(journal) == 1 and "ERROR" in journal[0]  # said once, not once per retry
    assert "delivery works again" in out
    assert (root / "etc/agentfleet/agentd.token").read_text().strip() not in out
