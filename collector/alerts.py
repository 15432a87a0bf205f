"""Alerts: stale agents, failing checks, new drift and open sequence gaps, each raised once per incident with a
recovery message when it ends, posted to a Mattermost incoming webhook.

An incident is (agent, kind, key); open incidents live in the store so a restarted collector neither repeats an
alert nor forgets to send its recovery. Posting happens on a background thread: a slow webhook never slows reports.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.request
from dataclasses import dataclass
from typing import Iterable, Optional

from agentd.protocol import Report

from .store import AgentState, Incident, Store

log = logging.getLogger("collector.alerts")

STALE, CHECK, DRIFT, GAP = "stale", "check", "drift", "gap"


@dataclass
class NotifierStats:
    sent: int = 0
    failed: int = 0


class Notifier:
    """Posts `{"text": ...}` to the webhook from one thread, retrying a few times with backoff, never blocking callers."""

    def __init__(self, webhook_url: Optional[str], timeout_s: float = 5.0, retries: int = 3) -> None:
        self.url, self.timeout_s, self.retries = webhook_url, timeout_s, retries
        self.stats = NotifierStats()
        self._queue: "queue.Queue[Optional[str]]" = queue.Queue(maxsize=10000)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-notifier", daemon=True)
        self._thread.start()

    def send(self, text: str) -> None:
        log.warning("alert: %s", text)
        if self.url:
            try:
                self._queue.put_nowait(text)
            except queue.Full:
                self.stats.failed += 1

    def close(self, timeout_s: float = 5.0) -> None:
        """Try what is still queued once more each (no backoff, within the timeout), then stop."""
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while (text := self._queue.get()) is not None:
            self._post(text)

    def _post(self, text: str) -> None:
        body = json.dumps({"username": "agentfleet", "text": text}).encode()
        for attempt in range(1 if self._stopping.is_set() else self.retries):
            try:
                request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    response.read()
                self.stats.sent += 1
                return
            except OSError as exc:  # URLError, HTTPError and timeouts are all OSErrors
                log.warning("webhook post failed (attempt %d/%d): %s", attempt + 1, self.retries, exc)
                if self._stopping.wait(0.5 * 2 ** attempt):
                    break
        self.stats.failed += 1


class Alerts:
    """Turns report arrivals and the periodic sweep into incident openings and recoveries."""

    def __init__(self, store: Store, notifier: Notifier, stale_after_s: float, gap_grace_s: float) -> None:
        self.store, self.notifier = store, notifier
        self.stale_after_s, self.gap_grace_s = stale_after_s, gap_grace_s
        # agent -> (kind, key) -> incident: a report only ever looks at its own agent's incidents
        self.open: dict[str, dict[tuple[str, str], Incident]] = {}
        for incident in store.incidents():
            self.open.setdefault(incident.agent, {})[(incident.kind, incident.key)] = incident

    def open_counts(self) -> dict[str, int]:
        counts = {kind: 0 for kind in (STALE, CHECK, DRIFT, GAP)}
        for incidents in self.open.values():
            for kind, _ in incidents:
                counts[kind] += 1
        return counts

    def agent_incidents(self, agent: str) -> list[Incident]:
        return [incident for _, incident in sorted(self.open.get(agent, {}).items())]

    # -- events --------------------------------------------------------------------------------------------------
    def on_latest_report(self, report: Report, now: float) -> None:
        """The agent's newest report: its failing checks and drift entries are the incidents that should be open."""
        who = _who(report.agent, report.host)
        self._close(report.agent, STALE, [""], f"{who} is reporting again")
        failing = {c.name: f"{c.name}: {c.detail or c.status}" for c in report.checks if c.status == "fail"}
        opened, closed = self._reconcile(report.agent, CHECK, failing, now)
        for incident in opened:
            self.notifier.send(f":red_circle: {who}: check **{incident.key}** failing ({incident.detail})")
        for incident in closed:
            self.notifier.send(f":large_green_circle: {who}: check **{incident.key}** recovered")
        drift = {f"{d.kind} {d.path}": _drift_detail(d.kind, d.path, d.expected, d.actual) for d in report.drift}
        opened, closed = self._reconcile(report.agent, DRIFT, drift, now)
        if opened:  # one message per report, however many files drifted at once
            self.notifier.send(f":warning: {who}: new drift ({len(opened)}): " + _listing(i.detail for i in opened))
        if closed:
            self.notifier.send(f":large_green_circle: {who}: drift resolved ({len(closed)}): "
                               + _listing(i.key for i in closed))

    def on_delivery(self, agent: str, contiguous_seq: int, last_seq: int) -> None:
        if contiguous_seq >= last_seq:
            self._close(agent, GAP, [""], f"agent **{agent}**: sequence gap closed, every report up to "
                                          f"{last_seq} received")

    def sweep(self, agents: Iterable[AgentState], now: float) -> None:
        """Time-based incidents: no report for too long, a gap open past its grace period."""
        for state in agents:
            who = _who(state.agent, state.host)
            silent_s = now - state.last_seen
            if silent_s > self.stale_after_s:
                if self._open(state.agent, STALE, "", now, f"no report for {silent_s:.0f} s"):
                    self.notifier.send(f":red_circle: {who} is stale: no report for {silent_s:.0f} s "
                                       f"(last seq {state.last_seq})")
            if state.gap_since is not None and now - state.gap_since >= self.gap_grace_s:
                missing = f"seq {state.contiguous_seq + 1} onwards missing below {state.last_seq}"
                if self._open(state.agent, GAP, "", now, missing):
                    self.notifier.send(f":red_circle: {who}: reports lost? {missing} for "
                                       f"{now - state.gap_since:.0f} s")
            elif state.gap_since is None:
                self.on_delivery(state.agent, state.contiguous_seq, state.last_seq)

    # -- incident bookkeeping ------------------------------------------------------------------------------------
    def _open(self, agent: str, kind: str, key: str, now: float, detail: str) -> Optional[Incident]:
        incidents = self.open.setdefault(agent, {})
        if (kind, key) in incidents:
            return None
        incident = Incident(agent, kind, key, now, detail)
        self.store.open_incident(incident)
        incidents[(kind, key)] = incident
        return incident

    def _close(self, agent: str, kind: str, keys: Iterable[str], message: Optional[str] = None) -> list[Incident]:
        closed = []
        for key in keys:
            incident = self.open.get(agent, {}).get((kind, key))
            if incident is not None:
                self.store.close_incident(incident)  # first: if the store fails, the incident stays open here too
                del self.open[agent][(kind, key)]
                closed.append(incident)
                if message:
                    self.notifier.send(f":large_green_circle: {message}")
        return closed

    def _reconcile(self, agent: str, kind: str, wanted: dict[str, str],
                   now: float) -> tuple[list[Incident], list[Incident]]:
        """Open the wanted incidents of this kind not yet open, close the open ones no longer wanted."""
        unwanted = [key for (k, key) in self.open.get(agent, {}) if k == kind and key not in wanted]
        closed = self._close(agent, kind, unwanted)
        opened = [self._open(agent, kind, key, now, detail) for key, detail in wanted.items()]
        return [i for i in opened if i is not None], closed


def _who(agent: str, host: str) -> str:
    return f"agent **{agent}**" + (f" on {host}" if host else "")


def _listing(items: Iterable[str], limit: int = 20) -> str:
    items = list(items)
    return "; ".join(items[:limit]) + (f"; ... ({len(items) - limit} more)" if len(items) > limit else "")


def _drift_detail(kind: str, path: str, expected: Optional[str], actual: Optional[str]) -> str:
    if kind in ("mode", "owner", "package") and (expected or actual):
        return f"{kind} {path} ({expected} -> {actual})"
    return f"{kind} {path}"
