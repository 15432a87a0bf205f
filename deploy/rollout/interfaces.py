"""The rollout's side effects as narrow typed interfaces, so the policy here never knows about SSH.

The fleet tool implements them (one `clone.py --replace --json` per host over SSH, the image push, the collector);
tests implement them with fakes that change simulated hosts and post real signed reports to a real collector."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping, Optional, Protocol


class Outcome(str, enum.Enum):
    REPLACED = "replaced"          # clone.py proved the new image healthy (or the agent already ran it)
    ROLLED_BACK = "rolled-back"    # the agent runs its previous image again (clone.py rolled back, or --rollback)
    ERROR = "error"                # anything else: which image the agent runs is not known


@dataclass(frozen=True)
class ReplaceOutcome:
    agent: str
    outcome: Outcome
    version: Optional[str]         # the image the agent runs after the call, when known
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.REPLACED


@dataclass(frozen=True)
class AgentHealth:
    """One agent as the collector last saw it (GET /api/v1/agents)."""
    agent: str
    image_version: str
    healthy: bool
    last_seen: float               # collector's clock, unix seconds
    last_seq: int
    failing: tuple[str, ...] = ()  # names of checks with status fail in the latest report


@dataclass(frozen=True)
class FleetHealth:
    """The collector's view of every agent at one moment; `now` is the collector's clock, so staleness does not
    depend on the workstation's clock agreeing with the collector's."""
    now: float
    agents: Mapping[str, AgentHealth]

    def age(self, agent: str) -> Optional[float]:
        seen = self.agents.get(agent)
        return None if seen is None else max(0.0, self.now - seen.last_seen)


class ReplaceOnHost(Protocol):
    """Replace these agents of one host with `version` in one call (one `clone.py --replace`, one appliance launch);
    blocks until clone.py is done. Returns an outcome for every agent asked (see clone_result.outcomes_from_clone)."""

    def __call__(self, host: str, agents: list[str], version: str) -> dict[str, ReplaceOutcome]: ...


class RollbackOnHost(Protocol):
    """Put these agents of one host back on their previous image (`clone.py --rollback`); --revert-wave uses it."""

    def __call__(self, host: str, agents: list[str]) -> dict[str, ReplaceOutcome]: ...


class Push(Protocol):
    """Make sure `version` is published on every host that runs an agent of the rollout (called before wave 1)."""

    def __call__(self, version: str) -> None: ...


class ProgressFeed(Protocol):
    """Where the journal's snapshots go besides the workstation's disk (the collector's fleet page, feed.py):
    `update` at every step, never raising and never blocking the rollout; `close` at the end (flushes)."""

    def update(self, journal_data: dict) -> None: ...

    def close(self) -> None: ...


class HealthSource(Protocol):
    """The collector's view of the fleet. Raises RolloutError when it cannot be read."""

    def snapshot(self) -> FleetHealth: ...

    def failing_between(self, agent: str, after_seq: int, upto_seq: int) -> list[int]:
        """The seqs in (after_seq, upto_seq] whose report had a failing check: what happened between two looks."""
        ...
