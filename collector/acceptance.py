"""Accepting drift: an operator says an agent's drift is intended, the agent makes it part of its baseline.

The flow (docs/contracts.md, "Accepting drift"): `python -m collector accept-drift AGENT --by NAME [--path P ...]`
or the form on the agent page records, per entry of the agent's latest drift, who accepted which value when and
why (the `drift_acceptances` table: kept for good, it is the record). The running collector holds the acceptances
in memory (`AcceptanceBook`, reloaded by every sweep, so the CLI's are picked up within seconds) and answers every
report still showing an accepted entry with it, under `accepted`; agentd adopts it into its local baseline and its
next report no longer has it, which also closes the entry's drift alert. An acceptance is of one value: a file
changed again after it was accepted is drift again. It binds to the agent's image version: after a replace the new
image's baseline holds.

The page authenticates an operator with the token in `--operator-token-file` (0600), typed into the form and sent in
the POST body: nothing ambient (no cookie, no session) a cross-site form could ride on, so there is nothing to forge.
"""
from __future__ import annotations

import hmac
import unicodedata
import urllib.parse
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from agentd.protocol import AcceptedDrift, DriftEntry

from .config import CollectorError
from .records import AgentState, DriftAcceptance

MAX_FORM_BYTES = 256 * 1024  # a form naming every entry of a report's 500 drift entries
MAX_NAME_CHARS = 64
MAX_REASON_CHARS = 300
PENDING, ADOPTED, OTHER_IMAGE = "pending", "adopted", "other image"


def operator_name(by: str) -> str:
    """Who accepts, as it is recorded: one printable line."""
    by = by.strip()
    if not by or len(by) > MAX_NAME_CHARS or not all(ch.isprintable() for ch in by):
        raise CollectorError(f"operator name {by[:MAX_NAME_CHARS]!r}: must be 1 to {MAX_NAME_CHARS} printable "
                             f"characters")
    return unicodedata.normalize("NFC", by)


def reason_text(reason: str) -> str:
    reason = " ".join(reason.split())
    if len(reason) > MAX_REASON_CHARS:
        raise CollectorError(f"reason: at most {MAX_REASON_CHARS} characters")
    return reason


def choose(state: AgentState, paths: Sequence[str]) -> list[DriftEntry]:
    """The agent's current drift entries at `paths` (all of them when none is given); a path without drift is an
    error naming it (a typo must not accept nothing quietly)."""
    if not state.drift:
        raise CollectorError(f"agent {state.agent!r}: its latest report (seq {state.last_seq}) shows no drift")
    if not paths:
        return list(state.drift)
    drifting = {d.path for d in state.drift}
    unknown = [p for p in paths if p not in drifting]
    if unknown:
        raise CollectorError(f"agent {state.agent!r}: no drift at {unknown[0]!r} in its latest report "
                             f"(seq {state.last_seq})")
    wanted = set(paths)
    return [d for d in state.drift if d.path in wanted]


def acceptances(state: AgentState, entries: Iterable[DriftEntry], by: str, reason: str,
                now: float) -> list[DriftAcceptance]:
    return [DriftAcceptance(state.agent, state.image_version, d.path, d.kind, d.expected, d.actual, now, by, reason)
            for d in entries]


def status(acceptance: DriftAcceptance, state: Optional[AgentState]) -> str:
    """pending: the agent's latest report still shows the accepted entry; adopted: it does not any more."""
    if state is None or state.image_version != acceptance.image_version:
        return OTHER_IMAGE
    wire = acceptance.wire()
    return PENDING if any(wire.matches(d) for d in state.drift) else ADOPTED


class AcceptanceBook:
    """The acceptances in memory, by agent: every report's answer looks here, so it never waits for the database."""

    def __init__(self) -> None:
        self._by_agent: dict[str, list[DriftAcceptance]] = {}

    def load(self, all_acceptances: Iterable[DriftAcceptance]) -> None:
        by_agent: dict[str, list[DriftAcceptance]] = {}
        for a in all_acceptances:
            by_agent.setdefault(a.agent, []).append(a)
        self._by_agent = by_agent

    def add(self, new: Iterable[DriftAcceptance]) -> None:
        for a in new:
            self._by_agent.setdefault(a.agent, []).append(a)

    def pending(self, agent: str, image_version: str, drift: Iterable[DriftEntry]) -> list[AcceptedDrift]:
        """What to send back with the answer to a report: accepted entries the report still shows."""
        mine = self._by_agent.get(agent)
        if not mine:
            return []
        current = {(d.path, d.kind, d.actual) for d in drift}
        found: dict[tuple, AcceptedDrift] = {}
        for a in mine:  # oldest first: the latest acceptance of an entry is the one sent
            key = (a.path, a.kind, a.actual)
            if a.image_version == image_version and key in current:
                found[key] = a.wire()
        return list(found.values())


@dataclass(frozen=True)
class AcceptForm:
    """The agent page's form, as posted (application/x-www-form-urlencoded)."""
    by: str
    token: str
    reason: str
    entries: tuple[tuple[str, str, str], ...]  # (kind, path, actual as shown: "" for none)


def entry_value(d: DriftEntry) -> str:
    """A checkbox's value: the entry as the operator saw it (kind, actual, path), so a later value is not accepted."""
    return urllib.parse.urlencode({"kind": d.kind, "actual": d.actual or "", "path": d.path})


def parse_form(body: bytes) -> AcceptForm:
    try:
        fields = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                                       max_num_fields=1100)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CollectorError(f"the form could not be read: {str(exc)[:100]}") from None
    entries = []
    for value in fields.get("entry", []):
        item = urllib.parse.parse_qs(value, keep_blank_values=True)
        if not all(len(item.get(k, [])) == 1 for k in ("kind", "actual", "path")):
            raise CollectorError("the form names a drift entry it did not show")
        entries.append((item["kind"][0], item["path"][0], item["actual"][0]))

    def one(name: str) -> str:
        return (fields.get(name) or [""])[0]
    return AcceptForm(one("by"), one("token"), one("reason"), tuple(entries))


def chosen_by_form(state: AgentState, form: AcceptForm) -> list[DriftEntry]:
    """The entries the form names, each still as it was shown; else an error saying which changed."""
    if not form.entries:
        raise CollectorError("no drift entry was ticked")
    current = {(d.kind, d.path, d.actual or ""): d for d in state.drift}
    chosen = []
    for kind, path, actual in form.entries:
        entry = current.get((kind, path, actual))
        if entry is None:
            raise CollectorError(f"{kind} {path}: no longer as shown (the agent reported since); reload the page")
        chosen.append(entry)
    return chosen


def operator_token_matches(expected: Optional[bytes], presented: str) -> bool:
    if expected is None or not presented.isascii():
        return False
    return hmac.compare_digest(expected, presented.strip().encode())
