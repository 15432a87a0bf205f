"""What the backup VM tests read of a running domain and of a backup directory (tests/test_clone_backup_vm.py and
tests/test_clone_day2_vm.py)."""
from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

from deploy.backup_manifest import MANIFEST, key_files, sha256_file


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
