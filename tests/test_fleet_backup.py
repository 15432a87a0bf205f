"""`fleet backup` / `fleet restore`, the fast tier: a backup travelling between the workstation and a real sshd
"hypervisor" on loopback over the fleet's SSH transport (tar streams, verified on arrival, renamed in when whole,
the host's copy removed), the refusals before anything travels, and the tar stream's guard. The whole path with a
running VM (clone.py --backup/--restore on the host) is tests/test_clone_backup_vm.py's."""
from __future__ import annotations

import io
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from deploy import inventory
from deploy.backup_manifest import (
    DATA_DISK,
    DIR_MODE,
    Identity,
    Manifest,
    backup_name,
    describe_files,
    key_files,
    verify,
    write_manifest,
)
from deploy.fleet import backup_verb
from deploy.fleet.errors import FleetError
from deploy.fleet.hostside import BACKUPS_DIR, HostStepError, extract_backup
from deploy.fleet.ssh import Ssh, SshConfig
from deploy.hostkeys import ensure_host_keys
from tests.clone_support import write_secrets
from tests.fleet_support import running_lab

AGENT = "fba"


def make_backup(parent: Path, agent: str = AGENT) -> Path:
    """A real backup dir as deploy/backup.py lays it out (a small qcow2, real host keys, the manifest)."""
    taken = time.time()
    root = parent / backup_name(agent, taken)
    parent.mkdir(mode=DIR_MODE, exist_ok=True)
    root.mkdir(mode=DIR_MODE)
    keys = ensure_host_keys(parent / f".state-{agent}", agent)
    (root / "ssh").mkdir(mode=DIR_MODE)
    for rel in key_files():
        (root / rel).write_bytes((parent / f".state-{agent}" / rel).read_bytes())
        (root / rel).chmod(0o600)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(root / DATA_DISK), "8M"], check=True)
    (root / DATA_DISK).chmod(0o600)
    identity = Identity("1b4e28ba-2fa1-11d2-883f-0016d3cca427", "52:54:00:12:34:56", "0" * 32, 1700000000,
                        tuple((k.type, k.public_line()) for k in keys))
    write_manifest(root, Manifest(agent, "b1", "v1", taken, True, identity, describe_files(root)))
    return root


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("fleet-backup")
    with running_lab(work, ("b1",), 70) as lab:
        lab.overlay({AGENT: {"host": "b1", "ip": "10.220.1.220", "vcpu": 1, "ram_gb": 1, "disk_gb": 1,
                             "role": "test"}},
                    secrets={"source": {"file": str(write_secrets(work / "secrets.yaml", [AGENT]))}},
                    services={"collector_url": "http://10.0.2.100:8765"})
        assert lab.fleet("trust", "b1").returncode == 0
        inv = inventory.load(Path(lab.env["AGENTFLEET_INVENTORY"]))
        lab.inv, lab.host = inv, inv.hosts["b1"]
        lab.ssh = Ssh(SshConfig(known_hosts=lab.fleet_dir / "known_hosts", control_dir=lab.control_dir,
                                identity=lab.client_key))
        yield lab


def test_a_backup_goes_to_its_host_and_comes_back_whole_private_and_verified(lab, tmp_path):
    source = make_backup(tmp_path / "local")
    on_host = backup_verb.push_backup(lab.ssh, lab.host, source, 60)
    host_copy = lab.hosts["b1"].storage / BACKUPS_DIR / source.name
    assert on_host == str(host_copy)
    assert stat.S_IMODE(host_copy.parent.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600) for p in host_copy.rglob("*"))
    assert verify(host_copy, AGENT).files == verify(source, AGENT).files
    pulled = backup_verb.pull(lab.ssh, lab.host, AGENT, source.name, tmp_path, 60)
    assert pulled == tmp_path / source.name and verify(pulled, AGENT).identity == verify(source, AGENT).identity
    assert not list(tmp_path.glob(".partial-*"))
    backup_verb.remove_host_copy(lab.ssh, lab.host, source.name)
    assert not host_copy.exists()


def test_a_copy_damaged_on_the_host_is_refused_on_arrival_and_leaves_nothing(lab, tmp_path):
    source = make_backup(tmp_path / "local")
    backup_verb.push_backup(lab.ssh, lab.host, source, 60)
    host_copy = lab.hosts["b1"].storage / BACKUPS_DIR / source.name
    with open(host_copy / DATA_DISK, "r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    dest = tmp_path / "pulled"
    dest.mkdir()
    with pytest.raises(FleetError, match=f"b1: pulled backup {source.name} does not verify here: .*sha256"):
        backup_verb.pull(lab.ssh, lab.host, AGENT, source.name, dest, 60)
    assert list(dest.iterdir()) == []
    with pytest.raises(FleetError, match="b1: pulling backup .* failed: no backup"):
        backup_verb.pull(lab.ssh, lab.host, AGENT, backup_name(AGENT, 0), dest, 60)
    backup_verb.remove_host_copy(lab.ssh, lab.host, source.name)


def test_restore_dry_run_verifies_here_and_says_where_it_would_go(lab, tmp_path):
    source = make_backup(tmp_path / "local")
    proc = lab.fleet("restore", AGENT, "--from", str(tmp_path / "local"), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"would send {source}" in proc.stdout and "clone.py --restore there (image v1)" in proc.stdout
    with open(source / DATA_DISK, "ab") as f:
        f.write(b"x")
    proc = lab.fleet("restore", AGENT, "--from", str(source))
    assert proc.returncode == 2 and "truncated copy" in proc.stderr or "manifest says" in proc.stderr
    assert not (lab.hosts["b1"].storage / BACKUPS_DIR / source.name).exists()      # nothing travelled


def test_a_backup_the_host_refuses_is_one_line_and_nothing_lands_here(lab, tmp_path):
    dest = tmp_path / "backups"
    proc = lab.fleet("backup", AGENT, "--to", str(dest))
    assert proc.returncode == 2
    assert f"b1: clone.py --backup failed: {AGENT}: no VM here to back up" in proc.stderr
    assert list(dest.iterdir()) == []


def test_a_backup_stream_cannot_write_outside_its_directory(tmp_path):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        evil = tarfile.TarInfo("athena-20260101T000000Z/../../escaped")
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"x"))
    data.seek(0)
    with pytest.raises(HostStepError, match="is not inside"):
        extract_backup(data, tmp_path / ".partial", "athena-20260101T000000Z")
    assert not (tmp_path / "escaped").exists()
