"""qcow2 files of an agent: root overlays backed by the golden image (never written), the persistent data disk,
and the data disk's internal snapshots. Everything goes through qemu-img via run()."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from host.run import run

QEMU_IMG_TIMEOUT_S = 600  # qemu-img on a loaded hypervisor; a hung one must not hang the clone


def root_disk_path(storage_dir: Path, agent: str, version: str) -> Path:
    return storage_dir / f"{agent}-root-{version}.qcow2"


def data_disk_path(storage_dir: Path, agent: str) -> Path:
    return storage_dir / f"{agent}-data.qcow2"


def backup_overlay_path(data_disk: Path) -> Path:
    """Where a running agent writes while its data disk is copied for a backup (beside it: QEMU's user must reach
    it); merged back and removed before the backup ends."""
    return data_disk.with_name(data_disk.name.removesuffix(".qcow2") + ".backup-overlay.qcow2")


def docker_disk_path(storage_dir: Path, agent: str) -> Path:
    return storage_dir / f"{agent}-docker.qcow2"


def gb_bytes(size_gb: float) -> int:
    """An inventory size in bytes, rounded to whole MiB as qemu-img is given it (so an unchanged size compares
    equal to the disk's)."""
    return int(size_gb * 1024) << 20


def partial(path: Path) -> Path:
    """Where a disk is built; renamed into place only once injected, so a killed run never leaves a half disk."""
    return path.with_name(path.name + ".partial")


def create_overlay(golden: Path, path: Path, size_bytes: int = 0) -> None:
    """An overlay of the golden image; `size_bytes` above the image's size makes a bigger disk (the root partition
    and file system are grown in the appliance: deploy/resize.py)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    _qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(golden.resolve()), str(path),
              *([str(size_bytes)] if size_bytes else []))


def create_data_disk(path: Path, size_gb: float, label: str) -> None:
    """A qcow2 of `size_gb` holding a new, empty ext4 labelled `label` (the data disk and the Docker disk).

    Formatted here on the hypervisor, not in the appliance: mkfs.ext4 on a sparse raw file beside `path`, which
    qemu-img converts into the qcow2 (only the file system's metadata is allocated; the raw file goes). Natively that
    takes milliseconds, even for 250 GB, and every agent's runs side by side in prepare; in the one appliance (TCG)
    it cost about a second per agent, one after the other. The same mke2fs and mke2fs.conf either way (the appliance
    is built from the host's packages), so the file system is the one the appliance made. lazy_journal_init: the
    raw file is sparse, so the journal reads as zeros without being written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    raw = path.with_name(path.name + ".raw")
    raw.unlink(missing_ok=True)          # a killed run's leftover
    try:
        with open(raw, "wb") as f:
            f.truncate(gb_bytes(size_gb))
        run(["mkfs.ext4", "-q", "-F", "-L", label, "-E", "lazy_journal_init=1", str(raw)], capture=True,
            timeout=QEMU_IMG_TIMEOUT_S)
        _qemu_img("convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path))
    finally:
        raw.unlink(missing_ok=True)


def virtual_size(path: Path) -> int:
    """The disk's size as the guest sees it, in bytes; readable while the VM runs (-U)."""
    return int(json.loads(_qemu_img("info", "-U", "--output=json", str(path)))["virtual-size"])


def grow(path: Path, size_bytes: int) -> None:
    """Grow a stopped VM's qcow2 (internal snapshots keep their own size: restoring one restores that size)."""
    _qemu_img("resize", "-q", str(path), str(size_bytes))


def copy_disk(src: Path, dest: Path, timeout_s: Optional[float] = None) -> None:
    """A standalone compact qcow2 of `src`'s current contents: no backing file, no internal snapshots (the data
    disk's pre-<version> snapshots stay behind). -U: `src` may be the frozen backing file of a running guest."""
    dest.unlink(missing_ok=True)
    run(["qemu-img", "convert", "-U", "-O", "qcow2", str(src), str(dest)], capture=True, timeout=timeout_s)


def commit_overlay(overlay: Path) -> None:
    """Merge an overlay into its backing file with the guest stopped (an interrupted backup's leftover)."""
    _qemu_img("commit", "-q", str(overlay))


def backing_file(path: Path) -> str:
    info = json.loads(_qemu_img("info", "-U", "--output=json", str(path)))
    return info.get("full-backing-filename") or info.get("backing-filename") or ""


def snapshot_create(path: Path, name: str) -> None:
    _qemu_img("snapshot", "-c", name, str(path))


def snapshot_apply(path: Path, name: str) -> None:
    _qemu_img("snapshot", "-a", name, str(path))


def snapshot_delete(path: Path, name: str) -> None:
    _qemu_img("snapshot", "-d", name, str(path))


def snapshot_list(path: Path) -> list[str]:
    return list(snapshot_dates(path))


def snapshot_dates(path: Path) -> dict[str, float]:
    """Snapshot name -> when it was taken (epoch seconds), oldest first; readable while the VM runs (-U)."""
    info = json.loads(_qemu_img("info", "-U", "--output=json", str(path)))
    return {s["name"]: s.get("date-sec", 0) + s.get("date-nsec", 0) / 1e9 for s in info.get("snapshots", [])}


def _qemu_img(*args: str) -> str:
    return run(["qemu-img", *args], capture=True, timeout=QEMU_IMG_TIMEOUT_S)
