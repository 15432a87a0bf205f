"""Gaps that can never close: the collector says why a gap is open, and an operator acknowledges it with
`python -m collector ack-gap`, which the running collector follows (the gap alert recovers)."""
import json
import os
import subprocess
import sys
import time

import pytest

from .collector_server import ROOT, Webhook, report, running_collector


@pytest.fixture(scope="module")
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture(scope="module")
def collector(tmp_path_factory, webhook):
    with running_collector(tmp_path_factory.mktemp("gaps"), "--interval-s", "60", "--gap-grace-s", "0.2",
                           "--sweep-s", "0.1", webhook_url=webhook.url) as c:
        yield c


def message_about(webhook, *words: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in list(webhook.messages):
            if all(word in message for word in words):
                return message
        time.sleep(0.05)
    raise AssertionError(f"no message with {words}: {webhook.messages}")


def ack_gap(collector, agent: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collector", "ack-gap", agent, "--db", collector.db_url, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_collector_says_why_a_gap_is_open(collector):
    c = collector
    c.post(report("restored", 1))
    c.post(report("restored", 4))  # nothing spooled, nothing dropped: 2 and 3 were delivered to a lost database
    c.post(report("spooling", 1))
    c.post(report("spooling", 3, spool={"depth": 1, "oldest_age_s": 40.0, "dropped": 0}))
    c.post(report("dropping", 1))
    c.post(report("dropping", 3, spool={"depth": 0, "oldest_age_s": 0.0, "dropped": 1}))
    c.post(report("whole", 1))
    gap = c.get("/api/v1/agents/restored")[1]["gap"]
    assert (gap["from_seq"], gap["to_seq"], gap["missing"], gap["reason"]) == (2, 3, 2, "not_in_this_database")
    assert "ack-gap restored" in gap["explanation"]
    assert c.get("/api/v1/agents/spooling")[1]["gap"]["reason"] == "in_agent_spool"
    assert c.get("/api/v1/agents/dropping")[1]["gap"]["reason"] == "dropped_by_agent"
    assert c.get("/api/v1/agents/whole")[1]["gap"] is None
    status, page = c.get("/agents/restored")
    assert status == 200 and 'id="gap"' in page and "seq 2..3: 2 missing" in page and "backup" in page


def test_operator_acknowledges_a_gap_that_can_never_close_and_its_alert_recovers(collector, webhook):
    c = collector
    c.post(report("zeus", 1))
    c.post(report("zeus", 3))
    c.post(report("zeus", 5))
    message_about(webhook, "zeus", "seq 2 onwards missing")
    dry = ack_gap(c, "zeus", "--dry-run", "--json")
    assert dry.returncode == 0 and json.loads(dry.stdout)["gap"]["missing"] == 2
    assert c.get("/api/v1/agents/zeus")[1]["contiguous_seq"] == 1
    done = ack_gap(c, "zeus", "--reason", "restored from the 03:00 backup")
    assert done.returncode == 0, done.stderr
    assert "acknowledged seq 2..4 (2 missing" in done.stdout
    state = c.get("/api/v1/agents/zeus")[1]
    assert (state["contiguous_seq"], state["last_seq"], state["gap"], state["gap_since"]) == (5, 5, None, None)
    [ack] = state["gap_acknowledgements"]
    assert (ack["from_seq"], ack["to_seq"], ack["missing"]) == (2, 4, 2)
    assert ack["reason"] == "restored from the 03:00 backup"
    message_about(webhook, "zeus", "gap closed")
    assert c.post(report("zeus", 6)) == (200, {"status": "stored"})
    assert c.get("/api/v1/agents/zeus")[1]["contiguous_seq"] == 6
    assert "nothing to acknowledge" in ack_gap(c, "zeus").stdout
    assert "Acknowledged gaps" in c.get("/agents/zeus")[1]
