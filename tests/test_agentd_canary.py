"""The canary's lag: closed by the report that carries the seen touch, growing while a touch stays unseen."""
from agentd.canary import Canary


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_lag_is_from_the_touch_to_the_report_that_carries_it(tmp_path):
    clock = Clock()
    canary = Canary(str(tmp_path / ".agentd-canary"), interval_s=60, clock=clock)
    assert canary.due() and canary.lag_for_report() is None
    canary.touch()
    assert (tmp_path / ".agentd-canary").exists() and not canary.due()
    clock.now += 0.05
    assert canary.observed({str(tmp_path / "other")}) is False
    assert canary.observed({str(tmp_path / ".agentd-canary")}) is True
    clock.now += 0.02
    assert canary.lag_for_report() == 0.07
    clock.now += 5
    assert canary.lag_for_report() == 0.07  # the last measurement stays until the next one
    assert not canary.due()
    clock.now += 60
    assert canary.due()


def test_an_unseen_touch_reports_a_growing_lag_so_a_blind_watcher_is_noticed(tmp_path):
    clock = Clock()
    canary = Canary(str(tmp_path / ".agentd-canary"), interval_s=60, clock=clock)
    canary.touch()
    clock.now += 90
    assert canary.lag_for_report() == 90
    clock.now += 30
    assert canary.lag_for_report() == 120
    assert canary.due()  # touched again in case its event was lost, but the age counts from the first touch
    canary.touch()
    clock.now += 1
    assert canary.observed({str(tmp_path / ".agentd-canary")})
    assert canary.lag_for_report() == 121
