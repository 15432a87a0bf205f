"""Per-agent state on the hypervisor (`<state_dir>/<agent>/state.json`): which image and root overlay are current,
the previous ones (for rollback), the data disk, its snapshots, the Docker disk, domain UUID, MAC and machine-id.
No secret values.

Written atomically (temp file, fsync, rename) so a process killed at any step leaves the old or the new state."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid as uuidlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

STATE_FILE = "state.json"


@dataclass(frozen=True)
class Slot:
    image_version: str
    root_disk: str


@dataclass(frozen=True)
class AgentState:
    agent: str
    uuid: str
    mac: str
    machine_id: str
    data_disk: str
    current: Optional[Slot] = None
    previous: Optional[Slot] = None
    pending: Optional[Slot] = None       # a replace in progress: the overlay being swapped in
    snapshots: tuple[str, ...] = ()      # data-disk qcow2 snapshots, oldest first
    cloned_at: int = 0                   # first clone (epoch s), kept across replaces and updates (identity.json)
    docker_disk: str = ""                # Docker's persistent disk (/var/lib/docker); "" while the agent has none

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "AgentState":
        slot = lambda v: Slot(**v) if v else None  # noqa: E731
        return cls(**{**data, "current": slot(data.get("current")), "previous": slot(data.get("previous")),
                      "pending": slot(data.get("pending")), "snapshots": tuple(data.get("snapshots", ()))})

    def evolve(self, **changes) -> "AgentState":
        return replace(self, **changes)


def mac_for(agent: str) -> str:
    """A stable locally administered MAC in QEMU's 52:54:00 range, derived from the agent's name."""
    digest = hashlib.sha256(agent.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def new_state(agent: str, data_disk: Path) -> AgentState:
    return AgentState(agent=agent, uuid=str(uuidlib.uuid4()), mac=mac_for(agent), machine_id=uuidlib.uuid4().hex,
                      data_disk=str(data_disk))


def load_state(state_dir: Path) -> Optional[AgentState]:
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    return AgentState.from_json(json.loads(path.read_text()))


def save_state(state_dir: Path, state: AgentState) -> None:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(state_dir / STATE_FILE, json.dumps(state.to_json(), indent=2, sort_keys=True).encode() + b"\n")


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dirfd = os.open(path.parent, os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
