"""`fleet rollout` on real VMs: three sshd "hypervisors" sharing this machine's libvirtd, four agents of the small test
image (images/agent-small.yaml: boots to a healthy report in a few minutes under TCG), their agentd reporting to a
real collector through QEMU's restricted user networking. The tests run in file order on one fleet:

1. a rollout started while one agent is unhealthy (its disk filled) refuses to begin, exit 5, nobody touched;
2. a rollout of an image whose agentd cannot start halts after the canary, exit 4: the canary is back on the old
   version, no other agent was touched;
3. a rollout of a one-spec-change bump (the app stage rebaked, the base tree cached), killed in the middle of a wave
   and run again, completes with every agent on the new version and none replaced twice.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from tests.fleet_support import PYTHON, REPO
from tests.image_variants import derive_broken_image
from tests.small_fleet import ROLLOUT, small_fleet

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

HOSTS = ("rv1", "rv2", "rv3")
AGENTS = {"rva": "rv1", "rvb": "rv1", "rvc": "rv2", "rvd": "rv3"}   # own names: never clash with other suites


def _report(proc: subprocess.CompletedProcess) -> dict:
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON from the rollout (exit {proc.returncode}): {proc.stderr[-1500:]}"
    report = json.loads(lines[-1])
    assert report["event"] == "report", lines[-1]
    return report


@pytest.fixture(scope="module")
def fleet(small_baked_image):
    with small_fleet(small_baked_image, "rollout-vm-", HOSTS, AGENTS, 90, 230) as fl:
        fl.broken = derive_broken_image(fl.v1, fl.ws_images)    # agentd's unit is /bin/false
        fl.broken_version = fl.broken.name[len("agent-"):-len(".qcow2")]
        yield fl


def test_the_agents_keep_time_with_the_inventorys_ntp_servers_only(fleet):
    # user mode: the test inventory names no NTP server, so timesyncd runs and reaches out nowhere (no fallback pool)
    assert fleet.ssh("rva", "systemctl is-active systemd-timesyncd") == "active"
    conf = fleet.ssh("rva", "cat /etc/systemd/timesyncd.conf.d/50-agentfleet.conf")
    assert "NTP=\nFallbackNTP=" in conf


def test_a_rollout_started_while_one_agent_is_unhealthy_refuses_to_begin(fleet, tmp_path):
    # a real failing check: the disk filled past agentd's fail threshold (95 %) by the agent user
    fleet.ssh("rvd", "fallocate -l $(( $(df --output=avail -B1 / | tail -1) - 8388608 )) /var/tmp/fill")
    try:
        fleet.wait("rvd unhealthy at the collector", lambda: fleet.state("rvd").get("healthy") is False, 180)
        proc = fleet.rollout(tmp_path, fleet.broken_version, timeout=600)
        assert proc.returncode == 5, proc.stderr[-1500:]
        report = _report(proc)
        assert report["state"] == "refused" and "rvd" in report["reason"] and "disk" in report["reason"]
        assert {row["phase"] for row in report["agents"]} == {"pending"}
    finally:
        fleet.ssh("rvd", "rm -f /var/tmp/fill")
    fleet.wait("rvd healthy again", lambda: fleet.all_healthy_on(fleet.v1.version, ("rvd",)), 180)


def test_a_rollout_whose_agentd_cannot_start_halts_after_the_canary_and_puts_it_back(fleet, tmp_path):
    v1 = fleet.v1.version
    version = fleet.broken_version
    seqs = {a: fleet.state(a)["last_seq"] for a in AGENTS}
    proc = fleet.rollout(tmp_path, version)
    assert proc.returncode == 4, proc.stderr[-2000:]
    report = _report(proc)
    rows = {row["agent"]: row for row in report["agents"]}
    canary = [a for a, row in rows.items() if row["wave"] == 0]
    assert len(canary) == 1 and rows[canary[0]]["phase"] == "rolled-back", rows
    assert rows[canary[0]]["now"] == v1 and "agentd failed" in rows[canary[0]]["message"], rows[canary[0]]
    assert all(row["phase"] == "pending" and row["now"] == v1 for a, row in rows.items() if a not in canary)
    assert fleet.host_state(canary[0])["current"]["image_version"] == v1
    for agent in AGENTS:
        if agent not in canary:
            assert fleet.host_state(agent).get("previous") is None, f"{agent} was touched"
    fleet.wait(f"the canary {canary[0]} reporting healthy on {v1} again",
               lambda: fleet.all_healthy_on(v1, canary) and fleet.state(canary[0])["last_seq"] > seqs[canary[0]], 300)


def test_a_rollout_killed_mid_wave_and_run_again_ends_with_everyone_on_the_new_version_none_replaced_twice(
        fleet, small_next_baked_image, tmp_path):
    v1 = fleet.v1.version
    bumped = small_next_baked_image
    v2 = bumped.version
    assert v2 != v1 and bumped.manifest.base_key == fleet.v1.manifest.base_key
    fleet.add_image(bumped)
    journal = tmp_path / "journal"
    argv = [PYTHON, "-m", "deploy.fleet", "rollout", v2, *ROLLOUT, "--canary", "1", "--waves", "100%", "--json",
            "--journal-dir", str(journal)]
    first = subprocess.Popen(argv, cwd=REPO, env={**os.environ, **fleet.lab.env}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    # kill it once the wave after the canary has its replaces back and is proving them healthy (min-healthy)
    cut = None
    for line in first.stdout:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("phase") == "replaced" and event.get("wave") == 1:
            cut = event
            os.killpg(first.pid, signal.SIGKILL)
            break
    first.wait()
    assert cut is not None, f"the first run ended before wave 1 replaced anyone: {first.stderr.read()[-2000:]}"
    status = fleet.fleet("rollout", "--status", "--json", "--journal-dir", str(journal))
    assert "interrupted" in status.stdout, status.stdout[-1000:]
    second = fleet.rollout(journal, v2)
    assert second.returncode == 0, second.stderr[-2000:]
    assert {row["agent"]: row["now"] for row in _report(second)["agents"]} == {a: v2 for a in AGENTS}
    for agent in AGENTS:
        state = fleet.host_state(agent)
        # replaced twice, its previous root would be v2's
        assert (state["current"]["image_version"], state["previous"]["image_version"]) == (v2, v1), agent
    assert fleet.all_healthy_on(v2)
    # the figures docs/rollout.md quotes: each wave's wall time (its replaces, boots and min-healthy) from the journal
    journal = json.loads(next(journal.glob("*.json")).read_text())
    for w in journal["waves"]:
        print(f"\nwave {w['index']}: {len(w['agents'])} agent(s) on {len(w['hosts'])} host(s), "
              f"{w['finished_at'] - w['started_at']:.0f} s (the first run's part included)")
