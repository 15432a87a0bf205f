"""A fleet rollout's progress as the collector keeps it: `fleet rollout` posts a snapshot of its journal at every
step (deploy/rollout/feed.py), the fleet page shows the newest, and its end goes to Mattermost once.

Authentication reuses the collector secret with a token of its own, HMAC-SHA256(secret, "rollout:" + fleet id)
(`agentd.protocol.rollout_token`): the workstation that runs the rollout reads the secret from the inventory's
secrets source, as the clone does; an agent (holding only HMAC(secret, agent)) cannot forge a rollout.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from agentd.protocol import rollout_token_matches, valid_agent_name

from .inert import inert
from .signed_post import Rejected, bearer_json

if TYPE_CHECKING:                        # the store reads snapshots without the web framework
    from fastapi import Request

MAX_ROLLOUT_BYTES = 1 << 20          # 40 agents' rows are a few KiB; a fleet of thousands still fits
STATES = ("running", "done", "halted", "refused")
FINAL = ("done", "halted", "refused")
WAVE_STATES = ("pending", "running", "passed", "failed")
FLEET_ID_MAX = 100
TEXT_MAX = 500


@dataclass(frozen=True)
class RolloutWave:
    index: int
    canary: bool
    agents: tuple[str, ...]
    state: str


@dataclass(frozen=True)
class RolloutAgent:
    name: str
    host: str
    wave: Optional[int]              # None: skipped (already on the version)
    phase: str                       # the rollout's phase for it: pending, replacing, replaced, passed, ...
    from_version: Optional[str]
    version: Optional[str]           # what it runs now as far as the rollout knows
    replaced_at: Optional[float]
    message: str


@dataclass(frozen=True)
class Rollout:
    fleet: str
    version: str
    state: str
    started_at: float
    updated_at: float
    halt: str
    waves: tuple[RolloutWave, ...]
    agents: tuple[RolloutAgent, ...]
    received_at: float = 0.0

    @property
    def final(self) -> bool:
        return self.state in FINAL

    @property
    def current_wave(self) -> Optional[RolloutWave]:
        """The wave in progress (or the one that failed), None before the first and after the last."""
        return next((w for w in self.waves if w.state in ("running", "failed")), None)

    def to_json(self) -> dict[str, Any]:
        return {"fleet": self.fleet, "version": self.version, "state": self.state, "started_at": self.started_at,
                "updated_at": self.updated_at, "halt": self.halt,
                "waves": [{"index": w.index, "canary": w.canary, "agents": list(w.agents), "state": w.state}
                          for w in self.waves],
                "agents": {a.name: {"host": a.host, "wave": a.wave, "phase": a.phase, "from_version": a.from_version,
                                    "version": a.version, "replaced_at": a.replaced_at, "message": a.message}
                           for a in self.agents}}

    @classmethod
    def from_json(cls, data: Any, received_at: float = 0.0) -> "Rollout":
        """Strict parse; ValueError naming the first bad field."""
        if not isinstance(data, dict):
            raise ValueError("rollout: must be an object")
        fleet = _text(data, "fleet", FLEET_ID_MAX)
        if not fleet or any(c.isspace() for c in fleet):
            raise ValueError("fleet: must be a non-empty word")
        state = _text(data, "state", 20)
        if state not in STATES:
            raise ValueError(f"state: must be one of {', '.join(STATES)}")
        waves = []
        for i, w in enumerate(_list(data, "waves")):
            if not isinstance(w, dict) or w.get("state") not in WAVE_STATES or not isinstance(w.get("index"), int):
                raise ValueError(f"waves[{i}]: needs an integer index and a state of {', '.join(WAVE_STATES)}")
            waves.append(RolloutWave(w["index"], bool(w.get("canary")), _names(w.get("agents"), f"waves[{i}]"),
                                     w["state"]))
        raw_agents = data.get("agents")
        if not isinstance(raw_agents, dict):
            raise ValueError("agents: must map agent names to their rows")
        agents = []
        for name, row in sorted(raw_agents.items()):
            if not valid_agent_name(name) or not isinstance(row, dict):
                raise ValueError(f"agents: {str(name)[:40]!r} is not an agent name with a row")
            wave = row.get("wave")
            if wave is not None and not isinstance(wave, int):
                raise ValueError(f"agents.{name}.wave: must be an integer or null")
            agents.append(RolloutAgent(name, _text(row, "host", 100), wave, _text(row, "phase", 20),
                                       _optional_text(row, "from_version"), _optional_text(row, "version"),
                                       _optional_number(row, "replaced_at"), _text(row, "message", TEXT_MAX)))
        return cls(fleet, _text(data, "version", 100), state, _number(data, "started_at"),
                   _number(data, "updated_at"), _text(data, "halt", TEXT_MAX), tuple(waves), tuple(agents),
                   received_at)


async def parse_rollout(request: "Request", secret: bytes) -> Rollout:
    """Bearer token present, a bounded body, strict JSON (signed_post.py), a valid snapshot, then the token for its
    fleet. Rejected carries the 4xx."""
    token, data = await bearer_json(request, MAX_ROLLOUT_BYTES, "a rollout snapshot")
    try:
        rollout = Rollout.from_json(data, time.time())
    except ValueError as exc:
        raise Rejected(422, str(exc)[:500]) from None
    if not rollout_token_matches(secret, rollout.fleet, token):
        raise Rejected(401, f"token is not the rollout token of fleet {rollout.fleet!r}")
    return rollout


def summary(r: Rollout) -> str:
    """The Mattermost message at a rollout's end: what happened and, when it stopped early, who runs what now."""
    replaced = [a for a in r.agents if a.version == r.version and a.wave is not None]
    minutes = max(0.0, r.updated_at - r.started_at) / 60
    head = {"done": ":white_check_mark:", "halted": ":octagonal_sign:", "refused": ":no_entry:"}.get(r.state, "")
    text = (f"{head} rollout of {inert(r.version, 60)} {r.state}: {len(replaced)} of "
            f"{sum(1 for a in r.agents if a.wave is not None)} agents replaced in {len(r.waves)} wave(s), "
            f"{minutes:.0f} min")
    if r.state != "done":
        others = sorted({a.version or "unknown" for a in r.agents} - {r.version})
        text += f"; {inert(r.halt)}"
        if others:
            text += "; still on " + ", ".join(
                f"{inert(v, 40)}: {', '.join(a.name for a in r.agents if (a.version or 'unknown') == v)}"
                for v in others)
    return text


def _text(data: dict, key: str, limit: int) -> str:
    value = data.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"{key}: must be a string of at most {limit} characters")
    return value


def _optional_text(data: dict, key: str) -> Optional[str]:
    value = data.get(key)
    return None if value is None else _text(data, key, 100)


def _number(data: dict, key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{key}: must be a number")
    return float(value)


def _optional_number(data: dict, key: str) -> Optional[float]:
    return None if data.get(key) is None else _number(data, key)


def _list(data: dict, key: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key}: must be a list")
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(valid_agent_name(n) for n in value):
        raise ValueError(f"{where}.agents: must be a list of agent names")
    return tuple(value)
