"""fleet gc against real sshd hosts on loopback: each host collects its own images dir by bake/gc.py's policy, with
its own agents' disks and states deciding what stays. An agent overlay on g1 keeps its old layered image (and the
base layer under it) there while g2 drops the same image; a host that is down is named and the others are done."""
import json

import pytest

from tests.fleet_support import running_lab
from tests.gc_support import agent_overlay, agent_state, base_layer, names, publish_layered

OLD = {"agent-v1.manifest.json", "agent-v1.qcow2", "agent-base-aaaaaaaaaaaaaaaa.qcow2"}


@pytest.fixture
def lab(tmp_path):
    with running_lab(tmp_path / "lab", ("g1", "g2", "g3"), 40) as lab:
        for host in lab.hosts.values():           # what two pushes of layered images leave on every host
            work = lab.work / f"bake-{host.name}"
            publish_layered(host.images, "v1", 1, base_layer(work / "a", "a" * 16), work)
            publish_layered(host.images, "v2", 2, base_layer(work / "b", "b" * 16), work)
        g1 = lab.hosts["g1"]
        overlay = agent_overlay(g1.storage, "athena", g1.images / "agent-v1.qcow2")   # athena still runs v1 on g1
        agent_state(g1.state, "athena", ("v1", overlay))
        lab.overlay({})
        assert lab.fleet("trust", "g1", "g2", "g3").returncode == 0
        yield lab


def test_each_host_keeps_what_its_agents_use_and_a_dry_run_first_touches_nothing(lab):
    g1, g2 = lab.hosts["g1"], lab.hosts["g2"]
    before = {h: names(lab.hosts[h].images) for h in ("g1", "g2")}
    dry = lab.fleet("gc", "--keep", "1", "--dry-run", "--host=g1", "--host=g2")
    assert dry.returncode == 0, dry.stderr
    assert {h: names(lab.hosts[h].images) for h in ("g1", "g2")} == before
    out = dry.stdout.splitlines()
    assert ("g1: kept agent-v1.qcow2 (image): image v1: athena's current image; in use by athena's current root "
            "disk") in out
    assert [line.split(" (")[0] for line in out if line.startswith("g2: would remove agent")] == [
        "g2: would remove agent-v1.manifest.json", "g2: would remove agent-v1.qcow2",
        "g2: would remove agent-base-aaaaaaaaaaaaaaaa.qcow2"]
    assert not any(line.startswith("g1: would remove agent") for line in out)
    assert f"g1: would remove 0 file(s) from {g1.images}" in dry.stdout
    assert f"g2: would remove 3 file(s) from {g2.images}" in dry.stdout

    done = lab.fleet("gc", "--keep", "1", "--json", "--host=g1", "--host=g2")
    assert done.returncode == 0, done.stderr
    hosts = {h["host"]: h for h in json.loads(done.stdout)["hosts"]}
    assert hosts["g1"]["ok"] and hosts["g1"]["removed"] == []
    assert [r["path"] for r in hosts["g2"]["removed"]] == [str(g2.images / n) for n in (
        "agent-v1.manifest.json", "agent-v1.qcow2", "agent-base-aaaaaaaaaaaaaaaa.qcow2")]
    assert names(g1.images) == before["g1"]                      # athena's chain: v1 and base A stay on g1
    assert names(g2.images) == before["g2"] - OLD                # g2 collected them
    assert names(g2.images) == {"agent-v2.manifest.json", "agent-v2.qcow2", "agent-base-bbbbbbbbbbbbbbbb.qcow2"}


def test_a_host_that_does_not_answer_is_named_and_the_others_are_collected(lab):
    lab.hosts["g3"].stop()
    proc = lab.fleet("gc", "--keep", "1")
    assert proc.returncode == 2
    assert proc.stderr.startswith("fleet: g3: unreachable at root@"), proc.stderr
    assert names(lab.hosts["g2"].images) & OLD == set()
    assert OLD <= names(lab.hosts["g1"].images)
    assert "g1: removed 0 file(s)" in proc.stdout and "g2: removed 3 file(s)" in proc.stdout
    assert "g3" not in proc.stdout
