"""Backups and restores against real parts: a real libvirtd, real libguestfs, real qemu-img.

A domain that boots nothing (a blank root, a data disk with ext4 made by libguestfs): the live snapshot, copy,
merge-back and scrub are libvirt's and QEMU's whatever the guest does, so the mechanics are proven here in a minute
(live, a leftover overlay from a killed backup, a shut-off VM, the refusal to restore over an existing agent). A real
agent backed up while it runs and restored as itself is tests/test_clone_day2_vm.py (it shares its boots with the
resize and replace steps)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest

from deploy.backup_manifest import MANIFEST, sha256_file
from tests.backup_support import assert_private_and_whole, chain_length, data_source, only_backup, virsh
from tests.clone_support import clone_cli, ensure_libvirtd, libvirt_workdir, write_overlay, write_secrets
from tests.collector_server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]
RUN = f"{os.getpid() % 100000:05d}"
CANARY = f"SECRET-CANARY-{uuid.uuid4().hex}"


# ---------------------------------------------------------------------------------------------------------------
# the mechanics, on a domain that boots nothing

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
