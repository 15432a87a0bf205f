"""Alerts: stale agents, failing checks, new drift and open sequence gaps, each raised once per incident with a
recovery message when it ends.

An incident is (agent, kind, key). The open ones are kept here, in memory, and in the store, so a restarted
collector neither repeats an alert nor forgets to send its recovery. Evaluating is pure and synchronous: each
event returns the `Changes` it makes; the caller stores them (off the event loop) and only then posts their
messages, or hands them back with `revert` when the store failed, so the next report or sweep tries again.
Every value an agent supplied enters a message through `inert()`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

from agentd.protocol import UNEXPLAINED, Report

from .inert import inert, one_line
from .records import AgentState, Incident

STALE, CHECK, DRIFT, GAP = "stale", "check", "drift", "gap"
DETAIL_CHARS = 300  # an incident's stored detail (shown on the page); alerts cut it shorter


@dataclass(frozen=True)
class Changes:
    opened: tuple[Incident, ...] = ()
    closed: tuple[Incident, ...] = ()
    messages: tuple[str, ...] = ()

    def __add__(self, other: "Changes") -> "Changes":
        return Changes(self.opened + other.opened, self.closed + other.closed, self.messages + other.messages)


@dataclass
class _Pending:
    opened: list[Incident] = field(default_factory=list)
    closed: list[Incident] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def done(self) -> Changes:
        return Changes(tuple(self.opened), tuple(self.closed), tuple(self.messages))


class Alerts:
    """Turns report arrivals and the periodic sweep into incident openings and recoveries."""

    def __init__(self, stale_after_s: float, gap_grace_s: float,
                 drift_classes: Iterable[str] = (UNEXPLAINED,)) -> None:
        self.stale_after_s, self.gap_grace_s = stale_after_s, gap_grace_s
        # drift dpkg or an admin's conffile edit explains does not alert unless asked (--drift-alerts)
        self.drift_classes = frozenset(drift_classes)
        # agent -> (kind, key) -> incident: a report only ever looks at its own agent's incidents
        self.open: dict[str, dict[tuple[str, str], Incident]] = {}

    def load(self, incidents: Iterable[Incident]) -> None:
        """The incidents the store holds open (at start)."""
        for incident in incidents:
            self.open.setdefault(incident.agent, {})[(incident.kind, incident.key)] = incident

    def open_counts(self) -> dict[str, int]:
        counts = {kind: 0 for kind in (STALE, CHECK, DRIFT, GAP)}
        for incidents in self.open.values():
            for kind, _ in incidents:
                counts[kind] += 1
        return counts

    def agent_incidents(self, agent: str) -> list[Incident]:
        return [incident for _, incident in sorted(self.open.get(agent, {}).items())]

    def revert(self, changes: Changes) -> None:
        """The store did not take `changes`: forget them here too (their messages were not sent)."""
        for incident in changes.opened:
            if self.open.get(incident.agent, {}).get((incident.kind, incident.key)) is incident:
                del self.open[incident.agent][(incident.kind, incident.key)]
        for incident in changes.closed:
            self.open.setdefault(incident.agent, {}).setdefault((incident.kind, incident.key), incident)

    # -- events --------------------------------------------------------------------------------------------------
    def on_latest_report(self, report: Report, now: float) -> Changes:
        """The agent's newest report: its failing checks and drift entries are the incidents that should be open."""
        pending = _Pending()
        who = _who(report.agent, report.host)
        self._close(pending, report.agent, STALE, [""], f"{who} is reporting again")
        failing = {c.name: f"{c.name}: {c.detail or c.status}" for c in report.checks if c.status == "fail"}
        opened, closed = self._reconcile(pending, report.agent, CHECK, failing, now)
        for incident in opened:
            pending.messages.append(f":red_circle: {who}: check {inert(incident.key, 60)} failing "
                                    f"({inert(incident.detail)})")
        for incident in closed:
            pending.messages.append(f":large_green_circle: {who}: check {inert(incident.key, 60)} recovered")
        drift = {f"{d.kind} {d.path}": _drift_detail(d.kind, d.path, d.expected, d.actual)
                 + ("" if d.class_ == UNEXPLAINED else f" [{d.class_}]")  # alerting on every class: say which
                 for d in report.drift if d.class_ in self.drift_classes}
        opened, closed = self._reconcile(pending, report.agent, DRIFT, drift, now)
        if opened:  # one message per report, however many files drifted at once
            pending.messages.append(f":warning: {who}: new drift ({len(opened)}): "
                                    + _listing(inert(i.detail) for i in opened))
        if closed:
            pending.messages.append(f":large_green_circle: {who}: drift resolved ({len(closed)}): "
                                    + _listing(inert(i.key) for i in closed))
        return pending.done()

    def on_delivery(self, agent: str, contiguous_seq: int, last_seq: int) -> Changes:
        pending = _Pending()
        self._gap_closed(pending, agent, contiguous_seq, last_seq)
        return pending.done()

    def sweep(self, agents: Iterable[AgentState], now: float) -> Changes:
        """Time-based incidents: no report for too long, a gap open past its grace period."""
        pending = _Pending()
        for state in agents:
            silent_s = now - state.last_seen
            if silent_s > self.stale_after_s:
                if self._open(pending, state.agent, STALE, "", now, f"no report for {silent_s:.0f} s"):
                    pending.messages.append(f":red_circle: {_who(state.agent, state.host)} is stale: no report for "
                                            f"{silent_s:.0f} s (last seq {state.last_seq})")
            if state.gap_since is not None and now - state.gap_since >= self.gap_grace_s:
                missing = f"seq {state.contiguous_seq + 1} onwards missing below {state.last_seq}"
                if self._open(pending, state.agent, GAP, "", now, missing):
                    who = _who(state.agent, state.host)
                    pending.messages.append(f":red_circle: {who}: reports lost? {missing} for "
                                            f"{now - state.gap_since:.0f} s")
            elif state.gap_since is None:
                self._gap_closed(pending, state.agent, state.contiguous_seq, state.last_seq)
        return pending.done()

    # -- incident bookkeeping ------------------------------------------------------------------------------------
    def _gap_closed(self, pending: _Pending, agent: str, contiguous_seq: int, last_seq: int) -> None:
        if contiguous_seq >= last_seq:
            self._close(pending, agent, GAP, [""], f"agent **{agent}**: sequence gap closed, every report up to "
                                                   f"{last_seq} received or acknowledged")

    def _open(self, pending: _Pending, agent: str, kind: str, key: str, now: float,
              detail: str) -> Optional[Incident]:
        incidents = self.open.setdefault(agent, {})
        if (kind, key) in incidents:
            return None
        incident = Incident(agent, kind, key, now, one_line(detail)[:DETAIL_CHARS])
        incidents[(kind, key)] = incident
        pending.opened.append(incident)
        return incident

    def _close(self, pending: _Pending, agent: str, kind: str, keys: Iterable[str],
               message: Optional[str] = None) -> list[Incident]:
        closed = []
        for key in keys:
            incident = self.open.get(agent, {}).pop((kind, key), None)
            if incident is not None:
                closed.append(incident)
                pending.closed.append(incident)
                if message:
                    pending.messages.append(f":large_green_circle: {message}")
        return closed

    def _reconcile(self, pending: _Pending, agent: str, kind: str, wanted: dict[str, str],
                   now: float) -> tuple[list[Incident], list[Incident]]:
        """Open the wanted incidents of this kind not yet open, close the open ones no longer wanted."""
        unwanted = [key for (k, key) in self.open.get(agent, {}) if k == kind and key not in wanted]
        closed = self._close(pending, agent, kind, unwanted)
        opened = [self._open(pending, agent, kind, key, now, detail) for key, detail in wanted.items()]
        return [i for i in opened if i is not None], closed


def _who(agent: str, host: str) -> str:
    """The agent's name is safe as it is (protocol.AGENT_NAME); its host is whatever the agent says."""
    return f"agent **{agent}**" + (f" on {inert(host, 64)}" if host else "")


def _listing(items: Iterable[str], limit: int = 20) -> str:
    items = list(items)
    return "; ".join(items[:limit]) + (f"; ... ({len(items) - limit} more)" if len(items) > limit else "")


def _drift_detail(kind: str, path: str, expected: Optional[str], actual: Optional[str]) -> str:
    if kind in ("mode", "owner", "package") and (expected or actual):
        return f"{kind} {path} ({expected} -> {actual})"
    return f"{kind} {path}"
