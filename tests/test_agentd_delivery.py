"""Delivery to a collector on loopback: bearer token, spooling while it is down or refuses us, in-order catch-up,
and setting aside only what the collector can never accept."""
import json
import random

import pytest

from agentd.protocol import agent_token
from agentd.sender import Backoff, Sender, Verdict, judge
from agentd.spool import Spool
from tests.agentd_fixtures import SECRET, StubCollector, make_vm_tree, run_agentd


@pytest.fixture
def collector():
    stub = StubCollector()
    yield stub
    stub.close()


def test_once_delivers_one_report_with_identity_and_spool_state(tmp_path, collector):
    make_vm_tree(tmp_path, collector_url=collector.url)
    result = run_agentd("--once", root=tmp_path)
    assert result.returncode == 0, result.stderr
    report = collector.latest()
    assert report["seq"] == 1 and report["image_version"] == "v1abc"
    assert (report["host"], report["role"]) == ("hv1", "research")
    assert report["spool"] == {"depth": 0, "oldest_age_s": 0.0, "dropped": 0}
    assert report["drift"] == []
    assert not list((tmp_path / "var/lib/agentd/spool").glob("*.json"))


def test_once_spools_while_the_collector_is_down_and_sends_everything_in_order_later(tmp_path, collector):
    make_vm_tree(tmp_path, collector_url=collector.url)
    collector.fail_with = 503
    for _ in range(3):
        assert run_agentd("--once", root=tmp_path).returncode == 0  # spooled counts as success
    assert collector.seqs() == []
    collector.fail_with = None
    assert run_agentd("--once", root=tmp_path).returncode == 0
    assert collector.seqs() == [1, 2, 3, 4]
    assert [a[1] for a in collector.arrivals] == [1, 2, 3, 4]
    last = collector.latest()
    assert last["spool"]["depth"] == 3 and last["spool"]["oldest_age_s"] > 0


def collector_token(agent="athena"):
    return agent_token(SECRET, agent)


def valid(seq, _state=None, **fields):
    """A report the protocol accepts, for the spool."""
    return {"agent": "athena", "seq": seq, "sent_at": 1.0, "image_version": "v", **fields}


def open_spool(tmp_path, max_reports=10):
    return Spool(str(tmp_path / "spool"), str(tmp_path / "state"), max_reports)


def test_a_collector_refusing_the_token_keeps_the_report_and_delivers_it_once_the_token_is_right(tmp_path, collector):
    make_vm_tree(tmp_path, collector_url=collector.url)
    token = tmp_path / "etc/agentfleet/agentd.token"
    right = token.read_text()
    token.write_text("not-the-token\n")
    result = run_agentd("--once", root=tmp_path)
    assert result.returncode == 1 and "not-the-token" not in result.stderr
    assert "refuses this agent's token (HTTP 401" in result.stderr and "1 report(s) kept in the spool" in result.stderr
    assert collector.seqs() == [] and collector.attempts == [1]
    assert not (tmp_path / "var/lib/agentd/dropped").exists()
    assert len(list((tmp_path / "var/lib/agentd/spool").glob("*.json"))) == 1
    token.write_text(right)  # the same holds when the collector's secret is what was wrong: nothing is lost
    assert run_agentd("--once", root=tmp_path).returncode == 0
    assert collector.seqs() == [1, 2] and collector.latest()["spool"]["dropped"] == 0


@pytest.mark.parametrize("status, html", [(401, False), (403, False), (403, True), (404, False), (404, True),
                                          (405, True), (409, False), (400, True), (413, True), (422, True),
                                          (200, True)])
def test_an_answer_that_is_not_the_collector_judging_this_report_keeps_it(tmp_path, collector, status, html):
    """A wrong secret (401/403), a wrong URL (404/405) or another web server in the way (an HTML page, even a 200)
    says nothing about the report: it stays in the spool, is retried with backoff, and nothing counts as dropped."""
    collector.fail_with, collector.fail_as_html = status, html
    spool = open_spool(tmp_path)
    spool.append(valid)
    sender = Sender(collector.url + "/api/v1/reports", collector_token(), 2, Backoff(1, 8, random.Random(1)))
    result = sender.flush(spool)
    assert (result.sent, result.set_aside, len(spool), spool.state().dropped) == (0, 0, 1, 0)
    assert result.retry_after is not None and not sender.ready() and sender.last_error == result.error
    assert result.auth_refused == (status in (401, 403))
    collector.fail_with = None
    assert sender.flush(spool, force=True).sent == 1 and collector.seqs() == [1] and sender.last_error == ""


@pytest.mark.parametrize("status", [400, 413, 422])
def test_a_report_the_collector_refuses_as_malformed_is_set_aside_and_the_next_one_is_sent(tmp_path, collector,
                                                                                           status):
    collector.refuse = {2: status}
    spool = open_spool(tmp_path)
    for _ in range(3):
        spool.append(valid)
    sender = Sender(collector.url + "/api/v1/reports", collector_token(), 2, Backoff(1, 8))
    result = sender.flush(spool)
    assert (result.sent, result.set_aside, result.error) == (2, 1, "")
    assert collector.seqs() == [1, 3] and spool.state().dropped == 1 and len(spool) == 0
    quarantined = tmp_path / "spool/quarantine" / ("%020d.json" % 2)
    assert json.loads(quarantined.read_text())["seq"] == 2  # kept byte for byte, for an operator to resend
    assert f"HTTP {status}" in quarantined.with_suffix(".reason").read_text()


@pytest.mark.parametrize("body", [
    json.dumps(valid(1, metrics={"load": float("nan")})).encode(),   # NaN is not JSON: the collector answers 400
    json.dumps(valid(1, checks=[{"name": "cpu", "status": "bad"}])).encode(),  # the collector answers 422
    b'{"agent": "athena", "seq": 1, "sent_at": 1',                     # torn
    json.dumps(valid(1, host="x" * (300 * 1024))).encode(),            # over MAX_REPORT_BYTES: 413
])
def test_a_spooled_report_the_collector_could_never_accept_is_set_aside_without_sending_it(tmp_path, collector,
                                                                                           body):
    spool = open_spool(tmp_path)
    spool.append(valid)
    spool.append(valid)
    (tmp_path / "spool" / ("%020d.json" % 1)).write_bytes(body)
    sender = Sender(collector.url + "/api/v1/reports", collector_token(), 2, Backoff(1, 8))
    result = sender.flush(spool)
    assert (result.sent, result.set_aside) == (1, 1)
    assert collector.attempts == [2] and collector.seqs() == [2] and spool.state().dropped == 1
    assert (tmp_path / "spool/quarantine" / ("%020d.json" % 1)).read_bytes() == body


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_retryable_answers_keep_the_report_and_back_off(tmp_path, collector, status):
    collector.fail_with = status
    spool = open_spool(tmp_path)
    spool.append(valid)
    sender = Sender(collector.url + "/api/v1/reports", "t", 2, Backoff(1, 8, random.Random(1)))
    result = sender.flush(spool)
    assert result.sent == 0 and result.retry_after is not None and len(spool) == 1
    assert not sender.ready()


def test_a_dead_collector_is_a_connection_error_to_retry_not_a_crash(tmp_path):
    spool = open_spool(tmp_path)
    spool.append(valid)
    sender = Sender("http://127.0.0.1:9/api/v1/reports", "t", 1, Backoff(1, 8))
    result = sender.flush(spool)
    assert "connection error" in result.error and len(spool) == 1


@pytest.mark.parametrize("status, text, verdict", [
    (200, '{"status": "stored"}', Verdict.STORED),
    (200, '{"status": "duplicate"}', Verdict.STORED),
    (200, "It works!", Verdict.RETRY),
    (200, '{"ok": true}', Verdict.RETRY),
    (401, '{"detail": "bad token"}', Verdict.AUTH_REFUSED),
    (401, "<html>401 Authorization Required</html>", Verdict.AUTH_REFUSED),
    (403, "", Verdict.AUTH_REFUSED),
    (400, '{"detail": "body: not JSON"}', Verdict.SET_ASIDE),
    (413, '{"detail": "report larger than 262144 bytes"}', Verdict.SET_ASIDE),
    (422, '{"detail": "seq: must be an integer"}', Verdict.SET_ASIDE),
    (400, "<html>The plain HTTP request was sent to HTTPS port</html>", Verdict.RETRY),
    (413, "<html>413 Request Entity Too Large</html>", Verdict.RETRY),
    (404, '{"detail": "Not Found"}', Verdict.RETRY),
    (408, "", Verdict.RETRY),
    (429, '{"detail": "slow down"}', Verdict.RETRY),
    (503, '{"detail": "storage unavailable, retry"}', Verdict.RETRY),
])
def test_what_each_answer_means_for_the_spooled_report(status, text, verdict):
    assert judge(status, text).verdict is verdict


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap():
    backoff = Backoff(1, 30, random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 16, 30, 30, 30]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings))
    assert len(set(delays)) == len(delays)  # jittered, not lockstep
    backoff.reset()
    assert backoff.next_delay() <= 1


def test_a_lasting_delivery_problem_is_journaled_once_then_hourly_not_per_retry(tmp_path, collector, caplog):
    collector.fail_with = 401
    now = [1000.0]
    spool = open_spool(tmp_path)
    spool.append(valid)
    sender = Sender(collector.url + "/api/v1/reports", "t", 2, Backoff(1, 8), clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="agentd.sender"):
        for _ in range(5):
            sender.flush(spool, force=True)
            now[0] += 60
        now[0] += 3600
        sender.flush(spool, force=True)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all(r.levelname == "ERROR" for r in caplog.records)
    assert "refuses this agent's token" in lines[0] and "still, after 6 attempts" in lines[1]


def test_the_collectors_detail_reaches_the_journal_as_one_line():
    answer = judge(401, json.dumps({"detail": "bad\ntoken\r\n  for athena"}))
    assert "bad token for athena" in answer.detail and "\n" not in answer.detail


def test_a_token_echoed_back_in_an_error_never_reaches_the_journal_or_status(tmp_path, collector, caplog):
    collector.fail_with = 403
    spool = open_spool(tmp_path)
    spool.append(valid)
    sender = Sender(collector.url + "/api/v1/reports", collector_token(), 2, Backoff(1, 8))
    with caplog.at_level("INFO"):
        result = sender.flush(spool)
    assert "Bearer <token>" in result.error
    assert collector_token() not in result.error + sender.last_error + caplog.text
