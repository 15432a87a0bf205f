"""--replace's waiting logic against a real loopback HTTP collector stub (fast)."""
import re
import subprocess
import time

import pytest

from deploy.console import ConsoleWatch
from deploy.health import fetch_agent, wait_healthy
from tests.clone_support import REPO, CollectorStub


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


# What agentd's real unit writes to the console after a failed run: its ExecStopPost command, run by sh as systemd
# would (with `$$` unescaped and the console replaced by stdout).
UNIT = (REPO / "agentd" / "systemd" / "agentd.service").read_text()
STOP_POST = re.search(r"^ExecStopPost=/bin/sh -c '(.*)'$", UNIT, re.M).group(1).replace("$$", "$")


def stop_post(result: str, code: str = "exited", status: str = "1") -> str:
    out = subprocess.run(["sh", "-c", STOP_POST.replace(">/dev/console", "")], capture_output=True, text=True,
                         env={"SERVICE_RESULT": result, "EXIT_CODE": code, "EXIT_STATUS": status}, check=True)
    return out.stdout.replace("\n", "\r\n")


FAILED = stop_post("exit-code")
DESCRIPTION = re.search(r"^Description=(.*)$", UNIT, re.M).group(1)
STARTING = f"         Starting \x1b[0;1;39m{DESCRIPTION}\x1b[0m...\r\n"
# systemd 249's own line once a start job gives up, colours and all
SYSTEMD_FAILED = f"[\x1b[0;1;31mFAILED\x1b[0m] Failed to start \x1b[0;1;39m{DESCRIPTION}\x1b[0m.\r\n"


def test_agentd_unit_says_on_the_console_when_a_run_failed_and_only_then():
    assert FAILED.startswith("agentfleet: agentd failed (exit-code, exited 1)")
    assert stop_post("success", "exited", "0") == ""
    assert "agentd failed (watchdog" in stop_post("watchdog", "killed", "ABRT")


def test_agentd_failing_on_the_console_rolls_back_before_the_deadline(stub, tmp_path):
    log = tmp_path / "console.log"
    log.write_text(FAILED * 5)                 # an earlier boot's failures do not count
    watch = ConsoleWatch(log)
    with open(log, "a") as f:
        f.write((STARTING + FAILED) * 2 + STARTING)
    verdict = wait(stub, early_failure=watch.agentd_failed)
    assert verdict.reason == "health deadline"  # two failures are not yet "cannot start"
    with open(log, "a") as f:                  # the third, written in two pieces as the console streams it
        f.write(FAILED[:20])
        f.flush()
        assert watch.agentd_failed() is None
        f.write(FAILED[20:])
    started = time.monotonic()
    verdict = wait(stub, early_failure=watch.agentd_failed, deadline_s=30)
    assert (verdict.ok, verdict.reason) == (False, "agentd failed") and "3 times" in verdict.detail
    assert time.monotonic() - started < 2


def test_systemds_own_failed_line_counts_too(stub, tmp_path):
    log = tmp_path / "console.log"
    watch = ConsoleWatch(log)
    log.write_text((STARTING + SYSTEMD_FAILED) * 3)
    assert wait(stub, early_failure=watch.agentd_failed, deadline_s=30).reason == "agentd failed"


def test_other_units_failing_and_an_unreadable_console_give_no_early_signal(tmp_path):
    log = tmp_path / "console.log"
    watch = ConsoleWatch(log)                  # not there yet: libvirt creates it when the domain starts
    assert watch.agentd_failed() is None
    log.write_text(SYSTEMD_FAILED.replace(DESCRIPTION, "OpenClaw gateway (dashboard on :18789)") * 4)
    assert watch.agentd_failed() is None
    log.unlink()
    assert watch.agentd_failed() is None
