"""Backups and restores against real parts: a real libvirtd, real libguestfs, real qemu-img.

Two sites. The first is a domain that boots nothing (a blank root, a data disk with ext4 made by libguestfs): the
live snapshot, copy, merge-back and scrub are libvirt's and QEMU's whatever the guest does, so the mechanics are
proven there in a minute (live, a leftover overlay from a killed backup, a shut-off VM, the refusal to restore over
an existing agent). The second is a real agent of the small test image (images/agent-small.yaml) reporting to a
real collector: a file written into /home/agent over SSH while it runs, a live backup, destroy --purge-data, a
restore, and the same SSH host key, machine-id, MAC, UUID and file back. Two boots in all."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from deploy.backup_manifest import MANIFEST, key_files, sha256_file
from tests.clone_support import clone_cli, ensure_libvirtd, libvirt_workdir, write_overlay, write_secrets
from tests.collector_server import free_port, start_collector

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]
RUN = f"{os.getpid() % 100000:05d}"
TEST_COLLECTOR_SECRET = b"collector-secret-for-tests"          # write_secrets' shared collector_secret
CANARY = f"SECRET-CANARY-{uuid.uuid4().hex}"


def virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True).stdout.strip()


def data_source(agent: str) -> str:
    """The file the running domain's data disk (vdb) is on."""
    for line in virsh("domblklist", agent).splitlines():
        parts = line.split()
        if parts and parts[0] == "vdb":
            return parts[1]
    return ""


def chain_length(disk: Path) -> int:
    info = subprocess.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", str(disk)],
                          capture_output=True, text=True, check=True).stdout
    return len(json.loads(info))


def only_backup(dest: Path, agent: str) -> Path:
    found = [p for p in dest.iterdir() if p.name.startswith(f"{agent}-")]
    assert len(found) == 1, sorted(p.name for p in dest.iterdir())
    return found[0]


def assert_private_and_whole(backup: Path) -> dict:
    """0700 dirs, 0600 files, every sha256 as the manifest says; returns the manifest."""
    assert stat.S_IMODE(backup.stat().st_mode) == 0o700
    assert stat.S_IMODE((backup / "ssh").stat().st_mode) == 0o700
    manifest = json.loads((backup / MANIFEST).read_text())
    for rel, entry in manifest["files"].items():
        assert stat.S_IMODE((backup / rel).stat().st_mode) == 0o600, rel
        assert sha256_file(backup / rel) == entry["sha256"], rel
    assert set(manifest["files"]) == {"data.qcow2", *key_files()}
    assert not [p for p in backup.parent.iterdir() if p.name.startswith(".partial-")]
    return manifest


# ---------------------------------------------------------------------------------------------------------------
# 1. the mechanics, on a domain that boots nothing

@pytest.fixture(scope="module")
def idle():
    """`bk<run>-idle` defined and running from a blank root; its data disk ext4 with a file and a fake .env."""
    from deploy import inventory
    from deploy.boot import define_and_start
    from deploy.context import CloneRun, Connections, Options
    from deploy.hostkeys import ensure_host_keys
    from deploy.state import Slot, new_state, save_state
    from host.appliance import Drive, appliance
    from host.progress import Progress

    ensure_libvirtd()
    agent = f"bk{RUN}-idle"
    work = libvirt_workdir("backup-idle-")
    overlay = write_overlay(work / "overlay.yaml", work=work, images_dir=work / "images", agents=(agent,),
                            secrets_file=write_secrets(work / "secrets.yaml", [agent]), collector_port=free_port(),
                            ram_gb=0.25)
    inv = inventory.load(None, [overlay])
    storage, state_dir = work / "storage", work / "state" / agent
    storage.mkdir()
    root, data = storage / f"{agent}-root-v1.qcow2", storage / f"{agent}-data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(root), "64M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(data), "256M"], check=True)
    with appliance([Drive(data)]) as g:
        g.mkfs("ext4", "/dev/sda")
        g.mount("/dev/sda", "/")
        g.write("/proof.txt", b"the agent's work\n")
        g.mkdir_p("/.openclaw")
        g.write("/.openclaw/.env", f"OPENAI_API_KEY={CANARY}\n".encode())
    ensure_host_keys(state_dir, agent)
    state = new_state(agent, data).evolve(current=Slot("v1", str(root)))
    save_state(state_dir, state)
    run = CloneRun(inv, Options(), Connections(None), "qemu", Progress(quiet=True))
    define_and_start(run, inv.agent(agent), state)
    run.conns.close()
    site = {"agent": agent, "work": work, "overlay": overlay, "data": data, "state": state, "dest": work / "backups"}
    yield site
    clone_cli("--overlay", str(overlay), agent, "--destroy", "--purge-data")
    shutil.rmtree(work, ignore_errors=True)


def idle_cli(site, *args, **kw):
    return clone_cli("--overlay", str(site["overlay"]), site["agent"], *args, **kw)


def test_a_live_backup_leaves_the_vm_running_on_one_file_and_holds_no_secret(idle):
    agent, data = idle["agent"], idle["data"]
    proc = idle_cli(idle, "--backup", str(idle["dest"]), "--json", "-v")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)[0]
    assert result["action"] == "backup" and "live" in result["message"], result
    assert virsh("domstate", agent) == "running"
    assert data_source(agent) == str(data) and chain_length(data) == 1
    assert not (data.parent / f"{agent}-data.backup-overlay.qcow2").exists()
    assert f"<source file='{data}'" in virsh("dumpxml", "--inactive", agent)
    backup = only_backup(idle["dest"], agent)
    assert result["backup"] == str(backup)
    manifest = assert_private_and_whole(backup)
    st = idle["state"]
    assert manifest["live"] is True and manifest["image_version"] == "v1"
    assert (manifest["identity"]["uuid"], manifest["identity"]["mac"], manifest["identity"]["machine_id"]) == \
        (st.uuid, st.mac, st.machine_id)
    assert manifest["scrubbed"] == ["/home/agent/.openclaw/.env"]
    copy = (backup / "data.qcow2").read_bytes()
    assert b"the agent's work" in copy and CANARY.encode() not in copy
    assert "frozen" in proc.stderr and "merge" in proc.stderr      # progress lines of the long steps


def test_a_backup_killed_before_its_merge_is_merged_first_by_the_next_one(idle):
    from deploy.hypervisor import Hypervisor
    agent, data = idle["agent"], idle["data"]
    overlay = data.parent / f"{agent}-data.backup-overlay.qcow2"
    hv = Hypervisor("qemu:///system")
    hv.freeze_disk(agent, "vdb", str(overlay))     # what a backup killed during its copy leaves
    hv.close()
    assert data_source(agent) == str(overlay)
    dest = idle["work"] / "backups-2"
    proc = idle_cli(idle, "--backup", str(dest))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "an earlier backup left the VM writing into" in proc.stderr
    assert virsh("domstate", agent) == "running" and data_source(agent) == str(data) and chain_length(data) == 1
    assert not overlay.exists()
    assert_private_and_whole(only_backup(dest, agent))


def test_a_shut_off_vm_is_copied_directly(idle):
    agent = idle["agent"]
    virsh("destroy", agent)
    dest = idle["work"] / "backups-off"
    try:
        proc = idle_cli(idle, "--backup", str(dest), "--json")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads((only_backup(dest, agent) / MANIFEST).read_text())["live"] is False
    finally:
        virsh("start", agent)


def test_restore_over_an_existing_agent_is_refused_and_changes_nothing(idle):
    backup = only_backup(idle["dest"], idle["agent"])
    before = sha256_file(idle["data"]) if virsh("domstate", idle["agent"]) != "running" else None
    proc = idle_cli(idle, "--restore", str(backup))
    assert proc.returncode == 2
    assert "a VM of that name is defined on this hypervisor" in proc.stderr
    assert "--destroy --purge-data" in proc.stderr and len(proc.stderr.strip().splitlines()[-1]) < 400
    assert virsh("domstate", idle["agent"]) == "running"
    assert before is None or sha256_file(idle["data"]) == before


# ---------------------------------------------------------------------------------------------------------------
# 2. a real agent: clone, work, live backup, destroy, restore: the same agent comes back

BOOT_DEADLINE = 1200


class Agent:
    def __init__(self, name: str, overlay: Path, ssh_port: int, admin_key: Path, collector, work: Path):
        self.name, self.overlay, self.ssh_port, self.admin_key = name, overlay, ssh_port, admin_key
        self.collector, self.work = collector, work

    def cli(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        return clone_cli("--overlay", str(self.overlay), self.name, *args, timeout=timeout)

    def ssh(self, command: str) -> str:
        out = subprocess.run(["ssh", "-i", str(self.admin_key), "-p", str(self.ssh_port),
                              "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                              "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "agent@127.0.0.1", command],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"ssh {command!r}: {out.stderr.strip()[-300:]}"
        return out.stdout.strip()

    def host_key(self) -> str:
        out = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-p", str(self.ssh_port), "127.0.0.1"],
                             capture_output=True, text=True, timeout=60).stdout
        lines = [line.split(None, 1)[1] for line in out.splitlines() if line and not line.startswith("#")]
        assert lines, "no host key from the agent"
        return lines[0]

    def healthy_since(self, since: float) -> bool:
        status, body = self.collector.get(f"/api/v1/agents/{self.name}")
        return status == 200 and body.get("healthy") is True and float(body.get("last_seen") or 0) >= since

    def wait_healthy(self, since: float) -> float:
        deadline = time.monotonic() + BOOT_DEADLINE
        while time.monotonic() < deadline:
            if self.healthy_since(since):
                return time.monotonic()
            time.sleep(3)
        console = self.work / "state" / self.name / "console.log"
        tail = console.read_text(errors="replace")[-1500:] if console.exists() else "(no console)"
        raise AssertionError(f"{self.name}: no healthy report within {BOOT_DEADLINE} s\n{tail}")


@pytest.fixture(scope="module")
def agent():
    from tests.fleet_support import keygen
    from tests.image_variants import small_image

    ensure_libvirtd()
    image = small_image()
    work = libvirt_workdir("backup-vm-")
    name = f"bk{RUN}-athena"
    collector = start_collector(work / "collector", secret=TEST_COLLECTOR_SECRET)
    admin = keygen(work / "admin_key", "backup-admin")
    ssh_port = free_port()
    overlay = write_overlay(work / "overlay.yaml", work=work, images_dir=image.qcow2.parent, agents=(name,),
                            secrets_file=write_secrets(work / "secrets.yaml", [name]),
                            collector_port=int(collector.url.rsplit(":", 1)[1]), ram_gb=1,
                            admin_key=admin.with_suffix(".pub").read_text().strip())
    data = yaml.safe_load(overlay.read_text())
    data["agents"][name]["ssh_port"] = ssh_port
    data["services"].update(collector_api_url=collector.url, mattermost_url="")
    overlay.write_text(yaml.safe_dump(data))
    a = Agent(name, overlay, ssh_port, admin, collector, work)
    a.image = image
    try:
        yield a
    finally:
        a.cli("--destroy", "--purge-data", timeout=600)
        collector.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_an_agent_backed_up_while_it_runs_comes_back_from_a_restore_as_itself(agent):
    t0 = time.monotonic()
    since = time.time()
    cloned = agent.cli("--image", agent.image.version, "--json")
    assert cloned.returncode == 0, cloned.stderr[-2000:]
    agent.wait_healthy(since)
    print(f"\nclone + boot to healthy: {time.monotonic() - t0:.0f} s")

    proof = f"written at {time.time()} {uuid.uuid4().hex}"
    agent.ssh(f"echo '{proof}' > ~/backup-proof.txt && mkdir -p ~/.openclaw && "
              f"echo 'OPENAI_API_KEY={CANARY}' > ~/.openclaw/.env && chmod 600 ~/.openclaw/.env && sync")
    before = {"host_key": agent.host_key(), "machine_id": agent.ssh("cat /etc/machine-id"),
              "mac": agent.ssh("cat /sys/class/net/eth0/address"), "uuid": virsh("domuuid", agent.name)}
    storage = agent.work / "storage"
    data_disk = storage / f"{agent.name}-data.qcow2"

    dest = agent.work / "backups"
    t1 = time.monotonic()
    backed = agent.cli("--backup", str(dest), "--json")
    assert backed.returncode == 0, backed.stderr[-2000:]
    print(f"live backup: {time.monotonic() - t1:.0f} s")
    assert virsh("domstate", agent.name) == "running"
    assert data_source(agent.name) == str(data_disk) and chain_length(data_disk) == 1
    assert not list(storage.glob("*backup-overlay*"))
    assert agent.ssh("cat ~/backup-proof.txt") == proof           # kept running, and writable, throughout
    backup = only_backup(dest, agent.name)
    manifest = assert_private_and_whole(backup)
    assert manifest["live"] is True and manifest["image_version"] == agent.image.version
    assert manifest["identity"]["uuid"] == before["uuid"] and manifest["identity"]["mac"] == before["mac"]
    assert manifest["identity"]["machine_id"] == before["machine_id"]
    assert CANARY.encode() not in (backup / "data.qcow2").read_bytes()

    destroyed = agent.cli("--destroy", "--purge-data")
    assert destroyed.returncode == 0, destroyed.stderr[-2000:]
    assert not data_disk.exists() and virsh("domstate", agent.name) == ""

    t2 = time.monotonic()
    restored = agent.cli("--restore", str(dest), "--json", "--health-timeout", str(BOOT_DEADLINE), timeout=2400)
    assert restored.returncode == 0, restored.stderr[-3000:]
    print(f"restore + boot to healthy: {time.monotonic() - t2:.0f} s")
    result = json.loads(restored.stdout)[0]
    assert result["action"] == "restore" and "healthy" in result["message"] and result["backup"] == str(backup)
    after = {"host_key": agent.host_key(), "machine_id": agent.ssh("cat /etc/machine-id"),
             "mac": agent.ssh("cat /sys/class/net/eth0/address"), "uuid": virsh("domuuid", agent.name)}
    assert after == before
    assert agent.ssh("cat ~/backup-proof.txt") == proof
    assert agent.ssh("test -e ~/.openclaw/.env && echo present || echo absent") == "absent"
    assert not (agent.work / "state" / agent.name / "restoring.json").exists()
    print(f"whole test: {time.monotonic() - t0:.0f} s")
