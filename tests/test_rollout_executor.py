"""The rollout end to end against a real collector: simulated hypervisors whose VMs post real signed reports, and a
clone.py stand-in with clone.py's semantics (tests/test_rollout_support.py). Only the SSH transport is missing."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from deploy.rollout import EXIT_DEGRADED, EXIT_HALTED, CollectorHealth, RolloutError, Size, rollout_status, run_rollout
from deploy.rollout.journal import Journal

from .collector_server import ROOT, running_collector
from .test_rollout_support import EventLog, FakeClone, SimulatedHosts, fast_options, fleet_inventory

V1, V2 = "v1aaaaaaaaaa", "v2bbbbbbbbbb"


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    with running_collector(tmp_path_factory.mktemp("collector")) as c:
        yield c


@pytest.fixture
def fleet(tmp_path, collector):
    """The seed's 8 agents on 5 simulated hosts, all on V1 and reporting; returns a factory taking the sim's flags."""
    inv = fleet_inventory()
    placement = {a.name: a.host for a in inv.agents.values()}
    sims = []

    def make(**flags):
        sim = SimulatedHosts(tmp_path / "hosts", collector.url, placement, V1, **flags).start()
        sims.append(sim)
        fake = FakeClone(tmp_path / "hosts", placement, collector.url)
        return inv, sim, fake

    yield make
    for sim in sims:
        sim.stop()


def rollout(inv, fake, collector, options, log=None):
    return run_rollout(inv, V2, options, replace_on_host=fake.replace, rollback_on_host=fake.rollback,
                       push=lambda version: None, health=CollectorHealth(collector.url), out=log or EventLog())


def test_a_healthy_rollout_goes_canary_then_waves_per_host_and_ends_with_every_agent_on_the_new_version(
        fleet, collector, tmp_path):
    inv, sim, fake = fleet()
    log = EventLog()
    report = rollout(inv, fake, collector, fast_options(tmp_path / "journal"), log)
    assert (report.state, report.exit_code) == ("done", 0), report.render()
    assert {r.agent: (r.now, r.phase) for r in report.rows} == {a: (V2, "passed") for a in inv.agents}
    calls = [(c["host"], c["agents"]) for c in fake.calls()]
    assert calls[0] == ("r710", ["apollo"])                             # the canary alone, first, not athena
    assert ("r820", ["ares", "poseidon"]) in calls                      # one clone.py per host per wave
    assert calls[-1] == ("r420", ["athena"])                            # the orchestrator last
    assert all(sim.read(a)["swaps"] == 1 for a in inv.agents)
    seen = CollectorHealth(collector.url).snapshot().agents
    assert {a: (seen[a].image_version, seen[a].healthy) for a in inv.agents} == {a: (V2, True) for a in inv.agents}
    journal = Journal.read(Journal.path_for(tmp_path / "journal", inv)).data
    assert journal["state"] == "done" and [w["state"] for w in journal["waves"]] == ["passed"] * 5
    assert all(w["finished_at"] - w["started_at"] >= 0.5 for w in journal["waves"])   # min_healthy held each wave
    assert log.phases("hermes") == ["replacing", "replaced", "healthy", "passed"]
    # running it again finds nothing to do and touches nothing
    again = rollout(inv, fake, collector, fast_options(tmp_path / "journal"))
    assert again.state == "done" and {r.phase for r in again.rows} == {"skipped"} and len(fake.calls()) == len(calls)


def test_a_failing_canary_halts_is_rolled_back_and_no_other_agent_is_touched(fleet, collector, tmp_path):
    inv, sim, fake = fleet(broken=[("apollo", V2)])
    report = rollout(inv, fake, collector, fast_options(tmp_path / "journal"))
    assert (report.state, report.exit_code) == ("halted", EXIT_HALTED)
    assert "wave 0: apollo@r710 rolled-back" in report.reason
    rows = {r.agent: r for r in report.rows}
    assert (rows["apollo"].now, rows["apollo"].phase) == (V1, "rolled-back")
    assert {(r.now, r.phase) for a, r in rows.items() if a != "apollo"} == {(V1, "pending")}
    assert [(c["kind"], c["agents"]) for c in fake.calls()] == [("replace", ["apollo"])]
    assert sim.read("apollo")["current"] == V1 and all(sim.read(a)["swaps"] == 0 for a in inv.agents if a != "apollo")
    assert "apollo" in report.render() and "rolled-back" in report.render()
    with pytest.raises(RolloutError, match="halted .*--restart"):
        rollout(inv, fake, collector, fast_options(tmp_path / "journal"))
    assert len(fake.calls()) == 1


def test_a_rollout_killed_after_a_failure_was_journaled_halts_on_rerun_without_asking_again(fleet, collector,
                                                                                             tmp_path):
    inv, sim, fake = fleet(broken=[("apollo", V2)])
    assert rollout(inv, fake, collector, fast_options(tmp_path / "journal")).exit_code == EXIT_HALTED
    # the journal as a kill right after apollo's outcome was written leaves it (each step is its own atomic write)
    journal = Journal.read(Journal.path_for(tmp_path / "journal", inv))
    journal.data["waves"][0].update(state="running", finished_at=None, reason=None)
    journal.set(state="running", halt=None)
    report = rollout(inv, fake, collector, fast_options(tmp_path / "journal", wave_deadline_s=60))
    assert (report.state, report.exit_code) == ("halted", EXIT_HALTED) and report.elapsed_s < 10
    assert "wave 0: apollo@r710 rolled-back" in report.reason
    assert len(fake.calls()) == 1


@pytest.mark.parametrize("revert", [False, True])
def test_a_failed_wave_keeps_its_passed_agents_on_the_new_version_unless_revert_wave(fleet, collector, tmp_path,
                                                                                      revert):
    inv, sim, fake = fleet(broken=[("hermes", V2)])
    options = fast_options(tmp_path / "journal", agents=("apollo", "hermes"), canary=0, waves=(Size(count=2),),
                           revert_wave=revert)
    report = rollout(inv, fake, collector, options)
    assert report.exit_code == EXIT_HALTED
    rows = {r.agent: r for r in report.rows}
    assert (rows["hermes"].now, rows["hermes"].phase) == (V1, "rolled-back")
    if revert:
        assert (rows["apollo"].now, rows["apollo"].phase) == (V1, "reverted")
        assert ("rollback", "r710", ["apollo"]) in [(c["kind"], c["host"], c["agents"]) for c in fake.calls()]
        assert sim.read("apollo")["current"] == V1
    else:
        assert rows["apollo"].now == V2 and rows["apollo"].phase in ("replaced", "passed")
        assert sim.read("apollo")["current"] == V2
        assert [c["kind"] for c in fake.calls()] == ["replace", "replace"]


def test_an_agent_that_fails_after_clone_py_accepted_it_never_passes_min_healthy_and_the_deadline_halts(
        fleet, collector, tmp_path):
    inv, sim, fake = fleet(sours=[("hermes", V2)])
    options = fast_options(tmp_path / "journal", agents=("hermes", "ares"), canary=1, min_healthy_s=1.5,
                           wave_deadline_s=3.0, revert_wave=True)
    report = rollout(inv, fake, collector, options)
    assert (report.state, report.exit_code) == ("halted", EXIT_HALTED)
    assert report.reason.startswith("wave 0: wave deadline 3s passed (hermes: unhealthy on v2bbbbbbbbbb")
    rows = {r.agent: r for r in report.rows}
    assert (rows["hermes"].now, rows["hermes"].phase) == (V1, "reverted")      # replaced, never passed, put back
    assert (rows["ares"].now, rows["ares"].phase) == (V1, "pending")
    assert [(c["kind"], c["agents"]) for c in fake.calls()] == [("replace", ["hermes"]), ("rollback", ["hermes"])]


@pytest.mark.parametrize("flaw", ["sick", "silent"])
def test_a_degraded_fleet_refuses_to_start_a_wave_and_names_the_agent(fleet, collector, tmp_path, flaw):
    inv, sim, fake = fleet(**{flaw: ["hermes"]})
    if flaw == "silent":
        time.sleep(2.0)  # the others report every 0.2 s; hermes has not since the previous test
    report = rollout(inv, fake, collector, fast_options(tmp_path / "journal", stale_after_s=1.5))
    assert (report.state, report.exit_code) == ("refused", EXIT_DEGRADED)
    assert report.reason.startswith("wave 0 not started: hermes: ")
    assert ("unhealthy on v1" if flaw == "sick" else "silent for") in report.reason
    assert fake.calls() == [] and {r.phase for r in report.rows} == {"pending"}


def drive(tmp_path, collector, *flags) -> subprocess.Popen:
    argv = [sys.executable, "-m", "tests.test_rollout_support", "drive", "--hosts-root", str(tmp_path / "hosts"),
            "--collector", collector.url, "--journal-dir", str(tmp_path / "journal"), "--version", V2, *flags]
    return subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                            stdout=open(tmp_path / f"drive-{time.monotonic_ns()}.log", "w"), stderr=subprocess.STDOUT)


def wait_for(condition, timeout=20.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_a_rollout_killed_mid_wave_and_run_again_completes_without_replacing_any_agent_twice(
        fleet, collector, tmp_path):
    inv, sim, fake = fleet()
    first = drive(tmp_path, collector, "--hold-agents", "perseus", "--hold-s", "60")   # perseus: wave 2
    try:
        wait_for(lambda: sim.read("perseus")["current"] == V2)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    status = rollout_status(inv, tmp_path / "journal")
    assert status.state == "interrupted" and "run the same command again" in status.reason
    assert {r.agent: r.phase for r in status.rows}["perseus"] == "replacing"
    assert all({r.agent: r.phase for r in status.rows}[a] == "passed" for a in ("apollo", "artemis", "hermes"))
    first_calls = len(fake.calls())

    second = drive(tmp_path, collector)
    assert second.wait(60) == 0
    again = fake.calls()[first_calls:]
    asked_again = sorted(a for c in again for a in c["agents"])
    assert not {"apollo", "artemis", "hermes"} & set(asked_again)       # journaled as passed: never asked again
    assert "perseus" in asked_again                                     # cut off: asked again, clone.py resumes
    assert {a: sim.read(a)["swaps"] for a in inv.agents} == {a: 1 for a in inv.agents}
    assert rollout_status(inv, tmp_path / "journal").state == "done"


def test_a_second_rollout_of_the_same_fleet_is_refused_while_one_runs(fleet, collector, tmp_path):
    inv, sim, fake = fleet()
    first = drive(tmp_path, collector, "--hold-agents", "apollo", "--hold-s", "60")
    try:
        wait_for(lambda: fake.calls())
        with pytest.raises(RolloutError, match=f"another rollout of this fleet is running \\(pid {first.pid}"):
            rollout(inv, fake, collector, fast_options(tmp_path / "journal"))
        status = rollout_status(inv, tmp_path / "journal")
        assert status.state == "running" and f"pid {first.pid}" in status.reason
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert len(fake.calls()) == 1


# ------------------------------------------------------------------------------------- the verb, as `fleet rollout`
def verb(inv, fake, collector, tmp_path, *argv):
    import argparse
    import io

    from deploy.rollout import add_arguments, run_verb
    parser = argparse.ArgumentParser(prog="fleet rollout")
    add_arguments(parser)
    args = parser.parse_args([*argv, "--journal-dir", str(tmp_path / "journal"), "--min-healthy", "0.5",
                              "--stale-after", "3", "--poll", "0.1"])
    stdout, stderr = io.StringIO(), io.StringIO()
    code = run_verb(args, inv, replace_on_host=fake.replace, rollback_on_host=fake.rollback, push=lambda v: None,
                    health=CollectorHealth(collector.url), stdout=stdout, stderr=stderr)
    return code, stdout.getvalue(), stderr.getvalue()


def test_dry_run_prints_the_waves_hosts_and_agents_and_touches_nothing(fleet, collector, tmp_path):
    inv, sim, fake = fleet()
    code, out, err = verb(inv, fake, collector, tmp_path, V2, "--dry-run")
    assert (code, err) == (0, "")
    assert "wave 0 (canary): 1 agent(s) - r710: apollo" in out
    assert "wave 3: 2 agent(s) - r820: ares, poseidon" in out and "wave 4: 1 agent(s) - r420: athena" in out
    assert "rollout of v2bbbbbbbbbb: dry-run" in out
    assert fake.calls() == [] and not (tmp_path / "journal").exists()


def test_json_lines_carry_live_progress_then_the_final_report(fleet, collector, tmp_path):
    inv, sim, fake = fleet()
    code, out, err = verb(inv, fake, collector, tmp_path, V2, "--agents", "hermes,ares", "--canary", "1", "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert {line["event"] for line in lines[:-1]} == {"progress"} and lines[-1]["event"] == "report"
    progress = [(e["wave"], e["agent"], e["phase"]) for e in lines if e.get("agent")]
    assert progress[:4] == [(0, "hermes", "replacing"), (0, "hermes", "replaced"), (0, "hermes", "healthy"),
                            (0, "hermes", "passed")]
    assert all(a["elapsed_s"] <= b["elapsed_s"] for a, b in zip(lines[:-1], lines[1:-1]))
    report = lines[-1]
    assert (report["state"], report["exit_code"], report["version"]) == ("done", 0, V2)
    assert {a["agent"]: a["now"] for a in report["agents"]} == {"hermes": V2, "ares": V2}
    assert report["waves"][1]["hosts"] == {"r820": ["ares"]}


def test_status_shows_the_last_rollout_and_bad_input_is_one_line_with_exit_2(fleet, collector, tmp_path):
    inv, sim, fake = fleet(broken=[("apollo", V2)])
    assert verb(inv, fake, collector, tmp_path, "--status")[:2] == (0, "no rollout of this fleet is journaled\n")
    code, out, err = verb(inv, fake, collector, tmp_path, V2)
    assert code == EXIT_HALTED and "wave 0 apollo@r710 replacing" in out and "wave 0 apollo@r710 rolled-back" in out
    code, out, err = verb(inv, fake, collector, tmp_path, "--status")
    assert code == 0 and "rollout of v2bbbbbbbbbb: halted: wave 0: apollo@r710 rolled-back" in out
    assert "apollo       r710        0  v1aaaaaaaaaa     v1aaaaaaaaaa     rolled-back" in out
    for argv, message in [((), "rollout: name the image VERSION to roll out (or use --status)\n"),
                          ((V2, "--agents", "zeus"), "rollout: --agents: unknown agent(s) zeus (inventory has: "),
                          ((V2, "--waves", "0"), "rollout: --waves: '0' is not a positive count or a share like 25%\n"),
                          ((V2,), "rollout: the rollout of v2bbbbbbbbbb halted (wave 0: apollo@r710 rolled-back")]:
        code, out, err = verb(inv, fake, collector, tmp_path, *argv)
        assert (code, out) == (2, "") and err.startswith(message) and err.count("\n") == 1
    assert len(fake.calls()) == 1
