"""--replace's waiting logic against a real loopback HTTP collector stub (fast)."""
import time

import pytest

from deploy.health import fetch_agent, wait_healthy
from tests.clone_support import CollectorStub


@pytest.fixture
def stub():
    s = CollectorStub()
    yield s
    s.close()


def wait(stub, alive=lambda: True, **kw):
    args = dict(deadline_s=1.0, unhealthy_grace_s=0.3, domain_alive=alive, poll_s=0.05)
    args.update(kw)
    return wait_healthy(f"http://127.0.0.1:{stub.port}", "athena", "v2", since=time.time() - 60, **args)


def test_a_healthy_report_of_the_new_version_keeps_it(stub):
    stub.report("athena", "v2", healthy=True, seq=7)
    verdict = wait(stub)
    assert verdict.ok and verdict.reason == "healthy" and "seq 7" in verdict.detail


def test_reports_of_the_old_version_do_not_count_and_the_deadline_rolls_back(stub):
    stub.report("athena", "v1", healthy=True)
    started = time.monotonic()
    verdict = wait(stub)
    assert (verdict.ok, verdict.reason) == (False, "health deadline")
    assert "last seen v1" in verdict.detail and 0.9 < time.monotonic() - started < 3


def test_unhealthy_reports_past_the_grace_period_fail_the_replace(stub):
    stub.report("athena", "v2", healthy=False)
    assert wait(stub).reason == "failed report"


def test_a_domain_that_stops_while_waiting_is_a_crash(stub):
    assert wait(stub, alive=lambda: False).reason == "domain crash"


def test_an_unreachable_collector_is_no_answer_not_an_error():
    assert fetch_agent("http://127.0.0.1:9", "athena", timeout=0.5) is None
