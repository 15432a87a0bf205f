"""`python -m collector restore BACKUP --db sqlite:////PATH`: put a backup (backup.py) back as the live database.

Never under a running collector: `serve` holds a shared lock on `<db>.lock` for its whole life and the restore takes
it exclusively (a collector started during the restore refuses to start). The backup is checked first (PRAGMA
integrity_check, the collector's tables), copied beside the database with SQLite's backup API, and renamed into
place; the database it replaces is kept as `<db>.before-restore-<time>` with its -wal/-shm, never deleted.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

from .backup import fsync as _fsync
from .config import CollectorError

REQUIRED_TABLES = ("agents", "reports", "collector_meta")


@dataclass(frozen=True)
class BackupFacts:
    """What a valid backup holds (shown before and after a restore)."""
    path: str
    agents: int
    reports: int
    newest_report_at: Optional[float]


@dataclass(frozen=True)
class Restored:
    database: str
    backup: BackupFacts
    kept_previous: Optional[str]   # where the replaced database went (None: there was none)
    dry_run: bool

    def to_json(self) -> dict:
        return asdict(self)


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def hold_serving_lock(db_path: Path) -> int:
    """The running collector's claim on its database (shared: two collectors on one file stay possible); the fd is
    kept open for the process's life. Refused while a restore holds it."""
    try:
        fd = os.open(lock_path(db_path), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise CollectorError(f"--db {db_path}: cannot open {lock_path(db_path)}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CollectorError(f"--db {db_path}: a restore is in progress (it holds {lock_path(db_path)})") from None
    return fd


@contextlib.contextmanager
def _exclusive(db_path: Path) -> Iterator[None]:
    fd = os.open(lock_path(db_path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CollectorError(f"{db_path}: a collector is running on it (it holds {lock_path(db_path)}); stop it "
                                 f"first (systemctl stop agentfleet-collector)") from None
        yield
    finally:
        os.close(fd)


def validate_backup(path: Path) -> BackupFacts:
    """PRAGMA integrity_check must say ok and the collector's tables must be there; else one line saying why."""
    if not path.is_file():
        raise CollectorError(f"backup {path}: no such file")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            verdict = [row[0] for row in db.execute("PRAGMA integrity_check")]
            if verdict != ["ok"]:
                problems = [line for row in verdict for line in row.splitlines()]
                raise CollectorError(f"backup {path}: fails PRAGMA integrity_check ({len(problems)} problems, first: "
                                     f"{problems[0][:200]}); not restored")
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = [t for t in REQUIRED_TABLES if t not in tables]
            if missing:
                raise CollectorError(f"backup {path}: not a collector database (no table {missing[0]})")
            agents = db.execute("SELECT COUNT(*) FROM agents").fetchone()[0]
            reports, newest = db.execute("SELECT COUNT(*), MAX(received_at) FROM reports").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise CollectorError(f"backup {path}: unreadable as SQLite ({exc}); not restored") from None
    return BackupFacts(str(path), agents, reports, newest)


def restore(backup: Path, db_path: Path, dry_run: bool = False, now: Optional[float] = None) -> Restored:
    now = time.time() if now is None else now
    if not db_path.parent.is_dir():
        raise CollectorError(f"--db {db_path}: directory {db_path.parent} does not exist")
    facts = validate_backup(backup)
    with _exclusive(db_path):
        kept = db_path.with_name(f"{db_path.name}.before-restore-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}")
        if dry_run:
            return Restored(str(db_path), facts, str(kept) if db_path.exists() else None, True)
        partial = db_path.with_name(db_path.name + ".restore.partial")
        partial.unlink(missing_ok=True)
        source, target = sqlite3.connect(f"file:{backup}?mode=ro", uri=True), sqlite3.connect(partial)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        owner = db_path if db_path.exists() else db_path.parent   # the collector's user must own what it writes
        st = owner.stat()
        os.chown(partial, st.st_uid, st.st_gid)
        os.chmod(partial, 0o600)
        _fsync(partial)
        if db_path.exists():
            for suffix in ("", "-wal", "-shm"):   # the database and its WAL move together, or not at all
                src = db_path.with_name(db_path.name + suffix)
                if src.exists():
                    os.replace(src, kept.with_name(kept.name + suffix))
        os.replace(partial, db_path)
        _fsync(db_path.parent)
        return Restored(str(db_path), facts, str(kept) if kept.exists() else None, False)
