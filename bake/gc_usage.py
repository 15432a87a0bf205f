"""What agents use of an images dir, for `bake gc` and `fleet gc`: the files no collection may touch.

A running VM reads every file of its root disk's backing chain (its overlay, the image's app layer, the base layer
under that), a rollback boots the previous image's overlay, a replace under way swaps in a pending one. So "in use"
is every file in the backing chain of every agent disk, found two ways so that neither alone can miss one: the
qcow2 files in the storage dirs (a disk being built, `.partial`, included) and the disks each agent's state.json
names; plus the images those states name as current, previous or pending (by version). Chains are read from the
qcow2 headers (bake/publish.py backing_name), never from libvirt: a stopped VM's disks count as much."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from bake import publish
from bake.errors import BakeError

MAX_CHAIN = 64                 # a backing chain longer than this is a loop
SLOTS = ("current", "previous", "pending")


@dataclass(frozen=True)
class AgentDirs:
    """Where agents' disks are looked for: storage dirs (every qcow2 directly in one is an agent disk, except the
    images dir's own files) and state dirs (`<state dir>/<agent>/state.json` names each agent's disks)."""
    storage: tuple[Path, ...] = ()
    state: tuple[Path, ...] = ()


@dataclass
class Uses:
    """Paths something needs, each with the first reason found; a path matches as written and resolved, so a
    symlinked dir or a backing file named through one is still recognised."""
    why: dict[str, str] = field(default_factory=dict)

    def add(self, path: Path, reason: str) -> None:
        for form in _forms(path):
            self.why.setdefault(form, reason)

    def of(self, path: Path) -> Optional[str]:
        return next((self.why[f] for f in _forms(path) if f in self.why), None)


def _forms(path: Path) -> tuple[str, ...]:
    return (os.path.abspath(path), os.path.realpath(path))


@dataclass(frozen=True)
class Usage:
    """`chains`: every file in an agent disk's backing chain -> the disk; `disks`: the disks themselves;
    `images`: image version -> which agents' states name it (`athena's previous image`)."""
    chains: Uses
    disks: Uses
    images: dict[str, tuple[str, ...]]


def survey(agents: AgentDirs, images_dir: Path) -> Usage:
    """What the agents found in `agents` use. BakeError when a state or a disk cannot be read: then no one can say
    what is free, and nothing may be removed."""
    chains, disks = Uses(), Uses()
    for disk, label in agent_disks(agents, images_dir):
        disks.add(disk, label)
        for path in backing_chain(disk):
            chains.add(path, label)
    return Usage(chains, disks, state_images(agents))


def agent_disks(agents: AgentDirs, images_dir: Path) -> list[tuple[Path, str]]:
    """The disks the states name (root overlays, data and Docker disks) and every qcow2 directly in a storage dir. In
    the images dir itself (when a lab makes it the storage dir) only a qcow2 backed by an absolute path, or a
    `.partial`, counts: the clone makes overlays so, and published layers name their backing file bare."""
    disks: list[tuple[Path, str]] = []
    for state_dir in agents.state:
        for agent, state in states(state_dir):
            for slot in SLOTS:
                root = _slot(state, slot).get("root_disk")
                if isinstance(root, str) and root:
                    disks.append((_under(state_dir / agent, root), f"{agent}'s {slot} root disk"))
            for key in ("data_disk", "docker_disk"):
                if isinstance(state.get(key), str) and state[key]:
                    disks.append((_under(state_dir / agent, state[key]), f"{agent}'s {key.replace('_', ' ')}"))
    images = os.path.realpath(images_dir)
    for storage in agents.storage:
        if not storage.is_dir():
            continue
        for path in sorted(storage.iterdir()):
            if not path.is_file() or not is_qcow2(path):
                continue
            if os.path.realpath(path.parent) == images and not path.name.endswith(".partial") \
                    and not os.path.isabs(publish.backing_name(path) or "-"):
                continue
            disks.append((path, f"agent disk {path}"))
    return disks


def state_images(agents: AgentDirs) -> dict[str, tuple[str, ...]]:
    """Image version -> the agents' states naming it: a rollback boots the previous image, a replace under way swaps
    in the pending one, and the current one is what the agent runs."""
    out: dict[str, list[str]] = {}
    for state_dir in agents.state:
        for agent, state in states(state_dir):
            for slot in SLOTS:
                version = _slot(state, slot).get("image_version")
                if isinstance(version, str) and version:
                    out.setdefault(version, []).append(f"{agent}'s {slot} image")
    return {v: tuple(w) for v, w in out.items()}


def states(state_dir: Path) -> Iterable[tuple[str, dict]]:
    """(agent, its state.json) for every agent under `state_dir`."""
    if not state_dir.is_dir():
        return
    for path in sorted(state_dir.glob("*/state.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise BakeError(f"{path}: unreadable agent state ({e}); what its agent uses is unknown, so nothing is "
                            f"removed") from None
        if isinstance(data, dict):
            yield path.parent.name, data


def _slot(state: dict, slot: str) -> dict:
    value = state.get(slot)
    return value if isinstance(value, dict) else {}


def _under(base: Path, name: str) -> Path:
    return Path(name) if os.path.isabs(name) else base / name


def is_qcow2(path: Path) -> bool:
    """False for a missing file or another format (a raw disk has no backing file); BakeError when unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"QFI\xfb"
    except (FileNotFoundError, IsADirectoryError):
        return False
    except OSError as e:
        raise BakeError(f"{path}: unreadable ({e.strerror}); which image it needs is unknown, so nothing is "
                        f"removed") from None


def backing_chain(disk: Path) -> list[Path]:
    """`disk` and every file under it as qemu finds them: an absolute backing name as it is, a relative one against
    the disk's dir (as named and, when that differs, as resolved: both are kept). Stops at a missing file or one
    that is not qcow2."""
    chain: list[Path] = []
    visited: set[Path] = set()
    path = disk
    while path not in visited and len(visited) < MAX_CHAIN:
        visited.add(path)
        if path not in chain:
            chain.append(path)
        if not is_qcow2(path):
            break
        backing = publish.backing_name(path)
        if not backing or backing.startswith("json:"):
            break
        if os.path.isabs(backing):
            path = Path(backing)
            continue
        named, resolved = path.parent / backing, Path(os.path.realpath(path)).parent / backing
        if resolved != named and resolved not in chain:
            chain.append(resolved)
        path = named if named.exists() or not resolved.exists() else resolved
    return chain
