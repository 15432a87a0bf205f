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
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.clone_support import ensure_libvirtd, libvirt_workdir, write_secrets
from tests.collector_server import free_port, start_collector
from tests.fleet_support import PYTHON, REPO, keygen, running_lab
from tests.image_variants import bake_variant, derive_broken_image, small_image

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

HOSTS = ("rv1", "rv2", "rv3")
AGENTS = {"rva": "rv1", "rvb": "rv1", "rvc": "rv2", "rvd": "rv3"}   # own names: never clash with other suites
BOOT_DEADLINE = 900          # clone + boot of four small VMs at once to their first healthy report, TCG, 2 cores
# The bump: a spec change outside the base stage (the small image pins nothing), so the app stage is rebaked on the
# cached base tree and the version changes, as a pin bump of the full image does.
BUMP = ("name: agent\n", "name: agent\n# rollout test: the next version\n")
TEST_COLLECTOR_SECRET = b"collector-secret-for-tests"        # write_secrets' shared collector_secret
ROLLOUT = ("--min-healthy", "10", "--stale-after", "90", "--poll", "2", "--wave-deadline", "1200")


class Fleet:
    """The lab, the collector, and the admin's SSH into the agents (for what only the guest can do)."""

    def __init__(self, lab, collector, admin_key: Path, ssh_ports: dict[str, int], work: Path):
        self.lab, self.collector, self.admin_key, self.ssh_ports, self.work = lab, collector, admin_key, ssh_ports, work

    def fleet(self, *args: str, timeout: float = 2400) -> subprocess.CompletedProcess:
        return self.lab.fleet(*args, timeout=timeout)

    def rollout(self, journal: Path, *args: str, timeout: float = 2400) -> subprocess.CompletedProcess:
        return self.fleet("rollout", *args, *ROLLOUT, "--json", "--journal-dir", str(journal), timeout=timeout)

    def state(self, agent: str) -> dict:
        status, body = self.collector.get(f"/api/v1/agents/{agent}")
        return body if status == 200 else {}

    def host_state(self, agent: str) -> dict:
        return json.loads((self.lab.hosts[AGENTS[agent]].state / agent / "state.json").read_text())

    def ssh(self, agent: str, command: str) -> str:
        out = subprocess.run(["ssh", "-i", str(self.admin_key), "-p", str(self.ssh_ports[agent]),
                              "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                              "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "agent@127.0.0.1", command],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"ssh {agent} {command!r}: {out.stderr.strip()[-300:]}"
        return out.stdout.strip()

    def wait(self, what: str, predicate, timeout: float, interval: float = 2.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := predicate():
                return value
            time.sleep(interval)
        states = {a: (s.get("image_version"), s.get("healthy"), s.get("last_seq")) for a in AGENTS
                  for s in [self.state(a)]}
        consoles = {a: _tail(self.lab.hosts[h].state / a / "console.log") for a, h in AGENTS.items()}
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; collector: {states}\n{consoles}")

    def all_healthy_on(self, version: str, agents=tuple(AGENTS)) -> bool:
        return all(self.state(a).get("image_version") == version and self.state(a).get("healthy") for a in agents)


def _tail(path: Path, lines: int = 8) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no console)"


def _report(proc: subprocess.CompletedProcess) -> dict:
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON from the rollout (exit {proc.returncode}): {proc.stderr[-1500:]}"
    report = json.loads(lines[-1])
    assert report["event"] == "report", lines[-1]
    return report


@pytest.fixture(scope="module")
def fleet():
    ensure_libvirtd()
    work = libvirt_workdir("rollout-vm-")
    v1 = small_image()
    ws_images = work / "ws-images"
    ws_images.mkdir()
    for f in (v1.qcow2, v1.manifest_path):
        os.link(f, ws_images / f.name)
    collector = start_collector(work / "collector", secret=TEST_COLLECTOR_SECRET)
    admin = keygen(work / "admin_key", "rollout-admin")
    try:
        with running_lab(work, HOSTS, 90) as lab:
            secrets = write_secrets(work / "secrets.yaml", list(AGENTS))
            port = int(collector.url.rsplit(":", 1)[1])
            ssh_ports = {a: free_port() for a in AGENTS}
            lab.overlay({a: {"host": h, "ip": f"10.220.1.{230 + i}", "ssh_port": ssh_ports[a], "vcpu": 1,
                             "ram_gb": 1, "disk_gb": 1, "role": "test"} for i, (a, h) in enumerate(AGENTS.items())},
                        hosts={n: h.inventory_entry(uri="qemu:///system") for n, h in lab.hosts.items()},
                        images_dir=str(ws_images), secrets={"source": {"file": str(secrets)}},
                        services={"collector_url": f"http://10.0.2.100:{port}",
                                  "collector_api_url": collector.url, "mattermost_url": ""},
                        admins={"ssh_keys": [admin.with_suffix(".pub").read_text().strip()]})
            assert lab.fleet("trust", *HOSTS).returncode == 0
            fl = Fleet(lab, collector, admin, ssh_ports, work)
            fl.v1 = v1
            fl.broken = derive_broken_image(v1, ws_images)    # agentd's unit is /bin/false
            fl.broken_version = fl.broken.name[len("agent-"):-len(".qcow2")]
            pushed = fl.fleet("push", v1.version, "--json")
            assert pushed.returncode == 0, pushed.stderr[-1500:]
            t0 = time.monotonic()
            cloned = fl.fleet("clone", *AGENTS, "--json")
            assert cloned.returncode == 0, cloned.stderr[-1500:]
            fl.wait(f"all four agents healthy on {v1.version}", lambda: fl.all_healthy_on(v1.version), BOOT_DEADLINE)
            print(f"\nclone + boot of four small VMs on three hosts to healthy: {time.monotonic() - t0:.0f} s")
            yield fl
            fl.fleet("destroy", *AGENTS, "--purge-data", timeout=600)
    finally:
        collector.stop()
        shutil.rmtree(work, ignore_errors=True)


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
        fleet, tmp_path):
    v1 = fleet.v1.version
    bumped = bake_variant(tmp_path, "small-bump", BUMP, spec="agent-small.yaml", images_dir="small-images")
    v2 = bumped.version
    assert v2 != v1 and bumped.manifest.base_key == fleet.v1.manifest.base_key
    for f in (bumped.qcow2, bumped.manifest_path):
        os.link(f, fleet.work / "ws-images" / f.name)
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
