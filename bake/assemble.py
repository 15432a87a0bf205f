"""Turn the finished root tree into a bootable disk without kpartx, loop devices or device-mapper.

The tree is unpacked on the host and written into an ext4 filesystem inside a plain file with `mke2fs -d` (owners,
modes, xattrs and hard links included), behind an MBR made by sfdisk on the same file. Only the bootloader needs the
image's own tools: grub-install and update-grub run in a libguestfs appliance, a small job even under TCG (copying
the whole tree through the appliance took minutes there).
"""
from __future__ import annotations

import json
import os
import posixpath
import shutil
from pathlib import Path
from typing import Optional, TextIO

from agentd import vm_files
from bake.errors import BakeError
from host.appliance import Drive, appliance
from host.run import run

ROOT_LABEL = "agent-root"
PART_OFFSET = 1 << 20  # the partition starts at 1 MiB, grub's core.img lives before it
MOUNT_POINTS = ("proc", "sys", "dev", "run", "tmp", "var/tmp", "home/agent")
STICKY_DIRS = ("tmp", "var/tmp")
FSTAB = "etc/fstab"
FSTAB_LINE = f"LABEL={ROOT_LABEL} / ext4 defaults,errors=remount-ro 0 1\n"


def unpack(tree_tar: Path, root: Path, log: Optional[TextIO] = None) -> None:
    """Owners by number (the host's names are not the image's), modes, xattrs (file capabilities), hard links."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    run(["tar", "-C", str(root), "--numeric-owner", "--same-owner", "-xpf", str(tree_tar),
         "--xattrs", "--xattrs-include=*"], log=log)


def finish_tree(root: Path, image_json: Optional[dict]) -> None:
    """What DIB's tar output lacks: mount points (systemd freezes at boot without /proc and /sys), fstab, manifest.
    A layered image's base layer gets all but the manifest (`image_json` None); its app layer gets them again, the
    manifest included, through finish_guest."""
    for mp in MOUNT_POINTS:
        (root / mp).mkdir(parents=True, exist_ok=True)
    for tmp in STICKY_DIRS:
        os.chmod(root / tmp, 0o1777)
    (root / FSTAB).write_text(FSTAB_LINE)
    if image_json is not None:
        manifest = root / vm_files.IMAGE_JSON.lstrip("/")
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(_manifest_text(image_json))
        os.chmod(manifest, 0o644)


def finish_guest(g, image_json: dict) -> None:
    """finish_tree, on a mounted root file system in a libguestfs appliance (a layered image's app layer)."""
    for mp in MOUNT_POINTS:
        g.mkdir_p(f"/{mp}")
    for tmp in STICKY_DIRS:
        g.chmod(0o1777, f"/{tmp}")
    g.write(f"/{FSTAB}", FSTAB_LINE.encode())
    g.mkdir_p(posixpath.dirname(vm_files.IMAGE_JSON))
    g.write(vm_files.IMAGE_JSON, _manifest_text(image_json).encode())
    g.chmod(0o644, vm_files.IMAGE_JSON)


def _manifest_text(image_json: dict) -> str:
    return json.dumps(image_json, indent=1, sort_keys=True) + "\n"


def make_disk(root: Path, raw: Path, size_gb: int, log: Optional[TextIO] = None) -> None:
    if not (root / "usr" / "sbin" / "grub-install").exists():
        raise BakeError("assemble: the tree has no grub-install (add grub-pc to stages.base.packages)")
    raw.unlink(missing_ok=True)
    size = size_gb << 30
    run(["qemu-img", "create", "-q", "-f", "raw", str(raw), str(size)], log=log)
    partition = f"start={PART_OFFSET // 512}, type=83, bootable\n"
    run(["sfdisk", "--quiet", str(raw)], log=log, input_bytes=partition.encode())
    blocks = (size - PART_OFFSET) // 4096
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-L", ROOT_LABEL, "-d", str(root),
         "-E", f"offset={PART_OFFSET}", str(raw), str(blocks)], log=log)


def install_bootloader(raw: Path, log: Optional[TextIO] = None) -> None:
    with appliance([Drive(raw, "raw")]) as g:
        g.mount("/dev/sda1", "/")
        try:
            # Inside the appliance the kernel names disks in probe order, which varies: ours is sometimes sdb and
            # the appliance's own sda. Install to the disk that holds /boot, as grub sees it, not to a fixed name.
            disk = g.command(["grub-probe", "--target=disk", "/boot"]).strip()
            _log(log, f"boot disk in the appliance: {disk}")
            _log(log, g.command(["grub-install", "--target=i386-pc", disk]))
            _log(log, g.command(["update-grub"]))
        except RuntimeError as e:
            raise BakeError(f"assemble: bootloader: {e}") from None


def compress(raw: Path, qcow2: Path, log: Optional[TextIO] = None) -> None:
    """Sparse, compressed qcow2: unused blocks are skipped, data is zstd-compressed with parallel writers."""
    run(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "compression_type=zstd",
         "-m", "4", "-W", str(raw), str(qcow2)], log=log)


def _log(log: Optional[TextIO], text: str) -> None:
    if log:
        log.write(text if text.endswith("\n") else text + "\n")
