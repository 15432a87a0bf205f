"""Why an agent's sequence gap is open, from what the collector knows: the agent's latest spool state and which
reports it holds. A gap that can never close (a database restored from an older backup, a report the agent dropped)
is acknowledged by an operator: `python -m collector ack-gap AGENT --db URL`."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

from .records import AgentState

IN_SPOOL, DROPPED_BY_AGENT, NOT_IN_THIS_DATABASE = "in_agent_spool", "dropped_by_agent", "not_in_this_database"


@dataclass(frozen=True)
class GapExplanation:
    from_seq: int          # first seq not received
    to_seq: int            # last seq not received (the agent's last_seq is received)
    missing: int           # reports in from_seq..to_seq not stored
    since: float           # unix time the gap opened
    reason: str            # one of the constants above
    explanation: str       # one sentence for a human

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def explain_gap(state: AgentState, stored_above_contiguous: int) -> Optional[GapExplanation]:
    if state.contiguous_seq >= state.last_seq or state.gap_since is None:
        return None
    first, last = state.contiguous_seq + 1, state.last_seq - 1
    missing = max(0, last - first + 1 - max(0, stored_above_contiguous - 1))  # the latest report is stored
    ack = f"if they can never arrive, acknowledge: python -m collector ack-gap {state.agent} --db ..."
    if state.spool.depth > 0:
        return GapExplanation(first, last, missing, state.gap_since, IN_SPOOL,
                              f"the agent still holds {state.spool.depth} unsent report(s), the oldest "
                              f"{state.spool.oldest_age_s:.0f} s old: the gap should close as they arrive")
    if state.spool.dropped > 0:
        return GapExplanation(first, last, missing, state.gap_since, DROPPED_BY_AGENT,
                              f"the agent's spool has dropped {state.spool.dropped} report(s) (full, or refused for "
                              f"good) and holds nothing unsent: the missing ones are likely among them; {ack}")
    return GapExplanation(first, last, missing, state.gap_since, NOT_IN_THIS_DATABASE,
                          "the agent holds nothing unsent and never dropped a report, so it delivered these before: "
                          f"this database does not have them (restored from an older backup?); {ack}")
