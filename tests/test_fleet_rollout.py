"""`fleet rollout` wired to the fleet's side effects: the plan over the inventory and the collector, then one
clone.py --replace per host over real sshd "hypervisors" (fast: the hosts' clone fails for real on a fake image, so
no VM is needed; tests/test_rollout_*.py cover the policy with simulated hosts)."""
import json

import pytest

from tests.clone_support import TEST_SCHEMA, publish, write_secrets
from tests.collector_server import report, running_collector
from tests.fleet_support import running_lab

AGENT = {"vcpu": 1, "ram_gb": 1, "disk_gb": 1, "role": "test"}
AGENTS = {"ra": "r1", "rb": "r1", "rc": "r2"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("fleet-rollout")
    with running_lab(work, ("r1", "r2"), 70) as lab, running_collector(work / "collector") as collector:
        raw = work / "raw.qcow2"
        raw.write_bytes(b"not really an image")            # published and pushed, but qemu-img cannot back on it
        publish(raw, work / "images", "v2", TEST_SCHEMA)
        secrets = write_secrets(work / "secrets.yaml", list(AGENTS))
        lab.overlay({a: {"host": h, "ip": f"10.220.1.{220 + i}", **AGENT} for i, (a, h) in enumerate(AGENTS.items())},
                    images_dir=str(work / "images"), secrets={"source": {"file": str(secrets)}},
                    services={"collector_url": collector.url, "collector_api_url": collector.url})
        assert lab.fleet("trust", "r1", "r2").returncode == 0
        lab.collector = collector
        for agent in AGENTS:
            status, _ = collector.post(report(agent, 1, image_version="v1", host=AGENTS[agent]))
            assert status == 200, agent
        yield lab


def test_dry_run_plans_a_canary_then_waves_from_the_collectors_versions_and_touches_no_host(lab, tmp_path):
    proc = lab.fleet("rollout", "v2", "--dry-run", "--journal-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "wave 0 (canary): 1 agent(s)" in proc.stdout and "3 to replace in 3 wave(s)" in proc.stdout
    for host in lab.hosts.values():
        assert not list(host.images.glob("*v2*")), "a dry run pushes nothing"


def test_a_canary_whose_replace_fails_on_its_host_halts_the_rollout_and_touches_no_one_else(lab, tmp_path):
    proc = lab.fleet("rollout", "v2", "--json", "--min-healthy", "1", "--wave-deadline", "30",
                     "--journal-dir", str(tmp_path), timeout=600)
    assert proc.returncode == 4, proc.stderr[-2000:]
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = {row["agent"]: row for row in final["agents"]}
    failed = [a for a, row in rows.items() if row["phase"] == "error"]
    assert len(failed) == 1, rows
    canary = failed[0]
    assert "qemu-img create" in rows[canary]["message"] and "Could not open backing" in rows[canary]["message"]
    assert all(row["phase"] == "pending" for a, row in rows.items() if a != canary), "later waves untouched"
    pushed = [h for h in lab.hosts.values() if list(h.images.glob("agent-v2.manifest.json"))]
    assert pushed, "the image was pushed before the first wave"
