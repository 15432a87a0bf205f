"""One clone.py at a time per agent on a hypervisor.

A `fleet rollout` killed mid-wave (a laptop closed, ^C twice) kills its ssh sessions, but the clone.py each started
on a hypervisor goes on with its replace; the rollout run again starts another clone.py for the same agent. Without a
lock the two work one VM at once: the second watched the first one's rollback stop the domain and took it for a
crash. With it, the second waits for the first to finish (progress says so, with the holder's pid), then decides from
the state the first left: a replace already done is not done twice.

The locks are flocks (the kernel releases them when a process dies, however it dies) on files in /run/lock/agentfleet,
named by the agent and the state dir it lives in, not in the state dir: a run refused for bad input writes nothing
there, and a destroy with --purge-data leaves no agent dir behind.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from deploy.inventory import Inventory
from host.progress import Progress

RUN_LOCK = Path("/run/lock")
LOCK_DIR = RUN_LOCK / "agentfleet" if RUN_LOCK.is_dir() else Path(tempfile.gettempdir()) / "agentfleet-locks"


@contextlib.contextmanager
def holding(inv: Inventory, names: list[str], progress: Progress) -> Iterator[None]:
    """Hold every named agent's lock (taken in name order, so two runs naming the same agents cannot deadlock)."""
    with contextlib.ExitStack() as stack:
        for name in sorted(set(names)):
            stack.enter_context(_one(lock_path(inv.state_dir(inv.agent(name))), name, progress))
        yield


def lock_path(agent_state_dir: Path) -> Path:
    """`<agent>-<hash of its state dir>.lock`: two sites on one machine (tests) may name the same agent."""
    where = hashlib.sha256(str(agent_state_dir.resolve()).encode()).hexdigest()[:12]
    return LOCK_DIR / f"{agent_state_dir.name}-{where}.lock"


@contextlib.contextmanager
def _one(path: Path, name: str, progress: Progress) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            with progress.phase(f"{name}: waiting for the clone.py working on it (pid {holder}) to finish"):
                fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
