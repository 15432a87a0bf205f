"""PostgreSQL backend (psycopg 3) for a fleet that outgrows one box: same SQL, `%s` parameters."""
from __future__ import annotations

from typing import Any

import psycopg

from .store import Store


class PostgresStore(Store):
    placeholder = "%s"
    unavailable = (psycopg.OperationalError, psycopg.InterfaceError)

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__()

    def _connect(self) -> Any:
        return psycopg.connect(self.url, connect_timeout=10)
