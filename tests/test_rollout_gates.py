"""The rollout's health gates against a real collector process fed real signed reports."""
import time

import pytest

from deploy.rollout import CollectorHealth, RolloutError
from deploy.rollout.gates import HealthyStreaks, degraded

from .collector_server import running_collector
from .test_rollout_support import post_report


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    with running_collector(tmp_path_factory.mktemp("collector")) as c:
        yield c


def test_the_gate_before_a_wave_names_unhealthy_silent_and_unknown_agents(collector):
    post_report(collector.url, "gate-ok", 1, "v1", "r710")
    post_report(collector.url, "gate-sick", 1, "v1", "r710", failing=True)
    post_report(collector.url, "gate-silent", 1, "v1", "r820")
    time.sleep(1.2)
    post_report(collector.url, "gate-ok", 2, "v1", "r710")
    post_report(collector.url, "gate-sick", 2, "v1", "r710", failing=True)
    fleet = CollectorHealth(collector.url).snapshot()
    assert fleet.agents["gate-sick"].failing == ("agentd_unit",)
    problems = degraded(fleet, ["gate-ok", "gate-sick", "gate-silent", "gate-never"], stale_after_s=0.5)
    assert problems == ["gate-sick: unhealthy on v1 (failing: agentd_unit)",
                        "gate-silent: silent for 1s (bound 0s)",
                        "gate-never: never reported to the collector"]
    assert degraded(fleet, ["gate-ok"], stale_after_s=0.5) == []


def test_staleness_is_measured_on_the_collectors_clock_when_ours_disagrees():
    from deploy.rollout.health import collector_now
    assert abs(collector_now(None) - time.time()) < 0.1
    assert abs(collector_now("Mon, 01 Jan 2024 00:00:00 GMT") - 1704067200.5) < 0.01   # our clock is years off
    now_header = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
    assert abs(collector_now(now_header) - time.time()) < 0.1                         # agrees: our sub-second clock


def test_a_wave_passes_only_after_min_healthy_of_unbroken_healthy_reports_on_the_new_version(collector):
    health = CollectorHealth(collector.url)
    streaks = HealthyStreaks("v2", min_healthy_s=0.6, stale_after_s=5)
    post_report(collector.url, "streak", 1, "v1", "r8202")
    assert streaks.observe(health.snapshot(), ["streak"]) == set()
    assert streaks.why_not["streak"] == "still reports v1"
    post_report(collector.url, "streak", 2, "v2", "r8202")
    assert streaks.observe(health.snapshot(), ["streak"]) == set()       # healthy, but not for long enough yet
    time.sleep(0.4)
    post_report(collector.url, "streak", 3, "v2", "r8202", failing=True)  # a failing report breaks the streak
    assert streaks.observe(health.snapshot(), ["streak"]) == set()
    assert streaks.why_not["streak"] == "unhealthy on v2 (agentd_unit)"
    post_report(collector.url, "streak", 4, "v2", "r8202")
    started = time.monotonic()
    assert streaks.observe(health.snapshot(), ["streak"]) == set()
    while not streaks.observe(health.snapshot(), ["streak"]):
        assert time.monotonic() - started < 5
        time.sleep(0.05)
    assert time.monotonic() - started >= 0.6


def test_an_unreachable_collector_is_one_rollout_error_naming_it():
    with pytest.raises(RolloutError, match=r"collector http://127\.0\.0\.1:9/api/v1/agents: .*refused"):
        CollectorHealth("http://127.0.0.1:9").snapshot()


def test_a_failing_report_that_came_and_went_between_two_looks_starts_the_streak_again(collector):
    health = CollectorHealth(collector.url)
    clock = [100.0]
    streaks = HealthyStreaks("v2", min_healthy_s=10, stale_after_s=5, clock=lambda: clock[0],
                             failing_between=health.failing_between)
    post_report(collector.url, "between", 1, "v2", "r720xd")
    assert streaks.observe(health.snapshot(), ["between"]) == set() and streaks.since["between"] == 100.0
    clock[0] = 106.0
    post_report(collector.url, "between", 2, "v2", "r720xd")
    post_report(collector.url, "between", 3, "v2", "r720xd", failing=True)   # never seen by a look...
    post_report(collector.url, "between", 4, "v2", "r720xd")
    assert health.failing_between("between", 1, 4) == [3]
    assert streaks.observe(health.snapshot(), ["between"]) == set() and streaks.since["between"] == 106.0
    clock[0] = 112.0                                                          # 12 s after the first look
    post_report(collector.url, "between", 5, "v2", "r720xd")
    assert streaks.observe(health.snapshot(), ["between"]) == set()           # only 6 s since the failure
    clock[0] = 116.0
    assert streaks.observe(health.snapshot(), ["between"]) == {"between"}
