"""Backups and restores, the fast tier: the manifest and its checks, every refusal (taken before anything is
written), and the clean-up of the failure paths a real part cannot be made to produce on demand (a libvirt merge
that fails, a scrub that fails, a clone that fails after the restore placed its files). Real qemu-img disks and
files; libvirt is a recording fake here or `--connect test:///default` (the real thing: test_clone_backup_vm.py)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from deploy import backup as backup_mod
from deploy import backup_manifest as bm
from deploy import clone
from deploy import restore as restore_mod
from deploy.errors import CloneError
from deploy.hostkeys import ensure_host_keys
from deploy.inventory import load
from deploy.state import Slot, load_state, new_state, save_state
from host.progress import Progress
from tests.clone_support import publish, write_overlay, write_secrets

AGENT = "athena"


@pytest.fixture
def site(tmp_path):
    """athena cloned on v1 (state, host keys, a real qcow2 data disk), v1 published; no VM (libvirt is faked)."""
    images = tmp_path / "images"
    golden = tmp_path / "golden.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(golden), "16M"], check=True)
    publish(golden, images, "v1")
    overlay = write_overlay(tmp_path / "overlay.yaml", work=tmp_path, images_dir=images,
                            secrets_file=write_secrets(tmp_path / "secrets.yaml", [AGENT, "apollo"]),
                            collector_port=18000)
    inv = load(None, [overlay])
    storage, state_dir = tmp_path / "storage", tmp_path / "state" / AGENT
    storage.mkdir()
    data = storage / f"{AGENT}-data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(data), "16M"], check=True)
    ensure_host_keys(state_dir, AGENT)
    st = new_state(AGENT, data).evolve(current=Slot("v1", str(storage / f"{AGENT}-root-v1.qcow2")), cloned_at=1234)
    save_state(state_dir, st)
    return {"tmp": tmp_path, "overlay": overlay, "inv": inv, "data": data, "state_dir": state_dir, "state": st}


def cli(site, *args):
    return clone.main(["--overlay", str(site["overlay"]), "--connect", "test:///default", *args])


class FakeHypervisor:
    """libvirt's side of a live backup, recorded: which calls came, and which one fails."""

    def __init__(self, running=True, fail_commit=False):
        self.running, self.fail_commit, self.calls = running, fail_commit, []

    def is_running(self, name):
        return self.running

    def disk_source(self, name, target, inactive=False):
        return None

    def freeze_disk(self, name, target, overlay):
        self.calls.append("freeze")
        Path(overlay).write_bytes(b"overlay")

    def commit_active(self, name, target, timeout_s):
        self.calls.append("commit")
        if self.fail_commit:
            raise CloneError(f"{name}: libvirt could not merge {target}'s overlay back (injected)")


def a_backup(site, dest: Path) -> Path:
    """A real backup dir, the scrub (a libguestfs launch) left out: the slow tier runs it."""
    plan = backup_mod.plan_backup(site["inv"], site["inv"].agent(AGENT), dest)
    dest.mkdir(mode=0o700, exist_ok=True)
    original = backup_mod.scrub_secrets
    backup_mod.scrub_secrets = lambda path: ()
    try:
        path, _ = backup_mod.take_backup(FakeHypervisor(running=False), plan, Progress(quiet=True))
    finally:
        backup_mod.scrub_secrets = original
    return path


# --- the manifest -------------------------------------------------------------------------------------------------

def test_a_backup_dir_is_private_and_its_manifest_names_identity_image_and_every_files_sha256(site):
    path = a_backup(site, site["tmp"] / "backups")
    assert bm.NAME.match(path.name)["agent"] == AGENT
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for rel in ("manifest.json", "data.qcow2", *bm.key_files()):
        assert stat.S_IMODE((path / rel).stat().st_mode) == 0o600, rel
    data = json.loads((path / bm.MANIFEST).read_text())
    st = site["state"]
    assert data["format"] == bm.FORMAT and data["agent"] == AGENT and data["image_version"] == "v1"
    assert data["identity"]["uuid"] == st.uuid and data["identity"]["mac"] == st.mac
    assert data["identity"]["machine_id"] == st.machine_id and data["identity"]["cloned_at"] == 1234
    assert set(data["identity"]["host_keys"]) == {"ed25519", "ecdsa", "rsa"}
    assert data["files"]["data.qcow2"]["sha256"] == bm.sha256_file(path / "data.qcow2")
    text = (site["tmp"] / "secrets.yaml").read_text()
    assert "sk-ant-test" in text and not any("sk-ant-test" in p.read_bytes().decode(errors="replace")
                                             for p in path.rglob("*") if p.is_file())
    manifest = bm.verify(path, AGENT)
    assert bm.Manifest.from_json(json.loads(json.dumps(manifest.to_json())), "x") == manifest


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "data.qcow2").write_bytes((p / "data.qcow2").read_bytes()[:-1] + b"\x01"), "sha256"),
    (lambda p: os.truncate(p / "data.qcow2", 100), "truncated"),
    (lambda p: (p / "ssh/ssh_host_rsa_key").unlink(), "ssh/ssh_host_rsa_key is missing"),
    (lambda p: _edit(p, lambda m: m["files"].update({"../../etc/shadow": {"sha256": "0", "size": 1}})),
     "is not a file of an agent backup"),
    (lambda p: _edit(p, lambda m: m["files"].pop("ssh/ssh_host_ed25519_key")), "names no ssh/ssh_host_ed25519_key"),
    (lambda p: _edit(p, lambda m: m.update(format="something-else")), "not an agentfleet agent backup"),
    (lambda p: _edit(p, lambda m: m.update(format_version=99)), "format_version 99"),
    (lambda p: _edit(p, lambda m: m["identity"].pop("uuid")), "identity.uuid: missing"),
    (lambda p: (p / bm.MANIFEST).write_text("{"), "not JSON"),
    (lambda p: (p / bm.MANIFEST).unlink(), "no manifest.json"),
])
def test_a_damaged_backup_is_refused_with_one_line_naming_what_is_wrong(site, damage, message):
    path = a_backup(site, site["tmp"] / "backups")
    damage(path)
    with pytest.raises(CloneError, match=message.replace(".", r"\.").replace("(", r"\(")) as e:
        bm.verify(path, AGENT)
    assert "\n" not in str(e.value)


def _edit(path: Path, change) -> None:
    data = json.loads((path / bm.MANIFEST).read_text())
    change(data)
    (path / bm.MANIFEST).write_text(json.dumps(data))


def test_a_backup_of_another_agent_is_refused(site):
    path = a_backup(site, site["tmp"] / "backups")
    with pytest.raises(CloneError, match="is a backup of athena, not apollo"):
        bm.verify(path, "apollo")


# --- backing up: refusals and clean-up ----------------------------------------------------------------------------

def test_backup_refuses_an_agent_with_no_vm_a_replace_in_flight_or_no_data_disk(site, capsys):
    dest = site["tmp"] / "backups"
    save_state(site["state_dir"], site["state"].evolve(pending=Slot("v2", "/x")))
    assert cli(site, AGENT, "--backup", str(dest)) == 2
    assert "a replace to v2 is not finished" in capsys.readouterr().err
    save_state(site["state_dir"], site["state"].evolve(current=None))
    assert cli(site, AGENT, "--backup", str(dest)) == 2
    assert "no VM here to back up" in capsys.readouterr().err
    save_state(site["state_dir"], site["state"])
    site["data"].unlink()
    assert cli(site, AGENT, "--backup", str(dest)) == 2
    assert "data disk" in capsys.readouterr().err and not dest.exists()
    assert cli(site, AGENT, "--backup", str(dest), "--image", "v1") == 2


def test_backup_dry_run_says_what_would_be_copied_and_writes_nothing(site, capsys):
    dest = site["tmp"] / "backups"
    assert cli(site, AGENT, "--backup", str(dest), "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would back up into" in out and "external snapshot" in out and ".openclaw/.env scrubbed" in out
    assert not dest.exists()


@pytest.mark.parametrize("fail", ["copy", "scrub", "commit"])
def test_a_backup_that_fails_anywhere_merges_the_overlay_back_and_leaves_no_partial_dir(site, monkeypatch, fail):
    dest = site["tmp"] / "backups"
    dest.mkdir()
    plan = backup_mod.plan_backup(site["inv"], site["inv"].agent(AGENT), dest)
    hv = FakeHypervisor(running=True, fail_commit=fail == "commit")
    if fail == "copy":   # a real qemu-img failing: the frozen disk is not there any more
        plan = backup_mod.BackupPlan(plan.agent, plan.state_dir, plan.state, site["tmp"] / "gone.qcow2", dest)
    monkeypatch.setattr(backup_mod, "scrub_secrets", _raise if fail == "scrub" else lambda path: ())
    with pytest.raises(Exception) as e:
        backup_mod.take_backup(hv, plan, Progress(quiet=True))
    assert hv.calls == ["freeze", "commit"]                   # merged back in every case
    assert list(dest.iterdir()) == []                         # no partial dir, no backup
    if fail == "commit":
        assert "the VM still writes into" in str(e.value) and plan.overlay.exists()
    else:
        assert not plan.overlay.exists()


def _raise(path):
    raise CloneError("backup: the data disk copy has no file system to mount (injected)")


def test_every_secret_the_clone_writes_into_home_agent_is_scrubbed_from_a_backup(site):
    from deploy.images import find_image
    from deploy.inject import HOME, WriteFile
    from deploy.payload import agent_ops
    from deploy.secrets import Secret, load_secrets
    from tests.test_vm_files import FULL

    inv = site["inv"]
    agent = inv.agent(AGENT)
    assert find_image(inv.images_dir, "v1")
    secrets = load_secrets(inv.secrets, [AGENT])[AGENT]
    ops = agent_ops(inv, agent, FULL, site["state"], secrets, [])
    secret_in_home = {op.path.removeprefix(HOME + "/") for op in ops
                      if isinstance(op, WriteFile) and isinstance(op.content, Secret) and op.path.startswith(HOME)}
    assert secret_in_home and secret_in_home <= set(backup_mod.SECRET_DATA_FILES)


# --- restoring: refusals and clean-up -----------------------------------------------------------------------------

def test_restore_over_an_agent_that_exists_here_is_refused_and_says_how(site, capsys):
    path = a_backup(site, site["tmp"] / "backups")
    assert cli(site, AGENT, "--restore", str(path)) == 2
    err = capsys.readouterr().err
    assert "already cloned here (image v1)" in err and f"deploy/clone.py {AGENT} --destroy --purge-data" in err
    save_state(site["state_dir"], site["state"].evolve(current=None))     # destroyed, its data disk kept
    assert cli(site, AGENT, "--restore", str(path)) == 2
    err = capsys.readouterr().err
    assert "its data disk" in err and "kept by a --destroy" in err and "--destroy --purge-data first" not in err


def test_restore_refuses_a_backup_of_another_agent_two_agents_and_an_unpublished_image(site, capsys):
    path = a_backup(site, site["tmp"] / "backups")
    site["data"].unlink()
    save_state(site["state_dir"], site["state"].evolve(current=None))
    assert cli(site, "apollo", "--restore", str(path)) == 2
    assert "is a backup of athena, not apollo" in capsys.readouterr().err
    assert cli(site, AGENT, "apollo", "--restore", str(path)) == 2
    assert "name exactly one" in capsys.readouterr().err
    assert cli(site, AGENT, "--restore", str(path), "--image", "v9") == 2
    assert "image v9: not published" in capsys.readouterr().err
    assert not site["data"].exists()


def test_restore_dry_run_takes_the_newest_backup_in_a_dir_and_changes_nothing(site, capsys):
    dest = site["tmp"] / "backups"
    path = a_backup(site, dest)
    site["data"].unlink()
    save_state(site["state_dir"], site["state"].evolve(current=None, uuid="another"))
    assert cli(site, AGENT, "--restore", str(dest), "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"== athena: would restore athena from {path.name}" in out and "onto image v1" in out
    assert f"uuid {site['state'].uuid}" in out and f"backup: {path}" in out
    assert not site["data"].exists() and load_state(site["state_dir"]).uuid == "another"


def test_a_restore_that_fails_after_placing_its_files_removes_them_and_keeps_the_backup(site, monkeypatch):
    path = a_backup(site, site["tmp"] / "backups")
    before = {rel: bm.sha256_file(path / rel) for rel in ("data.qcow2", *bm.key_files())}
    site["data"].unlink()
    save_state(site["state_dir"], site["state"].evolve(current=None, uuid="another"))

    def failing_clone(inv, names, opts, progress, out):
        assert opts.restored and opts.image == "v1"
        st = load_state(site["state_dir"])
        assert st.uuid == site["state"].uuid and st.cloned_at == 1234 and site["data"].exists()
        assert (site["state_dir"] / restore_mod.RESTORING).exists()
        raise CloneError("athena: libvirt refused the domain: injected", 1)

    monkeypatch.setattr(restore_mod, "clone", failing_clone)
    assert cli(site, AGENT, "--restore", str(path)) == 1
    assert not site["data"].exists() and not (site["state_dir"] / restore_mod.RESTORING).exists()
    assert {rel: bm.sha256_file(path / rel) for rel in before} == before


def test_a_killed_restore_of_the_same_backup_is_started_over_not_refused(site):
    path = a_backup(site, site["tmp"] / "backups")
    other = a_backup(site, site["tmp"] / "other")
    save_state(site["state_dir"], site["state"].evolve(current=None))
    (site["state_dir"] / restore_mod.RESTORING).write_text(json.dumps({"backup": str(path.resolve())}))
    assert restore_mod.refuse_present(site["inv"].agent(AGENT), path, site["state_dir"], site["data"], None) is True
    with pytest.raises(CloneError, match="kept by a --destroy"):
        restore_mod.refuse_present(site["inv"].agent(AGENT), other, site["state_dir"], site["data"], None)
