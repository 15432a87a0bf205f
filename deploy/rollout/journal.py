"""The rollout's journal on the workstation: one JSON file per fleet, rewritten atomically at every step (temp file,
fsync, rename, fsync of the directory), so a kill at any point leaves either the previous step or the next one.
Beside it a lock file held with flock for the whole run: a second rollout of the same fleet is refused, and
`--status` tells a running rollout (lock held) from a stopped one."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from deploy.inventory import Inventory
from deploy.rollout.errors import RolloutError

SCHEMA = 1


def fleet_id(inv: Inventory) -> str:
    """One journal per inventory file: its name plus a hash of its resolved path(s)."""
    sources = "|".join(str(Path(s).resolve()) for s in inv.sources) or "fleet"
    stem = Path(inv.sources[0]).stem if inv.sources else "fleet"
    return f"{stem}-{hashlib.sha256(sources.encode()).hexdigest()[:10]}"


class Journal:
    """The rollout's record: plan, options, per-wave and per-agent phases, and how it ended."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path, self.data = path, data
        self.on_save: Optional[Callable[[dict[str, Any]], None]] = None   # a view of each step (the collector's page)

    @staticmethod
    def path_for(journal_dir: Path, inv: Inventory) -> Path:
        return journal_dir / f"{fleet_id(inv)}.json"

    @staticmethod
    def read(path: Path) -> Optional["Journal"]:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            raise RolloutError(f"journal {path}: not valid JSON; move it away to start over") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise RolloutError(f"journal {path}: unknown format; move it away to start over")
        return Journal(path, data)

    @staticmethod
    def create(path: Path, **fields: Any) -> "Journal":
        now = time.time()
        journal = Journal(path, {"schema": SCHEMA, "state": "running", "started_at": now, "updated_at": now,
                                 "pid": os.getpid(), "halt": None, **fields})
        journal.save()
        return journal

    # -- steps: each one is saved before the step it records takes effect (or right after it returned)
    def agent(self, name: str) -> dict[str, Any]:
        return self.data["agents"][name]

    def set_agent(self, name: str, **fields: Any) -> None:
        self.data["agents"][name].update(fields, updated_at=time.time())
        self.save()

    def set_wave(self, index: int, **fields: Any) -> None:
        self.data["waves"][index].update(fields)
        self.save()

    def set(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def save(self) -> None:
        self.data["updated_at"] = time.time()
        atomic_write(self.path, json.dumps(self.data, indent=1, sort_keys=True).encode())
        if self.on_save is not None:
            self.on_save(self.data)


def atomic_write(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def fleet_lock(journal_path: Path) -> Iterator[None]:
    """Hold the fleet's rollout lock for the block, or refuse at once naming the process that holds it."""
    lock_path = journal_path.with_suffix(".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise RolloutError(f"another rollout of this fleet is running (pid {holder}, lock {lock_path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def lock_holder(journal_path: Path) -> Optional[str]:
    """The pid holding the fleet's lock, or None when no rollout runs."""
    lock_path = journal_path.with_suffix(".lock")
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
    finally:
        os.close(fd)
