"""Storage: reports by (agent, seq), the latest state per agent, and open alert incidents.

One SQL dialect serves both backends (SQLite >= 3.24 and PostgreSQL share `ON CONFLICT` upserts); a backend only
says how to connect, how to spell a parameter and which of its errors mean "storage unavailable" (a 503, retried).
Every public method is one transaction under one lock, so the web handlers and the sweeper can share a connection.
"""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from functools import cached_property
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

from agentd.protocol import Report

from .config import CollectorError

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS reports (
        agent TEXT NOT NULL, seq BIGINT NOT NULL, sent_at DOUBLE PRECISION NOT NULL,
        received_at DOUBLE PRECISION NOT NULL, body TEXT NOT NULL, PRIMARY KEY (agent, seq))""",
    "CREATE INDEX IF NOT EXISTS reports_received_at ON reports (received_at)",
    """CREATE TABLE IF NOT EXISTS agents (
        agent TEXT PRIMARY KEY, host TEXT NOT NULL, role TEXT NOT NULL, image_version TEXT NOT NULL,
        first_seen DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL, sent_at DOUBLE PRECISION NOT NULL,
        last_seq BIGINT NOT NULL, contiguous_seq BIGINT NOT NULL, gap_since DOUBLE PRECISION,
        healthy INTEGER NOT NULL, drift_count INTEGER NOT NULL, canary_lag_s DOUBLE PRECISION,
        spool_depth BIGINT NOT NULL, spool_dropped BIGINT NOT NULL, spool_oldest_age_s DOUBLE PRECISION NOT NULL,
        latest TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS incidents (
        agent TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, opened_at DOUBLE PRECISION NOT NULL,
        detail TEXT NOT NULL, PRIMARY KEY (agent, kind, key))""",
)

AGENT_COLUMNS = ("agent, host, role, image_version, first_seen, last_seen, sent_at, last_seq, contiguous_seq, "
                 "gap_since, healthy, drift_count, canary_lag_s, spool_depth, spool_dropped, spool_oldest_age_s, latest")

UPSERT_LATEST = f"""INSERT INTO agents ({AGENT_COLUMNS}) VALUES ({", ".join("?" * 17)})
    ON CONFLICT (agent) DO UPDATE SET host = excluded.host, role = excluded.role,
    image_version = excluded.image_version, last_seen = excluded.last_seen, sent_at = excluded.sent_at,
    last_seq = excluded.last_seq, contiguous_seq = excluded.contiguous_seq, gap_since = excluded.gap_since,
    healthy = excluded.healthy, drift_count = excluded.drift_count, canary_lag_s = excluded.canary_lag_s,
    spool_depth = excluded.spool_depth, spool_dropped = excluded.spool_dropped,
    spool_oldest_age_s = excluded.spool_oldest_age_s, latest = excluded.latest"""

# Only what is provably delivered and superseded goes: at or below the contiguous seq, and never the latest report.
PRUNE = """DELETE FROM reports WHERE received_at < ?
    AND seq <= (SELECT a.contiguous_seq FROM agents a WHERE a.agent = reports.agent)
    AND seq < (SELECT a.last_seq FROM agents a WHERE a.agent = reports.agent)"""


class StoreUnavailable(CollectorError):
    """The database refused or dropped us: the report was not stored and the agent should retry (HTTP 503)."""


@dataclass(frozen=True)
class AgentState:
    """The latest state of one agent: what the read API, the pages and /metrics show."""
    agent: str
    host: str
    role: str
    image_version: str
    first_seen: float
    last_seen: float
    sent_at: float
    last_seq: int
    contiguous_seq: int
    gap_since: Optional[float]
    healthy: bool
    drift_count: int
    canary_lag_s: Optional[float]
    spool: dict[str, Any]
    latest_json: str  # the latest report as received; parsed only when someone looks at it

    @cached_property
    def latest(self) -> dict[str, Any]:
        """The latest report with every field present (defaults filled in), as `Report.to_json` writes it."""
        return Report.from_json(json.loads(self.latest_json)).to_json()

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent, "host": self.host, "role": self.role, "image_version": self.image_version,
            "first_seen": self.first_seen, "last_seen": self.last_seen, "sent_at": self.sent_at,
            "last_seq": self.last_seq, "contiguous_seq": self.contiguous_seq, "gap_since": self.gap_since,
            "healthy": self.healthy, "drift_count": self.drift_count, "drift": self.latest.get("drift", []),
            "checks": self.latest.get("checks", []), "metrics": self.latest.get("metrics", {}),
            "canary_lag_s": self.canary_lag_s, "spool": self.spool,
        }


@dataclass(frozen=True)
class Ingested:
    stored: bool           # False: (agent, seq) was already there, nothing changed
    latest: bool           # this report is now the agent's latest state
    last_seq: int
    contiguous_seq: int


@dataclass(frozen=True)
class HistoryPoint:
    seq: int
    sent_at: float
    received_at: float
    metrics: dict[str, float]
    failing: list[str]


@dataclass(frozen=True)
class Incident:
    agent: str
    kind: str              # "stale", "check", "drift", "gap"
    key: str               # check name, drift "kind path", or "" for per-agent incidents
    opened_at: float
    detail: str


class Store:
    """Shared SQL over a DB-API connection; subclasses connect and translate errors."""

    placeholder = "?"
    unavailable: tuple[type[BaseException], ...] = ()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._db: Any = None
        with self._transaction() as tx:
            for statement in SCHEMA:
                tx.execute(statement)

    # -- backend hooks -------------------------------------------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    def _sql(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", self.placeholder)

    # -- plumbing ------------------------------------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator["_Cursor"]:
        with self._lock:
            try:
                if self._db is None:
                    self._db = self._connect()
                yield _Cursor(self._db.cursor(), self._sql)
                self._db.commit()
            except self.unavailable as exc:
                self._drop_connection()
                raise StoreUnavailable(f"database unavailable: {exc}") from exc
            except BaseException:
                try:
                    self._db.rollback()
                except Exception:
                    self._drop_connection()
                raise

    def _drop_connection(self) -> None:
        try:
            self._db.close()
        except Exception:
            pass
        self._db = None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._drop_connection()

    # -- writes --------------------------------------------------------------------------------------------------
    def ingest(self, report: Report, body: str, received_at: float) -> Ingested:
        """Store one report idempotently on (agent, seq), advance the contiguous seq, update the latest state."""
        return self.ingest_many([(report, body, received_at)])[0]

    def ingest_many(self, items: Sequence[tuple[Report, str, float]]) -> list[Ingested]:
        """`ingest` for reports that arrived together, in one transaction: one commit (the dominant cost) for all."""
        with self._transaction() as tx:
            return [self._ingest(tx, report, body, received_at) for report, body, received_at in items]

    @staticmethod
    def _ingest(tx: "_Cursor", report: Report, body: str, received_at: float) -> Ingested:
        inserted = tx.execute(
            "INSERT INTO reports (agent, seq, sent_at, received_at, body) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING", (report.agent, report.seq, report.sent_at, received_at, body)).rowcount
        row = tx.execute("SELECT last_seq, contiguous_seq, gap_since FROM agents WHERE agent = ?",
                         (report.agent,)).fetchone()
        last_seq, contiguous, gap_since = row if row else (0, 0, None)
        if inserted != 1:
            return Ingested(False, False, last_seq, contiguous)
        if report.seq == contiguous + 1:
            contiguous = report.seq
            if last_seq > report.seq:  # this report fills a gap: walk up over what already arrived
                for (seq,) in tx.execute("SELECT seq FROM reports WHERE agent = ? AND seq > ? ORDER BY seq",
                                         (report.agent, contiguous)).fetchall():
                    if seq != contiguous + 1:
                        break
                    contiguous = seq
        latest = report.seq > last_seq
        last_seq = max(last_seq, report.seq)
        gap_since = (gap_since or received_at) if contiguous < last_seq else None
        if latest:
            tx.execute(UPSERT_LATEST, (
                report.agent, report.host, report.role, report.image_version, received_at, received_at,
                report.sent_at, last_seq, contiguous, gap_since, int(report.healthy), len(report.drift),
                report.canary_lag_s, report.spool.depth, report.spool.dropped, report.spool.oldest_age_s, body))
        else:
            tx.execute("UPDATE agents SET last_seen = ?, contiguous_seq = ?, gap_since = ? WHERE agent = ?",
                       (received_at, contiguous, gap_since, report.agent))
        return Ingested(True, latest, last_seq, contiguous)

    def prune(self, older_than: float) -> int:
        """Delete reports received before `older_than` that are delivered (<= contiguous seq) and not the latest."""
        with self._transaction() as tx:
            return tx.execute(PRUNE, (older_than,)).rowcount

    def open_incident(self, incident: Incident) -> None:
        with self._transaction() as tx:
            tx.execute("INSERT INTO incidents (agent, kind, key, opened_at, detail) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT DO NOTHING",
                       (incident.agent, incident.kind, incident.key, incident.opened_at, incident.detail))

    def close_incident(self, incident: Incident) -> None:
        with self._transaction() as tx:
            tx.execute("DELETE FROM incidents WHERE agent = ? AND kind = ? AND key = ?",
                       (incident.agent, incident.kind, incident.key))

    # -- reads ---------------------------------------------------------------------------------------------------
    def agents(self) -> list[AgentState]:
        with self._transaction() as tx:
            rows = tx.execute(f"SELECT {AGENT_COLUMNS} FROM agents ORDER BY agent").fetchall()
        return [_agent_state(row) for row in rows]

    def agent(self, name: str) -> Optional[AgentState]:
        with self._transaction() as tx:
            row = tx.execute(f"SELECT {AGENT_COLUMNS} FROM agents WHERE agent = ?", (name,)).fetchone()
        return _agent_state(row) if row else None

    def history(self, name: str, limit: int = 60) -> list[HistoryPoint]:
        """The agent's most recent stored reports, oldest first (metric history for its page)."""
        with self._transaction() as tx:
            rows = tx.execute("SELECT seq, sent_at, received_at, body FROM reports WHERE agent = ? "
                              "ORDER BY seq DESC LIMIT ?", (name, limit)).fetchall()
        points = []
        for seq, sent_at, received_at, body in reversed(rows):
            data = json.loads(body)
            points.append(HistoryPoint(seq, sent_at, received_at, data.get("metrics", {}),
                                       [c["name"] for c in data.get("checks", []) if c.get("status") == "fail"]))
        return points

    def report_count(self, name: Optional[str] = None) -> int:
        with self._transaction() as tx:
            if name is None:
                return tx.execute("SELECT COUNT(*) FROM reports").fetchone()[0]
            return tx.execute("SELECT COUNT(*) FROM reports WHERE agent = ?", (name,)).fetchone()[0]

    def incidents(self) -> list[Incident]:
        with self._transaction() as tx:
            rows = tx.execute("SELECT agent, kind, key, opened_at, detail FROM incidents "
                              "ORDER BY agent, kind, key").fetchall()
        return [Incident(*row) for row in rows]


class _Cursor:
    """A cursor that writes `?` in the backend's parameter style."""

    def __init__(self, cursor: Any, sql: Callable[[str], str]) -> None:
        self.cursor, self.sql = cursor, sql

    def execute(self, statement: str, params: tuple = ()) -> Any:
        self.cursor.execute(self.sql(statement), params)
        return self.cursor


def _agent_state(row: tuple) -> AgentState:
    (agent, host, role, image_version, first_seen, last_seen, sent_at, last_seq, contiguous_seq, gap_since, healthy,
     drift_count, canary_lag_s, spool_depth, spool_dropped, spool_oldest_age_s, latest) = row
    return AgentState(
        agent=agent, host=host, role=role, image_version=image_version, first_seen=first_seen, last_seen=last_seen,
        sent_at=sent_at, last_seq=last_seq, contiguous_seq=contiguous_seq, gap_since=gap_since,
        healthy=bool(healthy), drift_count=drift_count, canary_lag_s=canary_lag_s,
        spool={"depth": spool_depth, "dropped": spool_dropped, "oldest_age_s": spool_oldest_age_s},
        latest_json=latest)


def open_store(db_url: str) -> Store:
    """The backend for a --db URL: sqlite:///PATH (default) or postgresql://..."""
    from .config import sqlite_path

    path = sqlite_path(db_url)
    if path is not None:
        from .store_sqlite import SqliteStore
        return SqliteStore(path)
    if db_url.startswith(("postgresql://", "postgres://")):
        from .store_postgres import PostgresStore
        return PostgresStore(db_url)
    raise CollectorError(f"--db {db_url.split('://')[0]}://...: expected sqlite:///PATH or postgresql://...")
