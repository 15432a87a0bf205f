"""The rollout plan, pure: from the inventory, the versions the agents run now and the options, the waves in order
(canary first), each grouped per host, and the agents skipped because they already run the target.

Rules (docs/rollout.md says why):
- scope: every agent, or those named by --agents and/or on the --hosts (both given: the intersection);
- canary: --canary N agents, never an orchestrator (role mentions "orchestrat") unless --canary-orchestrator,
  spread over distinct hosts first; orchestrators are moved to the end of the remaining order;
- waves: Ansible `serial` sizes, a share resolved against the agents in scope, the last size repeating;
  --max-unavailable caps every wave;
- RAM: the agents of one host in one wave must fit in the RAM the inventory leaves free on the host, as if each new
  VM ran beside its old one; one agent of a host is always allowed (clone.py stops the old VM before it boots the
  new one, so a lone replace never needs more than the agent already holds).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from deploy.inventory import Agent, Inventory
from deploy.rollout.errors import RolloutError
from deploy.rollout.options import RolloutOptions


@dataclass(frozen=True)
class Wave:
    index: int                                   # 0-based; the canary wave, when there is one, is 0
    canary: bool
    hosts: tuple[tuple[str, tuple[str, ...]], ...]   # (host, its agents in this wave), in plan order

    @property
    def agents(self) -> tuple[str, ...]:
        return tuple(a for _, agents in self.hosts for a in agents)

    def host_of(self, agent: str) -> str:
        return next(h for h, agents in self.hosts if agent in agents)

    def to_json(self) -> dict:
        return {"index": self.index, "canary": self.canary, "hosts": {h: list(a) for h, a in self.hosts}}

    @staticmethod
    def from_json(data: dict) -> "Wave":
        return Wave(int(data["index"]), bool(data["canary"]),
                    tuple((h, tuple(a)) for h, a in data["hosts"].items()))


@dataclass(frozen=True)
class Plan:
    version: str
    scope: tuple[str, ...]                       # every agent the rollout covers, inventory order
    skipped: tuple[str, ...]                     # in scope and already on `version`
    waves: tuple[Wave, ...]
    from_versions: Mapping[str, Optional[str]]   # what each agent in scope ran when planned (None: never reported)

    def to_json(self) -> dict:
        return {"version": self.version, "scope": list(self.scope), "skipped": list(self.skipped),
                "waves": [w.to_json() for w in self.waves], "from_versions": dict(self.from_versions)}

    @staticmethod
    def from_json(data: dict) -> "Plan":
        return Plan(data["version"], tuple(data["scope"]), tuple(data["skipped"]),
                    tuple(Wave.from_json(w) for w in data["waves"]), dict(data["from_versions"]))

    def render(self) -> str:
        lines = [f"rollout of {self.version}: {len(self.scope)} agent(s) in scope, "
                 f"{sum(len(w.agents) for w in self.waves)} to replace in {len(self.waves)} wave(s)"]
        for w in self.waves:
            hosts = "; ".join(f"{h}: {', '.join(a)}" for h, a in w.hosts)
            lines.append(f"  wave {w.index}{' (canary)' if w.canary else ''}: {len(w.agents)} agent(s) - {hosts}")
        if self.skipped:
            lines.append(f"  skipped (already on {self.version}): {', '.join(self.skipped)}")
        return "\n".join(lines)


def is_orchestrator(agent: Agent) -> bool:
    return "orchestrat" in agent.role.lower()


def scope_of(inv: Inventory, options: RolloutOptions) -> list[Agent]:
    unknown = [a for a in options.agents if a not in inv.agents]
    if unknown:
        raise RolloutError(f"--agents: unknown agent(s) {', '.join(unknown)} (inventory has: {', '.join(inv.agents)})")
    unknown = [h for h in options.hosts if h not in inv.hosts]
    if unknown:
        raise RolloutError(f"--hosts: unknown host(s) {', '.join(unknown)} (inventory has: {', '.join(inv.hosts)})")
    agents = [a for a in inv.agents.values()
              if (not options.agents or a.name in options.agents) and (not options.hosts or a.host in options.hosts)]
    if not agents:
        raise RolloutError("the scope (--agents/--hosts) holds no agent")
    return agents


def plan(inv: Inventory, version: str, current: Mapping[str, Optional[str]], options: RolloutOptions) -> Plan:
    """The waves for upgrading the scope to `version`; `current` is what each agent runs now (None: unknown)."""
    scope = scope_of(inv, options)
    todo = [a for a in scope if current.get(a.name) != version]
    skipped = tuple(a.name for a in scope if current.get(a.name) == version)
    cap = options.max_unavailable.resolve(len(scope)) if options.max_unavailable else None

    waves: list[Wave] = []
    if options.canary and todo:
        canaries = _pick_canaries(inv, todo, options.canary if cap is None else min(cap, options.canary),
                                  options.canary_orchestrator)
        waves.append(_wave(inv, 0, True, canaries))
        todo = [a for a in todo if a not in canaries]
    todo = [a for a in todo if not is_orchestrator(a)] + [a for a in todo if is_orchestrator(a)]
    sizes = list(options.waves)
    while todo:
        size = sizes.pop(0).resolve(len(scope)) if len(sizes) > 1 else sizes[0].resolve(len(scope))
        if cap is not None:
            size = min(size, cap)
        chosen = _fill(inv, todo, size)
        waves.append(_wave(inv, len(waves), False, chosen))
        todo = [a for a in todo if a not in chosen]
    return Plan(version, tuple(a.name for a in scope), skipped, tuple(waves),
                {a.name: current.get(a.name) for a in scope})


def _pick_canaries(inv: Inventory, todo: list[Agent], n: int, orchestrator_ok: bool) -> list[Agent]:
    eligible = [a for a in todo if orchestrator_ok or not is_orchestrator(a)]
    if not eligible:
        names = ", ".join(a.name for a in todo)
        raise RolloutError(f"no canary candidate: only the orchestrator ({names}) is left to upgrade; "
                           f"pass --canary-orchestrator or --canary 0")
    # distinct hosts first: a canary per host tells more than two canaries on one host
    by_spread = [a for i, a in enumerate(eligible) if a.host not in {b.host for b in eligible[:i]}]
    ordered = by_spread + [a for a in eligible if a not in by_spread]
    return _fill(inv, ordered, n)


def _fill(inv: Inventory, candidates: list[Agent], size: int) -> list[Agent]:
    """Up to `size` candidates in order, skipping one whose host cannot hold it beside those already chosen."""
    chosen: list[Agent] = []
    for agent in candidates:
        if len(chosen) == size:
            break
        same_host = [a for a in chosen if a.host == agent.host]
        if fits_together(inv, agent.host, [*same_host, agent]):
            chosen.append(agent)
    return chosen


def fits_together(inv: Inventory, host: str, agents: list[Agent]) -> bool:
    """Can `host` replace these of its agents at once? One always can; more need room for each new VM beside its
    old one in the RAM the inventory leaves free on the host."""
    if len(agents) <= 1:
        return True
    placed = sum(a.ram_gb for a in inv.agents.values() if a.host == host)
    free = inv.hosts[host].ram_gb - placed
    return free >= sum(a.ram_gb for a in agents)


def _wave(inv: Inventory, index: int, canary: bool, agents: list[Agent]) -> Wave:
    by_host: dict[str, list[str]] = {}
    for a in agents:
        by_host.setdefault(a.host, []).append(a.name)
    return Wave(index, canary, tuple((h, tuple(names)) for h, names in by_host.items()))
