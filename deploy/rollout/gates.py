"""The two health gates of every wave, as Azure scale sets and Nomad keep them.

Before a wave: the fleet in scope must not already be degraded (an agent unhealthy, silent longer than the
staleness bound, or never seen by the collector): we refuse to touch anything more and name them.
After a wave: every agent of it must report healthy on the new version, continuously, for min_healthy seconds
(`HealthyStreaks`); a look that finds it unhealthy, on another version or silent starts its streak over, and so
does a failing report that came and went between two looks (the agent's seq jumped: its history is read)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from deploy.rollout.interfaces import FleetHealth


def degraded(fleet: FleetHealth, agents: Iterable[str], stale_after_s: float) -> list[str]:
    """Why each of `agents` is not fit to proceed, one phrase per agent at fault; empty when all are fine."""
    problems = []
    for name in agents:
        seen = fleet.agents.get(name)
        if seen is None:
            problems.append(f"{name}: never reported to the collector")
            continue
        age = fleet.age(name) or 0.0
        if age > stale_after_s:
            problems.append(f"{name}: silent for {age:.0f}s (bound {stale_after_s:.0f}s)")
        elif not seen.healthy:
            failing = f" (failing: {', '.join(seen.failing)})" if seen.failing else ""
            problems.append(f"{name}: unhealthy on {seen.image_version}{failing}")
    return problems


@dataclass
class HealthyStreaks:
    """Per agent, since when it has been seen healthy on `version` without a break (local monotonic clock)."""
    version: str
    min_healthy_s: float
    stale_after_s: float
    clock: Callable[[], float] = time.monotonic
    failing_between: Optional[Callable[[str, int, int], list[int]]] = None   # HealthSource.failing_between
    since: dict[str, Optional[float]] = field(default_factory=dict)
    seq: dict[str, int] = field(default_factory=dict)   # the last seq seen during a running streak
    why_not: dict[str, str] = field(default_factory=dict)

    def observe(self, fleet: FleetHealth, agents: Iterable[str]) -> set[str]:
        """Update every agent's streak from one look at the fleet; return those past min_healthy."""
        now, passed = self.clock(), set()
        for name in agents:
            seen = fleet.agents.get(name)
            age = fleet.age(name)
            if seen is None:
                self._break(name, "no report yet")
            elif seen.image_version != self.version:
                self._break(name, f"still reports {seen.image_version}")
            elif age is not None and age > self.stale_after_s:
                self._break(name, f"silent for {age:.0f}s")
            elif not seen.healthy:
                failing = f" ({', '.join(seen.failing)})" if seen.failing else ""
                self._break(name, f"unhealthy on {self.version}{failing}")
            else:
                start = self.since.get(name)
                missed = self._missed_failures(name, seen.last_seq) if start is not None else []
                if start is None or missed:
                    self.since[name] = start = now   # a failure between two looks: the streak starts again now
                self.seq[name] = seen.last_seq
                self.why_not[name] = f"healthy for {now - start:.0f}s of {self.min_healthy_s:.0f}s"
                if now - start >= self.min_healthy_s:
                    passed.add(name)
        return passed

    def due_in(self, agents: Iterable[str]) -> Optional[float]:
        """Seconds until the first running streak among `agents` reaches min_healthy (None: none running), so the
        next look can be taken right then instead of up to a poll period late."""
        now = self.clock()
        left = [start + self.min_healthy_s - now for a in agents if (start := self.since.get(a)) is not None]
        return max(0.0, min(left)) if left else None

    def started(self, name: str) -> bool:
        return self.since.get(name) is not None

    def _missed_failures(self, name: str, last_seq: int) -> list[int]:
        before = self.seq.get(name)
        if self.failing_between is None or before is None or last_seq <= before + 1:
            return []
        return self.failing_between(name, before, last_seq)

    def _break(self, name: str, why: str) -> None:
        self.since[name] = None
        self.seq.pop(name, None)
        self.why_not[name] = why
