"""Turn the finished root tree (a tar) into a bootable disk inside a libguestfs appliance.

No kpartx, loop devices or device-mapper on the host: partitioning, mkfs, unpacking and grub all happen in the
appliance, so this works in CI containers that have none of them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, TextIO

from bake.appliance import appliance
from bake.errors import BakeError
from bake.run import run

ROOT_LABEL = "agent-root"
MOUNT_POINTS = ("/proc", "/sys", "/dev", "/run", "/tmp", "/home/agent", "/var/tmp")


def assemble(tree_tar: Path, raw: Path, size_gb: int, image_json: dict, log: Optional[TextIO] = None) -> None:
    raw.unlink(missing_ok=True)
    run(["qemu-img", "create", "-q", "-f", "raw", str(raw), f"{size_gb}G"], log=log)
    with appliance([(raw, "raw", False)]) as g:
        g.part_disk("/dev/sda", "mbr")
        g.part_set_bootable("/dev/sda", 1, True)
        g.mkfs("ext4", "/dev/sda1", label=ROOT_LABEL)
        g.mount("/dev/sda1", "/")
        try:
            g.tar_in(str(tree_tar), "/", xattrs=True, acls=True)  # owners are numbers only (manifest.py)
        except RuntimeError as e:
            raise BakeError(f"assemble: unpacking the tree failed: {e}") from None
        for mp in MOUNT_POINTS:
            g.mkdir_p(mp)  # systemd freezes at boot without /proc and /sys mount points
        g.chmod(0o1777, "/tmp")
        g.chmod(0o1777, "/var/tmp")
        g.write("/etc/fstab", f"LABEL={ROOT_LABEL} / ext4 defaults,errors=remount-ro 0 1\n")
        g.mkdir_p("/etc/agentfleet")
        g.write("/etc/agentfleet/image.json", json.dumps(image_json, indent=1, sort_keys=True) + "\n")
        g.chmod(0o644, "/etc/agentfleet/image.json")
        if not g.is_file("/usr/sbin/grub-install"):
            raise BakeError("assemble: the tree has no grub-install (add grub-pc to stages.base.packages)")
        _log(log, g.command(["grub-install", "--target=i386-pc", "/dev/sda"]))
        _log(log, g.command(["update-grub"]))
        g.fstrim("/")


def compress(raw: Path, qcow2: Path, log: Optional[TextIO] = None) -> None:
    """Sparse, compressed qcow2: unused blocks are skipped, data is zstd-compressed with parallel writers."""
    run(["qemu-img", "convert", "-p", "-c", "-f", "raw", "-O", "qcow2", "-o", "compression_type=zstd",
         "-m", "4", "-W", str(raw), str(qcow2)], log=log)


def _log(log: Optional[TextIO], text: str) -> None:
    if log:
        log.write(text if text.endswith("\n") else text + "\n")
