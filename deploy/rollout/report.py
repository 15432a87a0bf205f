"""The rollout's result: per agent, which version it runs now and what the rollout did to it, and how the rollout
ended (with its exit code). Built from the journal, so `--status` and the end of a run show the same table."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from deploy.rollout.errors import EXIT_DEGRADED, EXIT_HALTED, EXIT_OK

EXIT_BY_STATE = {"done": EXIT_OK, "dry-run": EXIT_OK, "halted": EXIT_HALTED, "refused": EXIT_DEGRADED}
# what each journal phase means for the version the agent runs now
_RUNS_TARGET = {"skipped", "replaced", "passed"}
_RUNS_PREVIOUS = {"pending", "rolled-back", "reverted"}


@dataclass(frozen=True)
class AgentRow:
    agent: str
    host: str
    wave: Optional[int]
    was: Optional[str]             # the version it ran when the rollout planned it (None: never reported)
    now: Optional[str]             # the version it runs now as far as the rollout knows (None: unknown)
    phase: str                     # skipped pending replacing replaced passed rolled-back reverting reverted error
    message: str = ""


@dataclass(frozen=True)
class RolloutReport:
    state: str                     # done | halted | refused | dry-run | running | interrupted
    version: str
    reason: str
    rows: tuple[AgentRow, ...]
    waves: tuple[dict, ...]
    elapsed_s: float = 0.0

    @property
    def exit_code(self) -> Optional[int]:
        """The rollout's exit code; None while it runs or after it was interrupted (it has not ended)."""
        return EXIT_BY_STATE.get(self.state)

    def to_json(self) -> dict:
        return {"state": self.state, "exit_code": self.exit_code, "version": self.version, "reason": self.reason,
                "elapsed_s": round(self.elapsed_s, 3), "waves": list(self.waves),
                "agents": [asdict(r) for r in self.rows]}

    def render(self) -> str:
        head = f"{'agent':<12} {'host':<8} {'wave':>4}  {'was':<16} {'now':<16} {'phase':<12} message"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r.agent:<12} {r.host:<8} {'-' if r.wave is None else r.wave:>4}  {r.was or '?':<16} "
                         f"{r.now or 'unknown':<16} {r.phase:<12} {r.message}")
        lines.append(f"rollout of {self.version}: {self.state}" + (f": {self.reason}" if self.reason else ""))
        return "\n".join(lines)


def rows_from_journal(data: dict) -> tuple[AgentRow, ...]:
    version = data["version"]
    rows = []
    for name in data["plan"]["scope"]:
        a = data["agents"][name]
        rows.append(AgentRow(agent=name, host=a["host"], wave=a.get("wave"), was=a.get("from_version"),
                             now=now_version(a, version), phase=a["phase"], message=a.get("message", "")))
    return tuple(rows)


def now_version(agent: dict, target: str) -> Optional[str]:
    phase = agent["phase"]
    if phase in _RUNS_TARGET:
        return agent.get("version") or target
    if phase in _RUNS_PREVIOUS:
        return agent.get("version") or agent.get("from_version")
    return agent.get("version")  # replacing (cut off) or error: only what clone.py said, if anything
