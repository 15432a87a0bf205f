"""Online backups of the collector's SQLite database, on a schedule the collector process owns.

A thread (never the event loop, never a store thread) copies the live database with SQLite's backup API, which
reads a consistent snapshot while the store keeps writing (WAL: the writer does not wait for it), into
`<backup dir>/collector-<UTC time>.db`: written as a `.partial` file, synced, then renamed, so a backup that exists
is a whole one. The newest `keep` are kept. A collector that restarts does not back up again until the newest
backup is `every_s` old. PostgreSQL has its own tools (pg_dump); this is SQLite's. Restoring: restore.py.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

log = logging.getLogger("collector.backup")

PREFIX, SUFFIX, PARTIAL = "collector-", ".db", ".partial"


@dataclass(frozen=True)
class BackupPolicy:
    db_path: Path          # the live database
    backup_dir: Path
    every_s: float
    keep: int
    busy_timeout_s: float = 5.0


@dataclass(frozen=True)
class BackupDone:
    path: Path
    size: int
    seconds: float
    pruned: tuple[Path, ...]


def backup_name(now: float) -> str:
    """Sortable by name, UTC, to the millisecond (so two backups within a second do not collide)."""
    return f"{PREFIX}{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}.{int(now * 1000) % 1000:03d}Z{SUFFIX}"


def backups(backup_dir: Path) -> list[Path]:
    """The finished backups, newest first."""
    return sorted((p for p in backup_dir.glob(f"{PREFIX}*{SUFFIX}") if p.is_file()), key=lambda p: p.name,
                  reverse=True)


def backup_once(policy: BackupPolicy, now: Optional[float] = None) -> BackupDone:
    """One consistent copy of the live database, then the oldest beyond `keep` removed."""
    started = time.monotonic()
    now = time.time() if now is None else now
    final = policy.backup_dir / backup_name(now)
    partial = final.with_name(final.name + PARTIAL)
    for stale in policy.backup_dir.glob(f"{PREFIX}*{SUFFIX}{PARTIAL}"):  # left by a crash mid-backup
        stale.unlink(missing_ok=True)
    source = sqlite3.connect(policy.db_path, timeout=policy.busy_timeout_s)
    try:
        target = sqlite3.connect(partial)
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        finally:
            target.close()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    os.chmod(partial, 0o600)  # reports are not secret, but nothing in the collector's state is anyone else's
    fsync(partial)
    os.replace(partial, final)
    fsync(policy.backup_dir)
    pruned = tuple(backups(policy.backup_dir)[policy.keep:])
    for old in pruned:
        old.unlink(missing_ok=True)
    return BackupDone(final, final.stat().st_size, time.monotonic() - started, pruned)


def seconds_until_due(policy: BackupPolicy, now: float) -> float:
    """0 when no backup is younger than `every_s`: a restart neither skips a backup nor takes one too many."""
    newest = backups(policy.backup_dir)
    if not newest:
        return 0.0
    return max(0.0, newest[0].stat().st_mtime + policy.every_s - now)


class BackupScheduler:
    """The collector's backup thread: backs up when due, logs one line per backup or failure, retries next period."""

    def __init__(self, policy: BackupPolicy) -> None:
        self.policy = policy
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="backup", daemon=True)

    def start(self) -> None:
        log.info("backups: %s every %g s into %s, newest %d kept", self.policy.db_path, self.policy.every_s,
                 self.policy.backup_dir, self.policy.keep)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)  # a backup in progress finishes (or fails) on its own

    def _loop(self) -> None:
        while not self._stop.wait(seconds_until_due(self.policy, time.time())):
            try:
                done = backup_once(self.policy)
                log.info("backup: %s (%d bytes in %.2f s)%s", done.path, done.size, done.seconds,
                         f"; removed {len(done.pruned)} older" if done.pruned else "")
            except (OSError, sqlite3.Error) as exc:
                log.error("backup into %s failed: %s; next try in %g s", self.policy.backup_dir, exc,
                          self.policy.every_s)
                self._stop.wait(self.policy.every_s)


def fsync(path: Path) -> None:
    """A file's data, or a directory's entries (a rename), on disk before we say it is done."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
