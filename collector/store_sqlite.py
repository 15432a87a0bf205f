"""The default backend: one embedded SQLite file in WAL mode, so readers never wait for the writer's commit."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from .config import CollectorError
from .database import Backend


def sqlite_backend(path: str, timeout_s: float) -> Backend:
    parent = Path(path).parent
    if not parent.is_dir():
        raise CollectorError(f"--db sqlite:///{path}: directory {parent} does not exist")

    def connect() -> Any:
        # One connection per store thread; check_same_thread=False only so the store can close them all at the end.
        # timeout: how long a write waits for another process's write lock before the store answers 503.
        db = sqlite3.connect(path, check_same_thread=False, timeout=timeout_s)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
        return db

    return Backend(f"sqlite:///{path}", connect, "?", (sqlite3.OperationalError,))
