"""The store as the web service uses it: every call runs on the store's own threads, never on the event loop.

One writer thread (one connection) does every write in order, so reports, incidents and retention never contend
with each other; a few reader threads (a connection each) answer reads, which in SQLite's WAL mode and in
PostgreSQL never queue behind the writer's commit. A database that does not answer within `timeout_s` (another
process holding the write lock, a slow disk, PostgreSQL over a bad network) is `StoreUnavailable`, a 503, and the
event loop keeps serving /healthz and everything else meanwhile. `health()` says how the last calls went, without
asking the database.
"""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, TypeVar

from agentd.protocol import Report

from .config import CollectorError, sqlite_path
from .database import Backend, Database
from .records import (
    AgentState,
    AuditRecord,
    DriftAcceptance,
    GapAcknowledgement,
    HistoryPoint,
    Incident,
    Ingested,
    StoreUnavailable,
)
from .rollouts import Rollout

READERS = 3
DEFAULT_TIMEOUT_S = 5.0

T = TypeVar("T")

__all__ = ["Store", "StoreHealth", "StoreUnavailable", "open_store", "AgentState", "AuditRecord", "DriftAcceptance",
           "GapAcknowledgement", "HistoryPoint", "Incident", "Ingested"]


@dataclass(frozen=True)
class StoreHealth:
    ok: bool
    detail: str                   # "ok", or why not, in one line


class Store:
    def __init__(self, backend: Backend, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.backend, self.timeout_s = backend, timeout_s
        self._local = threading.local()
        self._databases: list[Database] = []
        self._databases_lock = threading.Lock()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="store-reader")
        self._write_started: Optional[float] = None    # monotonic start of the write in progress
        # "write"/"read" -> (monotonic, why) of the last failed call of that kind, until one of that kind succeeds
        self._failures: dict[str, tuple[float, str]] = {}
        self._probing: set[str] = set()
        try:
            self._writer.submit(self._call, "write", Database.ensure_schema).result()
        except BaseException:
            self.close()
            raise

    # -- writes (one thread, in order) ---------------------------------------------------------------------------
    async def ingest_many(self, items: Sequence[tuple[Report, float]]) -> list[Ingested]:
        return await self._write(Database.ingest_many, items)

    async def ingest(self, report: Report, received_at: float) -> Ingested:
        return (await self.ingest_many([(report, received_at)]))[0]

    async def prune(self, older_than: float) -> int:
        return await self._write(Database.prune, older_than)

    async def record_incidents(self, opened: Sequence[Incident], closed: Sequence[Incident]) -> None:
        await self._write(Database.record_incidents, opened, closed)

    async def acknowledge_gap(self, agent: str, now: float, reason: str) -> Optional[GapAcknowledgement]:
        return await self._write(Database.acknowledge_gap, agent, now, reason)

    async def record_audit(self, record: AuditRecord) -> bool:
        return await self._write(Database.record_audit, record)

    async def accept_drift(self, acceptances: Sequence[DriftAcceptance]) -> None:
        await self._write(Database.accept_drift, acceptances)

    async def record_rollout(self, rollout: Rollout) -> Optional[str]:
        return await self._write(Database.record_rollout, rollout)

    # -- reads (a few threads, never behind a write) -------------------------------------------------------------
    async def rollouts(self) -> list[Rollout]:
        return await self._read(Database.rollouts)

    async def audit_events(self, name: str, limit: int = 100) -> list[AuditRecord]:
        return await self._read(Database.audit_events, name, limit)

    async def drift_acceptances(self, agent: Optional[str] = None) -> list[DriftAcceptance]:
        return await self._read(Database.drift_acceptances, agent)

    async def agents(self) -> list[AgentState]:
        return await self._read(Database.agents)

    async def agent(self, name: str) -> Optional[AgentState]:
        return await self._read(Database.agent, name)

    async def stored_above(self, name: str, seq: int) -> int:
        return await self._read(Database.stored_above, name, seq)

    async def gap_acknowledgements(self, name: str) -> list[GapAcknowledgement]:
        return await self._read(Database.gap_acknowledgements, name)

    async def history(self, name: str, limit: int = 60) -> list[HistoryPoint]:
        return await self._read(Database.history, name, limit)

    async def report_count(self, name: Optional[str] = None) -> int:
        return await self._read(Database.report_count, name)

    async def incidents(self) -> list[Incident]:
        return await self._read(Database.incidents)

    # -- health and lifecycle ------------------------------------------------------------------------------------
    def health(self) -> StoreHealth:
        """From what the store's threads saw, never from a query: answers at once whatever the database does."""
        started = self._write_started
        if started is not None and time.monotonic() - started > self.timeout_s:
            return StoreHealth(False, f"a write has been waiting {time.monotonic() - started:.0f} s for the database")
        for kind, (at, why) in sorted(self._failures.items()):
            self._probe(kind)
            return StoreHealth(False, f"last {kind} failed {time.monotonic() - at:.0f} s ago: {why}")
        return StoreHealth(True, "ok")

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._databases_lock:
            for database in self._databases:
                database.close()
            self._databases.clear()

    # -- plumbing ------------------------------------------------------------------------------------------------
    def _probe(self, kind: str) -> None:
        """Try that kind of call once more in the background, so health recovers without waiting for traffic."""
        if kind in self._probing:
            return
        self._probing.add(kind)
        executor, method = (self._writer, Database.probe_write) if kind == "write" else (self._readers, Database.ping)
        try:
            executor.submit(self._call, kind, method).add_done_callback(lambda _: self._probing.discard(kind))
        except RuntimeError:  # shut down
            self._probing.discard(kind)

    async def _write(self, method: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._timed_write, method, args)

    async def _read(self, method: Callable[..., T], *args: Any) -> T:
        future = asyncio.get_running_loop().run_in_executor(self._readers, self._call, "read", method, *args)
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        except asyncio.TimeoutError:
            why = f"database did not answer a read within {self.timeout_s:g} s"
            self._failures["read"] = (time.monotonic(), why)
            raise StoreUnavailable(why) from None

    def _timed_write(self, method: Callable[..., T], args: tuple) -> T:
        self._write_started = time.monotonic()
        try:
            return self._call("write", method, *args)
        finally:
            self._write_started = None

    def _call(self, kind: str, method: Callable[..., T], *args: Any) -> T:
        """Run on a store thread with that thread's own connection; remember whether the database answered."""
        database = getattr(self._local, "database", None)
        if database is None:
            database = self._local.database = Database(self.backend)
            with self._databases_lock:
                self._databases.append(database)
        try:
            result = method(database, *args)
        except StoreUnavailable as exc:
            self._failures[kind] = (time.monotonic(), str(exc).splitlines()[0][:200])
            raise
        self._failures.pop(kind, None)
        return result


def open_store(db_url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Store:
    """The store for a --db URL: sqlite:///PATH (default) or postgresql://..."""
    path = sqlite_path(db_url)
    if path is not None:
        from .store_sqlite import sqlite_backend
        return Store(sqlite_backend(path, timeout_s), timeout_s)
    if db_url.startswith(("postgresql://", "postgres://")):
        from .store_postgres import postgres_backend
        return Store(postgres_backend(db_url, timeout_s), timeout_s)
    raise CollectorError(f"--db {db_url.split('://')[0]}://...: expected sqlite:///PATH or postgresql://...")
