"""The default backend: one embedded SQLite file, WAL mode, one writer connection."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from .config import CollectorError
from .store import Store


class SqliteStore(Store):
    unavailable = (sqlite3.OperationalError,)

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            parent = Path(path).parent
            if not parent.is_dir():
                raise CollectorError(f"--db sqlite:///{path}: directory {parent} does not exist")
        self.path = path
        super().__init__()

    def _connect(self) -> Any:
        # check_same_thread=False: the store's lock serialises use across the event loop and worker threads.
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash, one fsync per checkpoint
        db.execute("PRAGMA foreign_keys=ON")
        return db
