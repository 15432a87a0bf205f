"""The fleet end to end on real parts, minus a real hypervisor room: two sshd "hypervisors" sharing this machine's
libvirtd; a synthetic golden image pushed to both by the tool; agents on both hosts cloned in one command (one
clone.py per host, in parallel) with secrets on SSH standard input only; status; destroy. Slow: libguestfs and
libvirt (no boot of the real image)."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.clone_support import (
    TEST_SCHEMA,
    CollectorStub,
    ensure_libvirtd,
    libvirt_workdir,
    make_synthetic_image,
    publish,
    write_secrets,
)
from tests.fleet_support import ProcessWatch, files_holding, running_lab

pytestmark = pytest.mark.slow
CANARY = "CANARY-fleet-5d1e-never-leak"
A, B = "fvm-one", "fvm-two"               # own names: never clash with other suites' domains


class ListingCollector(CollectorStub):
    """The clone tests' collector stand-in, plus the fleet listing status reads."""

    def answer(self, path: str):
        if path.split("?")[0].rstrip("/") == "/api/v1/agents":
            return 200, [{"agent": name, **info} for name, info in self.agents.items()]
        return super().answer(path)


def virsh(*args) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def lab():
    ensure_libvirtd()
    work = libvirt_workdir("fleet-vm-")
    stub = ListingCollector()
    try:
        with running_lab(work, ("v1host", "v2host"), 70, log_level="DEBUG3") as lab:
            golden = work / "synthetic.qcow2"
            make_synthetic_image(golden)
            publish(golden, work / "ws-images", "s1", TEST_SCHEMA)
            publish(golden, work / "ws-images", "s2", TEST_SCHEMA)
            secrets = write_secrets(work / "secrets.yaml", (A, B), canary=CANARY)
            agent = {"vcpu": 1, "ram_gb": 1, "disk_gb": 1, "role": "test"}
            hosts = {n: h.inventory_entry(uri="qemu:///system") for n, h in lab.hosts.items()}
            lab.overlay({A: {"host": "v1host", "ip": "10.220.1.220", "ssh_port": 22410, **agent},
                         B: {"host": "v2host", "ip": "10.220.1.221", "ssh_port": 22411, **agent}},
                        hosts=hosts, images_dir=str(work / "ws-images"),
                        secrets={"source": {"file": str(secrets)}},
                        services={"collector_url": f"http://10.0.2.100:{stub.port}",
                                  "collector_api_url": f"http://127.0.0.1:{stub.port}"})
            lab.stub = stub
            assert lab.fleet("trust", "v1host", "v2host").returncode == 0
            yield lab
            lab.fleet("destroy", A, B, "--purge-data")
    finally:
        stub.close()
        shutil.rmtree(work, ignore_errors=True)


def fleet(lab, *args, timeout=900):
    return lab.fleet(*args, timeout=timeout)


def test_agents_on_two_hosts_are_cloned_in_one_command_with_secrets_only_on_stdin(lab):
    pushed = fleet(lab, "push", "s1", "--json")
    assert pushed.returncode == 0, pushed.stderr
    with ProcessWatch(CANARY.encode()) as watch:
        proc = fleet(lab, "clone", A, B, "--json")
    assert proc.returncode == 0, proc.stderr
    results = {r["agent"]: r for r in json.loads(proc.stdout)["results"]}
    assert {a: (r["host"], r["action"], r["image_version"]) for a, r in results.items()} == {
        A: ("v1host", "clone", "s1"), B: ("v2host", "clone", "s1")}
    for agent, host in ((A, "v1host"), (B, "v2host")):
        assert virsh("domstate", agent).strip() == "running"
        assert results[agent]["root_disk"].startswith(str(lab.hosts[host].storage))
        assert CANARY not in virsh("dumpxml", agent)
    assert watch.scans > 3 and watch.seen == []
    assert CANARY not in proc.stdout + proc.stderr
    for host in lab.hosts.values():
        assert CANARY not in host.log.read_text()
        # the secret lives only inside the VM's data disk (/home/agent/.openclaw/.env), as with a local clone
        assert files_holding(host.root, CANARY.encode(), skip=lambda p: p.name.endswith("-data.qcow2")) == []


def test_replace_on_two_hosts_merges_a_success_and_a_rollback_into_exit_code_3(lab):
    pushed = fleet(lab, "push", "s2", "--json")
    assert pushed.returncode == 0, pushed.stderr
    lab.stub.report(A, "s2", healthy=True)                  # only A's new image ever reports healthy
    proc = fleet(lab, "replace", A, B, "--image", "s2", "--stop-timeout", "2", "--health-timeout", "8",
                 "--unhealthy-grace", "4", "--json")
    assert proc.returncode == 3, proc.stderr
    out = json.loads(proc.stdout)
    results = {r["agent"]: r for r in out["results"]}
    assert (results[A]["host"], results[A]["action"], results[A]["image_version"]) == ("v1host", "replace", "s2")
    assert len(out["errors"]) == 1 and out["errors"][0].startswith(f"v2host: {B}: ")
    assert proc.stderr.strip() == f"fleet: {out['errors'][0]}"
    state = json.loads((lab.hosts["v2host"].state / B / "state.json").read_text())
    assert state["current"]["image_version"] == "s1"           # B rolled back to what it ran


def test_status_then_destroy_across_both_hosts(lab):
    st = fleet(lab, "status", "--json")
    rows = {r["agent"]: r for r in json.loads(st.stdout)["agents"]}
    assert (rows[A]["domain"], rows[A]["image_on_disk"], rows[A]["health"], rows[A]["problem"]) == (
        "running", "s2", "healthy", "")
    assert (rows[B]["host"], rows[B]["domain"], rows[B]["image_on_disk"], rows[B]["health"]) == (
        "v2host", "running", "s1", "never reported")
    proc = fleet(lab, "destroy", A, B, "--json")
    assert proc.returncode == 0, proc.stderr
    assert {r["agent"]: r["action"] for r in json.loads(proc.stdout)["results"]} == {A: "destroy", B: "destroy"}
    assert virsh("domstate", A).strip() == "" and virsh("domstate", B).strip() == ""
