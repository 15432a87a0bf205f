"""The store's SQL over one DB-API connection: reports by (agent, seq), the latest state per agent, open alert
incidents and acknowledged gaps.

One SQL dialect serves both backends (SQLite >= 3.24 and PostgreSQL share `ON CONFLICT` upserts); a `Backend` only
says how to connect, how to spell a parameter and which of its errors mean "storage unavailable". A `Database` is
used by one thread at a time: the store (store.py) gives each of its threads its own.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

from agentd.protocol import Report, SpoolState

from .config import CollectorError
from .records import (
    AgentState,
    AuditRecord,
    DriftAcceptance,
    GapAcknowledgement,
    HistoryPoint,
    Incident,
    Ingested,
    StoreUnavailable,
    canonical_json,
)
from .rollouts import Rollout

LAYOUT = 2  # 1: agents.latest and reports.body held the body as received; 2: the canonical form (records.py)

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
    """CREATE TABLE IF NOT EXISTS gap_acknowledgements (
        agent TEXT NOT NULL, from_seq BIGINT NOT NULL, to_seq BIGINT NOT NULL, missing BIGINT NOT NULL,
        acknowledged_at DOUBLE PRECISION NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (agent, to_seq))""",
    "CREATE TABLE IF NOT EXISTS collector_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # audit events (collector/audit.py): changes is a JSON list of lines; (agent, at, who) makes a resend a no-op
    """CREATE TABLE IF NOT EXISTS audit_events (
        agent TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, who TEXT NOT NULL, changes TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (agent, at, who))""",
    """CREATE TABLE IF NOT EXISTS drift_acceptances (
        agent TEXT NOT NULL, image_version TEXT NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL, expected TEXT,
        actual TEXT, accepted_at DOUBLE PRECISION NOT NULL, accepted_by TEXT NOT NULL, reason TEXT NOT NULL,
        PRIMARY KEY (agent, path, kind, accepted_at))""",
    # fleet rollouts (collector/rollouts.py): the newest snapshot per fleet, as posted by `fleet rollout`
    """CREATE TABLE IF NOT EXISTS rollouts (
        fleet TEXT PRIMARY KEY, state TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
        received_at DOUBLE PRECISION NOT NULL, body TEXT NOT NULL)""",
)
ACCEPTANCE_COLUMNS = "agent, image_version, path, kind, expected, actual, accepted_at, accepted_by, reason"

AGENT_COLUMNS = ("agent, host, role, image_version, first_seen, last_seen, sent_at, last_seq, contiguous_seq, "
                 "gap_since, healthy, drift_count, canary_lag_s, spool_depth, spool_dropped, spool_oldest_age_s, "
                 "latest")

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

EMPTY_LATEST = '{"checks":[],"drift":[],"metrics":{}}'


@dataclass(frozen=True)
class Backend:
    """How to reach one kind of database; the SQL is the same for all."""
    name: str                                          # for messages; never holds a password
    connect: Callable[[], Any]                         # a new DB-API connection
    placeholder: str                                   # "?" or "%s"
    unavailable: tuple[type[BaseException], ...]       # errors that mean "retry later", not "bug"


class Database:
    """One connection (opened lazily, reopened after an outage); every public method is one transaction."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._db: Any = None

    # -- plumbing ------------------------------------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator["_Cursor"]:
        try:
            if self._db is None:
                self._db = self.backend.connect()
            cursor = _Cursor(self._db.cursor(), self.backend.placeholder)
            yield cursor
            self._db.commit()
        except self.backend.unavailable as exc:
            self.close()
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        except BaseException:
            try:
                self._db.rollback()
            except Exception:
                self.close()
            raise

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except Exception:
                pass
            self._db = None

    # -- schema --------------------------------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Create what is missing and bring an older database's layout up to date, once, at start."""
        with self._transaction() as tx:
            for statement in SCHEMA:
                tx.execute(statement)
            row = tx.execute("SELECT value FROM collector_meta WHERE key = 'layout'").fetchone()
            if row is None or int(row[0]) < LAYOUT:
                for agent, latest in tx.execute("SELECT agent, latest FROM agents").fetchall():
                    tx.execute("UPDATE agents SET latest = ? WHERE agent = ?", (_canonical_from_legacy(latest), agent))
                tx.execute("INSERT INTO collector_meta (key, value) VALUES ('layout', ?) "
                           "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(LAYOUT),))

    def ping(self) -> None:
        with self._transaction() as tx:
            tx.execute("SELECT 1").fetchone()

    def probe_write(self) -> None:
        """A write that changes nothing: does the database take our writes again (its write lock, its disk)?"""
        with self._transaction() as tx:
            tx.execute("UPDATE collector_meta SET value = value WHERE key = 'layout'")

    # -- writes --------------------------------------------------------------------------------------------------
    def ingest_many(self, items: Sequence[tuple[Report, float]]) -> list[Ingested]:
        """Reports that arrived together, in one transaction: one commit (the dominant cost) for all."""
        with self._transaction() as tx:
            return [_ingest(tx, report, received_at) for report, received_at in items]

    def prune(self, older_than: float) -> int:
        """Delete reports received before `older_than` that are delivered (<= contiguous seq) and not the latest."""
        with self._transaction() as tx:
            return tx.execute(PRUNE, (older_than,)).rowcount

    def record_incidents(self, opened: Sequence[Incident], closed: Sequence[Incident]) -> None:
        with self._transaction() as tx:
            for i in opened:
                tx.execute("INSERT INTO incidents (agent, kind, key, opened_at, detail) VALUES (?, ?, ?, ?, ?) "
                           "ON CONFLICT DO NOTHING", (i.agent, i.kind, i.key, i.opened_at, i.detail))
            for i in closed:
                tx.execute("DELETE FROM incidents WHERE agent = ? AND kind = ? AND key = ?", (i.agent, i.kind, i.key))

    def acknowledge_gap(self, agent: str, now: float, reason: str) -> Optional[GapAcknowledgement]:
        """Count every report up to the agent's last seq as accounted for; None when there is no gap."""
        with self._transaction() as tx:
            row = tx.execute("SELECT last_seq, contiguous_seq FROM agents WHERE agent = ?", (agent,)).fetchone()
            if row is None:
                raise CollectorError(f"agent {agent!r}: no report from it is stored in this database")
            last_seq, contiguous = row
            if contiguous >= last_seq:
                return None
            moved = tx.execute("UPDATE agents SET contiguous_seq = last_seq, gap_since = NULL "
                               "WHERE agent = ? AND last_seq = ? AND contiguous_seq = ?",
                               (agent, last_seq, contiguous)).rowcount
            if moved != 1:
                raise CollectorError(f"agent {agent!r} reported while its gap was being acknowledged: run it again")
            stored = tx.execute("SELECT COUNT(*) FROM reports WHERE agent = ? AND seq > ? AND seq < ?",
                                (agent, contiguous, last_seq)).fetchone()[0]
            ack = GapAcknowledgement(agent, contiguous + 1, last_seq - 1, last_seq - 1 - contiguous - stored, now,
                                     reason)
            tx.execute("INSERT INTO gap_acknowledgements (agent, from_seq, to_seq, missing, acknowledged_at, reason) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (ack.agent, ack.from_seq, ack.to_seq, ack.missing, ack.acknowledged_at, ack.reason))
            return ack

    def record_audit(self, record: AuditRecord) -> bool:
        """Store one audit event; False when the same (agent, at, who) is already stored."""
        with self._transaction() as tx:
            return tx.execute("INSERT INTO audit_events (agent, at, who, changes, received_at) VALUES (?, ?, ?, ?, ?) "
                              "ON CONFLICT DO NOTHING", (record.agent, record.at, record.who,
                                                         json.dumps(list(record.changes)),
                                                         record.received_at)).rowcount == 1

    def accept_drift(self, acceptances: Sequence[DriftAcceptance]) -> None:
        """Record an operator's acceptances (kept for good: they are the record of who accepted what)."""
        with self._transaction() as tx:
            for a in acceptances:
                tx.execute(f"INSERT INTO drift_acceptances ({ACCEPTANCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                           "ON CONFLICT DO NOTHING", (a.agent, a.image_version, a.path, a.kind, a.expected, a.actual,
                                                      a.accepted_at, a.accepted_by, a.reason))

    def record_rollout(self, rollout: Rollout) -> Optional[str]:
        """Keep the newest snapshot of the fleet's rollout; returns the state it replaced (None: none was stored),
        so the caller announces a rollout's end once. An older snapshot (posted late) changes nothing."""
        with self._transaction() as tx:
            row = tx.execute("SELECT state, updated_at FROM rollouts WHERE fleet = ?", (rollout.fleet,)).fetchone()
            if row is not None and row[1] > rollout.updated_at:
                return row[0]
            tx.execute("INSERT INTO rollouts (fleet, state, updated_at, received_at, body) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT (fleet) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at, "
                       "received_at = excluded.received_at, body = excluded.body",
                       (rollout.fleet, rollout.state, rollout.updated_at, rollout.received_at,
                        json.dumps(rollout.to_json(), sort_keys=True)))
            return None if row is None else row[0]

    # -- reads ---------------------------------------------------------------------------------------------------
    def rollouts(self) -> list[Rollout]:
        """Every fleet's newest rollout, the most recently updated first."""
        with self._transaction() as tx:
            rows = tx.execute("SELECT body, received_at FROM rollouts ORDER BY updated_at DESC").fetchall()
        return [Rollout.from_json(json.loads(body), received_at) for body, received_at in rows]

    def audit_events(self, name: str, limit: int = 100) -> list[AuditRecord]:
        """The agent's most recent audit events, newest first."""
        with self._transaction() as tx:
            rows = tx.execute("SELECT agent, at, who, changes, received_at FROM audit_events WHERE agent = ? "
                              "ORDER BY at DESC LIMIT ?", (name, limit)).fetchall()
        return [AuditRecord(agent, at, who, tuple(json.loads(changes)), received_at)
                for agent, at, who, changes, received_at in rows]

    def drift_acceptances(self, agent: Optional[str] = None) -> list[DriftAcceptance]:
        """Every acceptance (of one agent, or all), oldest first."""
        with self._transaction() as tx:
            if agent is None:
                rows = tx.execute(f"SELECT {ACCEPTANCE_COLUMNS} FROM drift_acceptances "
                                  "ORDER BY accepted_at, agent, path, kind").fetchall()
            else:
                rows = tx.execute(f"SELECT {ACCEPTANCE_COLUMNS} FROM drift_acceptances WHERE agent = ? "
                                  "ORDER BY accepted_at, path, kind", (agent,)).fetchall()
        return [DriftAcceptance(*row) for row in rows]

    def agents(self) -> list[AgentState]:
        with self._transaction() as tx:
            rows = tx.execute(f"SELECT {AGENT_COLUMNS} FROM agents ORDER BY agent").fetchall()
        return [_agent_state(row) for row in rows]

    def agent(self, name: str) -> Optional[AgentState]:
        with self._transaction() as tx:
            row = tx.execute(f"SELECT {AGENT_COLUMNS} FROM agents WHERE agent = ?", (name,)).fetchone()
        return _agent_state(row) if row else None

    def stored_above(self, name: str, seq: int) -> int:
        """How many of the agent's reports above `seq` are stored (the rest of a gap is missing)."""
        with self._transaction() as tx:
            return tx.execute("SELECT COUNT(*) FROM reports WHERE agent = ? AND seq > ?", (name, seq)).fetchone()[0]

    def gap_acknowledgements(self, name: str) -> list[GapAcknowledgement]:
        with self._transaction() as tx:
            rows = tx.execute("SELECT agent, from_seq, to_seq, missing, acknowledged_at, reason "
                              "FROM gap_acknowledgements WHERE agent = ? ORDER BY to_seq", (name,)).fetchall()
        return [GapAcknowledgement(*row) for row in rows]

    def history(self, name: str, limit: int = 60) -> list[HistoryPoint]:
        """The agent's most recent stored reports, oldest first (metric history for its page)."""
        with self._transaction() as tx:
            rows = tx.execute("SELECT seq, sent_at, received_at, body FROM reports WHERE agent = ? "
                              "ORDER BY seq DESC LIMIT ?", (name, limit)).fetchall()
        return [_history_point(*row) for row in reversed(rows)]

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

    def __init__(self, cursor: Any, placeholder: str) -> None:
        self.cursor, self.placeholder = cursor, placeholder

    def execute(self, statement: str, params: tuple = ()) -> Any:
        self.cursor.execute(statement if self.placeholder == "?" else statement.replace("?", self.placeholder), params)
        return self.cursor


def _ingest(tx: _Cursor, report: Report, received_at: float) -> Ingested:
    """Store one report idempotently on (agent, seq), advance the contiguous seq, update the latest state."""
    body = canonical_json(report)
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


def _agent_state(row: tuple) -> AgentState:
    (agent, host, role, image_version, first_seen, last_seen, sent_at, last_seq, contiguous_seq, gap_since, healthy,
     drift_count, canary_lag_s, spool_depth, spool_dropped, spool_oldest_age_s, latest) = row
    return AgentState(
        agent=agent, host=host, role=role, image_version=image_version, first_seen=first_seen, last_seen=last_seen,
        sent_at=sent_at, last_seq=last_seq, contiguous_seq=contiguous_seq, gap_since=gap_since,
        healthy=bool(healthy), drift_count=drift_count, canary_lag_s=canary_lag_s,
        spool=SpoolState(depth=spool_depth, oldest_age_s=spool_oldest_age_s, dropped=spool_dropped),
        latest_json=latest)


def _history_point(seq: int, sent_at: float, received_at: float, body: str) -> HistoryPoint:
    try:
        data = json.loads(body)
        metrics, failing = data.get("metrics", {}), [c["name"] for c in data.get("checks", [])
                                                     if c.get("status") == "fail"]
    except (ValueError, RecursionError, TypeError, KeyError, AttributeError):
        # a layout-1 body as an agent sent it (canonical ones cannot fail): shown without metrics, never a 500
        metrics, failing = {}, []
    return HistoryPoint(seq, sent_at, received_at, metrics, failing)


def _canonical_from_legacy(raw: str) -> str:
    """A layout-1 latest body, validated once more by the upgrade (never again on read)."""
    try:
        return canonical_json(Report.from_json(json.loads(raw)))
    except (ValueError, RecursionError):
        return EMPTY_LATEST
