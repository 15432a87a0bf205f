"""What the store holds and hands out: typed, frozen and already parsed.

The store writes an agent's latest checks, drift and metrics in a canonical form of its own (`canonical_json`),
built from a report that `Report.from_json` accepted, so a read only decodes JSON of a known, shallow shape (and
only when it looks at them: the sweep and /metrics never do): it never parses again, let alone validates again,
what an agent sent.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Optional

from agentd.protocol import UNEXPLAINED, AcceptedDrift, CheckResult, DriftEntry, Report, SpoolState

from .config import CollectorError


class StoreUnavailable(CollectorError):
    """The database refused, dropped or did not answer us in time: nothing was changed; retry later (HTTP 503)."""


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
    spool: SpoolState
    latest_json: str = field(repr=False)  # canonical (records.canonical_json): decoded only when someone looks

    @cached_property
    def _latest(self) -> tuple[tuple[CheckResult, ...], tuple[DriftEntry, ...], dict[str, float]]:
        return latest_from_canonical(self.latest_json)

    @property
    def checks(self) -> tuple[CheckResult, ...]:
        return self._latest[0]

    @property
    def drift(self) -> tuple[DriftEntry, ...]:
        return self._latest[1]

    @property
    def metrics(self) -> dict[str, float]:
        return self._latest[2]

    @property
    def failing(self) -> list[str]:
        return [c.name for c in self.checks if c.status == "fail"]

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent, "host": self.host, "role": self.role, "image_version": self.image_version,
            "first_seen": self.first_seen, "last_seen": self.last_seen, "sent_at": self.sent_at,
            "last_seq": self.last_seq, "contiguous_seq": self.contiguous_seq, "gap_since": self.gap_since,
            "healthy": self.healthy, "drift_count": self.drift_count, "drift": [d.to_json() for d in self.drift],
            "checks": [asdict(c) for c in self.checks], "metrics": dict(self.metrics),
            "canary_lag_s": self.canary_lag_s, "spool": asdict(self.spool),
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


@dataclass(frozen=True)
class GapAcknowledgement:
    """An operator's word that the reports from_seq..to_seq not stored by then will never arrive (`ack-gap`)."""
    agent: str
    from_seq: int
    to_seq: int
    missing: int           # how many of from_seq..to_seq were not stored when acknowledged
    acknowledged_at: float
    reason: str


@dataclass(frozen=True)
class AuditRecord:
    """An audit event as stored (collector/audit.py): who changed which of the agent's settings when, by name only."""
    agent: str
    at: float              # when the change was made (the operator's clock)
    who: str
    changes: tuple[str, ...]
    received_at: float     # when the collector recorded it (its clock)

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent, "at": self.at, "who": self.who, "changes": list(self.changes),
                "received_at": self.received_at}


@dataclass(frozen=True)
class DriftAcceptance:
    """An operator's acceptance of one drift entry of one agent (`accept-drift`, the agent page): who, when, why, and
    the value accepted. The agent adopts it into its baseline from the answer to its next report (acceptance.py)."""
    agent: str
    image_version: str     # the agent's image when accepted: another image has another baseline
    path: str
    kind: str
    expected: Optional[str]
    actual: Optional[str]  # the value accepted (a sha256, mode, owner or package version; None: accepted as gone)
    accepted_at: float
    accepted_by: str
    reason: str

    def wire(self) -> AcceptedDrift:
        return AcceptedDrift(self.path, self.kind, self.expected, self.actual, self.accepted_at, self.accepted_by)


def canonical_json(report: Report) -> str:
    """The report as the collector stores it: only known fields, at most three levels deep. What `to_json()` gives,
    built from the (flat) dataclasses' own dicts: `asdict` deep-copies and cost more than validating the report."""
    data = dict(vars(report))
    data["checks"] = [vars(c) for c in report.checks]
    data["drift"] = [d.to_json() for d in report.drift]
    data["spool"] = vars(report.spool)
    return json.dumps(data, separators=(",", ":"))


def latest_from_canonical(text: str) -> tuple[tuple[CheckResult, ...], tuple[DriftEntry, ...], dict[str, float]]:
    """checks, drift and metrics of a document `canonical_json` wrote (older databases: see the store's upgrade)."""
    data = json.loads(text)
    return (tuple(CheckResult(**c) for c in data.get("checks", [])),
            tuple(_drift_entry(d) for d in data.get("drift", [])), data.get("metrics", {}))


def _drift_entry(d: dict[str, Any]) -> DriftEntry:
    """A stored entry; one stored before drift had classes is unexplained, as its agent's report would be now."""
    return DriftEntry(d["path"], d["kind"], d.get("expected"), d.get("actual"), d.get("class", UNEXPLAINED))
