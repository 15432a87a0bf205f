"""Drift that one agent has and its siblings do not: the fleet page's "drifts alone".

Agents cloned from the same image version start from the same baseline, and what the team does to all of them
(an apt upgrade, a config rollout) drifts them alike. A path with unexplained drift in one agent and in none of its
siblings is the change worth a look first. An agent alone on its image version has no siblings to compare with and
is never flagged.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from agentd.protocol import UNEXPLAINED

from .records import AgentState


def unexplained_paths(state: AgentState) -> frozenset[str]:
    if not state.drift_count:
        return frozenset()  # most agents: no need to decode their latest report
    return frozenset(d.path for d in state.drift if d.class_ == UNEXPLAINED)


def drifts_alone(agents: Iterable[AgentState]) -> dict[str, tuple[str, ...]]:
    """agent -> its unexplained drift paths that no sibling (same image version) shares; agents without any left out."""
    by_image: dict[str, list[AgentState]] = defaultdict(list)
    for state in agents:
        by_image[state.image_version].append(state)
    alone: dict[str, tuple[str, ...]] = {}
    for siblings in by_image.values():
        if len(siblings) < 2:
            continue
        paths = {s.agent: unexplained_paths(s) for s in siblings}
        for agent, mine in paths.items():
            shared = frozenset().union(*(p for other, p in paths.items() if other != agent))
            lone = sorted(mine - shared)
            if lone:
                alone[agent] = tuple(lone)
    return alone
