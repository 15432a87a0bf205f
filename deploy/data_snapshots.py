"""qcow2 snapshots of an agent's data disk (/home/agent), taken before a replace swaps the root and kept as the
rollback's way back; at most `keep` of them."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from deploy import disks
from deploy.state import AgentState


@dataclass(frozen=True)
class DataSnapshot:
    """One snapshot of /home/agent: what a restore would go back to, and since when (what a restore discards)."""
    name: str
    taken_at: float          # epoch seconds

    def age(self, now: Optional[float] = None) -> str:
        """`taken 2026-11-28 23:40 UTC, 3 h 12 min ago`: what an operator reads before discarding work."""
        when = datetime.fromtimestamp(self.taken_at, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return f"taken {when}, {_duration((now or time.time()) - self.taken_at)} ago"


def _duration(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    days, hours, mins = minutes // 1440, minutes // 60 % 24, minutes % 60
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {mins} min" if hours else f"{mins} min"


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


def snapshot_before(data_disk: Path, version: str) -> Optional[DataSnapshot]:
    """The snapshot taken before `version` was swapped in, if the data disk still has it."""
    if not data_disk.exists():
        return None
    taken = disks.snapshot_dates(data_disk).get(snapshot_name(version))
    return None if taken is None else DataSnapshot(snapshot_name(version), taken)


def restore_before(data_disk: Path, version: str) -> bool:
    """Put /home/agent back as it was before `version` was swapped in; False when there is no such snapshot."""
    name = snapshot_name(version)
    if data_disk.exists() and name in disks.snapshot_list(data_disk):
        disks.snapshot_apply(data_disk, name)
        return True
    return False
