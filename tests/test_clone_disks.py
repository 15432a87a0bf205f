"""The agent's disks as the hypervisor makes them (deploy/disks.py, deploy/hostkeys.py), with the real qemu-img,
mkfs.ext4 and ssh-keygen: fast, no appliance."""
from __future__ import annotations

import json
import subprocess

from deploy import disks
from deploy.hostkeys import KEY_TYPES, ensure_host_keys


def test_a_new_data_disk_is_a_thin_qcow2_of_its_size_holding_an_empty_labelled_ext4(tmp_path):
    disk = tmp_path / "athena-data.qcow2"
    disks.create_data_disk(disk, 4, "agent-home")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(disk)], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == 4 << 30
    assert info["actual-size"] < 64 << 20           # the file system's metadata, not 4 GiB of zeros
    assert sorted(p.name for p in tmp_path.iterdir()) == ["athena-data.qcow2"]   # the raw file it was made in is gone
    raw = tmp_path / "check.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(disk), str(raw)], check=True)
    superblock = subprocess.run(["dumpe2fs", "-h", str(raw)], capture_output=True, text=True, check=True).stdout
    fields = dict(line.split(":", 1) for line in superblock.splitlines() if ":" in line)
    assert fields["Filesystem volume name"].strip() == "agent-home"
    assert "has_journal" in fields["Filesystem features"] and "extent" in fields["Filesystem features"]   # ext4
    listing = subprocess.run(["debugfs", "-R", "ls -p /", str(raw)], capture_output=True, text=True, check=True)
    assert [row.split("/")[5] for row in listing.stdout.split() if row] == [".", "..", "lost+found"]


def test_a_new_data_disk_replaces_a_killed_runs_leftovers(tmp_path):
    disk = tmp_path / "athena-data.qcow2.partial"
    disk.write_bytes(b"half a disk")
    (tmp_path / "athena-data.qcow2.partial.raw").write_bytes(b"half a raw file")
    disks.create_data_disk(disk, 1, "agent-docker")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["athena-data.qcow2.partial"]
    assert disks.virtual_size(disk) == 1 << 30


def test_host_keys_are_made_once_per_type_and_a_missing_one_alone_is_made_again(tmp_path):
    keys = ensure_host_keys(tmp_path, "athena")
    assert [k.type for k in keys] == list(KEY_TYPES)
    assert all(k.public_line().endswith(" root@athena") and k.private.stat().st_mode & 0o077 == 0 for k in keys)
    before = {k.type: k.private.read_bytes() for k in keys}
    keys[1].private.unlink()
    again = ensure_host_keys(tmp_path, "athena")
    assert [k.private.read_bytes() == before[k.type] for k in again] == [True, False, True]
    assert (tmp_path / "ssh").stat().st_mode & 0o777 == 0o700
