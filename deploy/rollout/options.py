"""The rollout's options, each declared once: the frozen dataclass the code uses, the CLI flags that fill it
(`add_flags(parser)` + `options_from_args(args)`; deploy/rollout/cli.py makes them the verb), and the wave sizes."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from deploy.rollout.errors import RolloutError


@dataclass(frozen=True)
class Size:
    """A batch size as Ansible's `serial` spells it: a count ("2") or a share of the agents in scope ("25%")."""
    count: Optional[int] = None
    percent: Optional[float] = None

    def resolve(self, scope: int) -> int:
        """A share rounds down but is never below one agent (Ansible's rule)."""
        if self.count is not None:
            return self.count
        return max(1, int(scope * self.percent / 100.0))

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"

    @staticmethod
    def parse(text: str, what: str) -> "Size":
        text = text.strip()
        try:
            if text.endswith("%"):
                pct = float(text[:-1])
                if not 0 < pct <= 100:
                    raise ValueError
                return Size(percent=pct)
            count = int(text)
            if count < 1:
                raise ValueError
            return Size(count=count)
        except ValueError:
            raise RolloutError(f"{what}: {text!r} is not a positive count or a share like 25%") from None


DEFAULT_WAVES = (Size(percent=25),)


def default_journal_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "agentfleet" / "rollout"


@dataclass(frozen=True)
class RolloutOptions:
    canary: int = 1                              # agents in the first wave, chosen among non-orchestrators
    canary_orchestrator: bool = False            # allow the orchestrator (role "...Orchestration") as a canary
    waves: tuple[Size, ...] = DEFAULT_WAVES      # sizes of the waves after the canary; the last repeats
    max_unavailable: Optional[Size] = None       # cap on agents being replaced at once (every wave's size)
    min_healthy_s: float = 60.0                  # a replaced agent stays healthy this long before its wave passes
    wave_deadline_s: float = 1800.0              # from a wave's start to every agent past min_healthy
    stale_after_s: float = 90.0                  # an agent without a report this long counts as silent
    agents: tuple[str, ...] = ()                 # scope: only these agents (default: every agent)
    hosts: tuple[str, ...] = ()                  # scope: only agents of these hosts
    revert_wave: bool = False                    # on a failed wave, put its passed agents back too
    dry_run: bool = False
    restart: bool = False                        # forget a halted or unfinished rollout's journal and plan anew
    journal_dir: Path = field(default_factory=default_journal_dir)
    poll_s: float = 1.0                          # how often the gates look at the collector

    def to_json(self) -> dict:
        return {"canary": self.canary, "canary_orchestrator": self.canary_orchestrator,
                "waves": [str(w) for w in self.waves],
                "max_unavailable": str(self.max_unavailable) if self.max_unavailable else None,
                "min_healthy_s": self.min_healthy_s, "wave_deadline_s": self.wave_deadline_s,
                "stale_after_s": self.stale_after_s, "agents": list(self.agents), "hosts": list(self.hosts),
                "revert_wave": self.revert_wave}


def add_flags(p: argparse.ArgumentParser) -> None:
    """The option flags of `fleet rollout` (cli.add_arguments adds them with VERSION and --json)."""
    d = RolloutOptions()
    p.add_argument("--canary", type=int, default=d.canary, metavar="N",
                   help=f"agents in the first wave, never the orchestrator unless --canary-orchestrator "
                        f"(default {d.canary}; 0: no canary)")
    p.add_argument("--canary-orchestrator", action="store_true", help="allow the orchestrator agent as a canary")
    p.add_argument("--waves", default=None, metavar="SIZES",
                   help="sizes of the waves after the canary, Ansible serial style: 1,25%%,100%% "
                        "(the last repeats; default 25%%)")
    p.add_argument("--max-unavailable", default=None, metavar="N|P%",
                   help="at most this many agents replaced at once (caps every wave)")
    p.add_argument("--min-healthy", type=float, default=d.min_healthy_s, metavar="S",
                   help=f"seconds a replaced agent must report healthy on the new version before its wave passes "
                        f"(default {d.min_healthy_s:g})")
    p.add_argument("--wave-deadline", type=float, default=d.wave_deadline_s, metavar="S",
                   help=f"seconds from a wave's start until it must have passed, else the rollout halts "
                        f"(default {d.wave_deadline_s:g})")
    p.add_argument("--stale-after", type=float, default=d.stale_after_s, metavar="S",
                   help=f"an agent silent this long counts as degraded (default {d.stale_after_s:g})")
    p.add_argument("--poll", type=float, default=d.poll_s, metavar="S",
                   help=f"seconds between two looks at the collector during a wave (default {d.poll_s:g})")
    p.add_argument("--agents", default="", metavar="A,B", help="limit the rollout to these agents")
    p.add_argument("--hosts", default="", metavar="H,I", help="limit the rollout to the agents of these hosts")
    p.add_argument("--revert-wave", action="store_true",
                   help="when a wave fails, put its agents that passed back on their previous image too")
    p.add_argument("--dry-run", action="store_true", help="print the waves, hosts and agents; touch nothing")
    p.add_argument("--status", action="store_true", help="show the running or last stopped rollout and exit")
    p.add_argument("--restart", action="store_true",
                   help="forget a halted or unfinished rollout of this fleet and plan anew "
                        "(agents already on the version are skipped)")
    p.add_argument("--journal-dir", type=Path, default=None, metavar="DIR",
                   help=f"where the rollout's journal and lock live (default {default_journal_dir()})")


def options_from_args(args: argparse.Namespace) -> RolloutOptions:
    """Validate the parsed flags into RolloutOptions; raises RolloutError naming the bad flag."""
    if args.canary < 0:
        raise RolloutError(f"--canary: {args.canary} is negative")
    for flag in ("min_healthy", "wave_deadline", "stale_after"):
        if getattr(args, flag) < 0:
            raise RolloutError(f"--{flag.replace('_', '-')}: must not be negative")
    if args.poll <= 0:
        raise RolloutError("--poll: must be positive")
    waves = tuple(Size.parse(w, "--waves") for w in args.waves.split(",")) if args.waves else DEFAULT_WAVES
    max_unavailable = Size.parse(args.max_unavailable, "--max-unavailable") if args.max_unavailable else None
    return RolloutOptions(canary=args.canary, canary_orchestrator=args.canary_orchestrator, waves=waves,
                          max_unavailable=max_unavailable, min_healthy_s=args.min_healthy,
                          wave_deadline_s=args.wave_deadline, stale_after_s=args.stale_after,
                          agents=_names(args.agents), hosts=_names(args.hosts), revert_wave=args.revert_wave,
                          dry_run=args.dry_run, restart=args.restart, poll_s=args.poll,
                          journal_dir=args.journal_dir or default_journal_dir())


def _names(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))
