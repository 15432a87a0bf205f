"""Docker's data (images, volumes, containers) on a persistent disk of its own, so a replace no longer wipes it.

`<agent>-docker.qcow2` (ext4, label agent-docker, `docker_gb` in the inventory; none when 0) is created with the
agent's first overlay that has it, kept by replace and rollback like the data disk, and removed only by
`--destroy --purge-data`. The new overlay's /etc/fstab mounts it at /var/lib/docker (nofail, like /home/agent) and a
drop-in makes docker.service and containerd.service require that mount, so Docker never writes its data to the root
overlay when the disk is missing. An image without Docker (the small test image) just mounts the disk; the drop-ins
name units it does not have, which systemd ignores.

A disk of its own rather than a directory on the data disk: the data disk's qcow2 snapshots (one before every
replace, three kept) would pin every image layer Docker ever pulled and deleted since, Docker's churn would fill the
agent's /home/agent, and `--rollback --restore-data` would also rewind the layer store under a running Docker."""
from __future__ import annotations

from deploy.inject import Mkdir, Op, WriteFile

DOCKER_LABEL = "agent-docker"
DOCKER_MOUNT = "/var/lib/docker"
UNITS = ("docker.service", "containerd.service")
DROPIN = "[Unit]\n# agentfleet: Docker's data is on its own persistent disk; never start on the root overlay's\n" \
         f"RequiresMountsFor={DOCKER_MOUNT}\n"


def fstab_line() -> str:
    """As /home/agent's: by label, nofail (a boot never hangs on it), a long device timeout for a busy TCG host."""
    return f"LABEL={DOCKER_LABEL} {DOCKER_MOUNT} ext4 defaults,nofail,x-systemd.device-timeout=10min 0 2"


def mount_ops() -> tuple[Op, ...]:
    """The mount point and the units' drop-ins, written with the fstab that mounts the disk."""
    ops: list[Op] = [Mkdir("/var/lib", 0o755), Mkdir(DOCKER_MOUNT, 0o710)]
    for unit in UNITS:
        ops += [Mkdir(f"/etc/systemd/system/{unit}.d", 0o755),
                WriteFile(f"/etc/systemd/system/{unit}.d/agentfleet-docker-disk.conf", DROPIN.encode())]
    return tuple(ops)
