"""PostgreSQL backend (psycopg 3) for a fleet that outgrows one box: the same SQL with `%s` parameters."""
from __future__ import annotations

from typing import Any

from .database import Backend


def postgres_backend(url: str, timeout_s: float) -> Backend:
    import psycopg  # only a PostgreSQL collector needs it

    def connect() -> Any:
        # A statement or a lock wait longer than the store's timeout fails (QueryCanceled, LockNotAvailable are
        # OperationalErrors): the caller gets a 503 instead of a request that hangs on a slow network.
        timeout_ms = max(1, int(timeout_s * 1000))
        return psycopg.connect(url, connect_timeout=max(1, round(timeout_s)),
                               options=f"-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}")

    return Backend("postgresql://...", connect, "%s", (psycopg.OperationalError, psycopg.InterfaceError))
