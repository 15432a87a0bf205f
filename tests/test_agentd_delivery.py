"""Delivery to a collector on loopback: bearer token, spooling while it is down, in-order catch-up, 4xx drops."""
import random

import pytest

from agentd.sender import Backoff, Sender
from agentd.spool import Spool
from tests.agentd_fixtures import StubCollector, make_vm_tree, run_agentd


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


def test_a_report_with_a_wrong_token_is_rejected_counted_as_dropped_and_not_retried(tmp_path, collector):
    make_vm_tree(tmp_path, collector_url=collector.url)
    (tmp_path / "etc/agentfleet/agentd.token").write_text("not-the-token\n")
    result = run_agentd("--once", root=tmp_path)
    assert result.returncode == 1 and "rejected" in result.stderr and "not-the-token" not in result.stderr
    assert collector.seqs() == []
    assert (tmp_path / "var/lib/agentd/dropped").read_text().strip() == "1"
    assert not list((tmp_path / "var/lib/agentd/spool").glob("*.json"))


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_retryable_answers_keep_the_report_and_back_off(tmp_path, collector, status):
    collector.fail_with = status
    spool = Spool(str(tmp_path / "spool"), str(tmp_path / "state"), 10)
    spool.append(lambda seq, state: {"agent": "athena", "seq": seq, "sent_at": 1.0, "image_version": "v"})
    sender = Sender(collector.url + "/api/v1/reports", "t", 2, Backoff(1, 8, random.Random(1)))
    result = sender.flush(spool)
    assert result.sent == 0 and result.retry_after is not None and len(spool) == 1
    assert not sender.ready()


def test_a_dead_collector_is_a_connection_error_to_retry_not_a_crash(tmp_path):
    spool = Spool(str(tmp_path / "spool"), str(tmp_path / "state"), 10)
    spool.append(lambda seq, state: {"seq": seq})
    sender = Sender("http://127.0.0.1:9/api/v1/reports", "t", 1, Backoff(1, 8))
    result = sender.flush(spool)
    assert "connection error" in result.error and len(spool) == 1


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap():
    backoff = Backoff(1, 30, random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 16, 30, 30, 30]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings))
    assert len(set(delays)) == len(delays)  # jittered, not lockstep
    backoff.reset()
    assert backoff.next_delay() <= 1
