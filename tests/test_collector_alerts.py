"""Alerts reach a real loopback HTTP receiver standing in for a Mattermost incoming webhook: once per incident,
then a recovery message."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .collector_server import report, running_collector


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


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def failing(name="disk", detail="97% used (fail at 95)"):
    return [{"name": name, "status": "fail", "detail": detail}]


def test_failing_check_alerts_once_then_recovers(tmp_path, webhook):
    with running_collector(tmp_path, "--interval-s", "60", webhook_url=webhook.url) as c:
        c.post(report("athena", 1, checks=failing()))
        [alert] = webhook.wait_for(1)
        assert "athena" in alert and "disk" in alert and "failing" in alert and "97% used" in alert
        c.post(report("athena", 2, checks=failing()))
        webhook.quiet_for(0.5)
        c.post(report("athena", 3, checks=[{"name": "disk", "status": "ok"}]))
        assert "disk" in webhook.wait_for(2)[1] and "recovered" in webhook.messages[1]
        webhook.quiet_for(0.3)


def test_new_drift_alerts_once_per_entry_in_one_message_per_report(tmp_path, webhook):
    passwd = {"path": "/etc/passwd", "kind": "modified", "expected": "aa", "actual": "bb"}
    sudoers = {"path": "/etc/sudoers", "kind": "mode", "expected": "0440", "actual": "0666"}
    tool = {"path": "/usr/local/bin/evil", "kind": "added"}
    with running_collector(tmp_path, "--interval-s", "60", webhook_url=webhook.url) as c:
        c.post(report("apollo", 1))
        c.post(report("apollo", 2, drift=[passwd, sudoers]))
        [alert] = webhook.wait_for(1)
        assert "new drift (2)" in alert and "/etc/passwd" in alert and "0440 -> 0666" in alert
        c.post(report("apollo", 3, drift=[passwd, sudoers]))
        webhook.quiet_for(0.5)
        c.post(report("apollo", 4, drift=[passwd, sudoers, tool]))
        assert "new drift (1)" in webhook.wait_for(2)[1] and "/usr/local/bin/evil" in webhook.messages[1]
        c.post(report("apollo", 5, drift=[]))
        assert "drift resolved (3)" in webhook.wait_for(3)[2]


@pytest.mark.slow
def test_stale_agent_alerts_once_and_recovers_when_it_reports_again(tmp_path, webhook):
    with running_collector(tmp_path, "--interval-s", "0.5", "--stale-after", "2",
                           "--sweep-s", "0.1", webhook_url=webhook.url) as c:
        c.post(report("hermes", 1))
        [alert] = webhook.wait_for(1, timeout=5)
        assert "hermes" in alert and "stale" in alert
        webhook.quiet_for(0.6)
        assert c.get("/api/v1/agents/hermes")[1]["alerts"][0]["kind"] == "stale"
        c.post(report("hermes", 2))
        assert "reporting again" in webhook.wait_for(2)[1]


def test_sequence_gap_alerts_after_grace_and_recovers_when_filled(tmp_path, webhook):
    with running_collector(tmp_path, "--interval-s", "60", "--gap-grace-s", "0.5",
                           "--sweep-s", "0.1", webhook_url=webhook.url) as c:
        c.post(report("zeus", 1))
        c.post(report("zeus", 3))
        [alert] = webhook.wait_for(1, timeout=5)
        assert "zeus" in alert and "seq 2" in alert
        webhook.quiet_for(0.4)
        c.post(report("zeus", 2))
        assert "gap closed" in webhook.wait_for(2)[1]


@pytest.mark.slow
def test_gap_filled_within_grace_raises_nothing(tmp_path, webhook):
    with running_collector(tmp_path, "--interval-s", "60", "--gap-grace-s", "1",
                           "--sweep-s", "0.1", webhook_url=webhook.url) as c:
        c.post(report("hera", 2))
        c.post(report("hera", 1))
        c.post(report("hera", 4))
        c.post(report("hera", 3))
        webhook.quiet_for(1.5)
        assert c.get("/api/v1/agents/hera")[1]["contiguous_seq"] == 4


@pytest.mark.slow
def test_open_incident_is_not_announced_again_after_a_restart(tmp_path, webhook):
    with running_collector(tmp_path, "--interval-s", "60", webhook_url=webhook.url) as c:
        c.post(report("athena", 1, checks=failing()))
        webhook.wait_for(1)
    with running_collector(tmp_path, "--interval-s", "60", webhook_url=webhook.url) as c:
        c.post(report("athena", 2, checks=failing()))
        webhook.quiet_for(0.5)
        c.post(report("athena", 3))
        assert "recovered" in webhook.wait_for(2)[1]


@pytest.mark.slow
def test_unreachable_webhook_never_blocks_reports(tmp_path):
    with running_collector(tmp_path, "--interval-s", "60", webhook_url="http://127.0.0.1:9/hook") as c:
        started = time.monotonic()
        for seq in range(1, 6):
            assert c.post(report("athena", seq, checks=failing(f"check{seq}")))[0] == 200
        assert time.monotonic() - started < 2
