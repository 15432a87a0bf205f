"""qcow2 snapshots of an agent's data disk (/home/agent), taken before a replace swaps the root and kept as the
rollback's way back; at most `keep` of them."""
from __future__ import annotations

from pathlib import Path

from deploy import disks
from deploy.state import AgentState


def snapshot_name(version: str) -> str:
    return f"pre-{version}"


def snapshot_before_swap(st: AgentState, data_disk: Path, version: str, keep: int) -> AgentState:
    """Snapshot /home/agent before the swap (the domain is stopped). A resumed replace keeps its snapshot."""
    if not data_disk.exists():
        return st
    name = snapshot_name(version)
    existing = disks.snapshot_list(data_disk)
    resumed = st.pending and st.pending.image_version == version and name in existing and name in st.snapshots
    if not resumed:
        if name in existing:
            disks.snapshot_delete(data_disk, name)
        disks.snapshot_create(data_disk, name)
    snaps = [s for s in st.snapshots if s != name] + [name]
    for old in snaps[:-keep]:
        if old in disks.snapshot_list(data_disk):
            disks.snapshot_delete(data_disk, old)
    return st.evolve(snapshots=tuple(snaps[-keep:]))


def restore_before(data_disk: Path, version: str) -> bool:
    """Put /home/agent back as it was before `version` was swapped in; False when there is no such snapshot."""
    name = snapshot_name(version)
    if data_disk.exists() and name in disks.snapshot_list(data_disk):
        disks.snapshot_apply(data_disk, name)
        return True
    return False
