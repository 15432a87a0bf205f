"""`fleet status`: every agent with its host, domain state and image version on disk (asked of each hypervisor over
SSH), the collector's latest health and image version for it (its read API, `/api/v1/agents`), the drift count,
and what differs from the inventory: missing, extra, or on the wrong host."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

from deploy.fleet.errors import FleetError
from deploy.fleet.ssh import Ssh, check_remote, each_host, remote_python
from deploy.inventory import Host, Inventory


@dataclass(frozen=True)
class AgentRow:
    agent: str
    host: str                  # where the inventory places it ("" for an agent the inventory lacks)
    domain: str                # running, shut off, absent, ... or "?" when its host did not answer
    image_on_disk: str
    health: str                # healthy | unhealthy | never reported | ? (collector unreachable)
    reported_version: str
    drift: Optional[int]
    last_seen_s: Optional[float]
    problem: str               # "" | missing | extra on HOST | wrong host: on HOST | host unreachable

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Status:
    rows: tuple[AgentRow, ...]
    host_errors: tuple[str, ...]
    collector_error: str

    @property
    def drift_total(self) -> int:
        return sum(r.drift or 0 for r in self.rows)

    @property
    def converged(self) -> bool:
        return not self.host_errors and not self.collector_error and all(
            not r.problem and r.domain == "running" and r.health == "healthy" for r in self.rows)

    def to_json(self) -> dict:
        return {"agents": [r.to_json() for r in self.rows], "host_errors": list(self.host_errors),
                "collector_error": self.collector_error, "drift_total": self.drift_total,
                "converged": self.converged}


def host_agents(ssh: Ssh, host: Host, names: Sequence[str]) -> dict:
    done = ssh.run(host, remote_python(host, ["-m", "deploy.fleet.hostside", "agents", "--uri", host.uri,
                                              "--state-dir", str(host.state_dir), *names]), timeout=30)
    return json.loads(check_remote(done, host, "agents").stdout)


def collector_agents(url: str, timeout: float = 5) -> dict[str, dict]:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/api/v1/agents", timeout=timeout) as answer:
            return {a["agent"]: a for a in json.load(answer)}
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as e:
        raise FleetError(f"collector {url}: unreachable ({getattr(e, 'reason', e)})") from None


def status(ssh: Ssh, inv: Inventory, hosts: Sequence[Host], collector_url: str) -> Status:
    placed = {h.name: [a.name for a in inv.agents.values() if a.host == h.name] for h in hosts}
    outcomes = each_host(hosts, lambda h: host_agents(ssh, h, placed[h.name]))
    try:
        reported, collector_error = collector_agents(collector_url), ""
    except FleetError as e:
        reported, collector_error = {}, str(e)
    now = time.time()
    held_on: dict[str, list[str]] = {}       # agent -> hosts holding state for it
    for name, o in outcomes.items():
        for agent in (o.value or {}).get("held", {}) if o.ok else ():
            held_on.setdefault(agent, []).append(name)

    def collector(agent: str) -> tuple[str, str, Optional[int], Optional[float]]:
        if collector_error:
            return "?", "", None, None
        r = reported.get(agent)
        if r is None:
            return "never reported", "", None, None
        return ("healthy" if r.get("healthy") else "unhealthy", r.get("image_version", ""), r.get("drift_count"),
                round(now - r["last_seen"], 1) if r.get("last_seen") else None)

    rows = []
    for host in hosts:
        o = outcomes[host.name]
        for agent in placed[host.name]:
            health = collector(agent)
            if not o.ok:
                rows.append(AgentRow(agent, host.name, "?", "?", *health, "host unreachable"))
                continue
            facts = o.value
            held = facts["held"].get(agent)
            domain = facts["domains"].get(agent, "?" if facts["libvirt_error"] else "absent")
            elsewhere = [h for h in held_on.get(agent, []) if h != host.name]
            problem = ""
            if held is None and domain == "absent":
                problem = f"wrong host: on {', '.join(elsewhere)}" if elsewhere else "missing"
            rows.append(AgentRow(agent, host.name, domain, (held or {}).get("image_version", ""), *health, problem))
        if o.ok:
            for agent, held in o.value["held"].items():
                if agent in placed[host.name]:
                    continue
                rows.append(AgentRow(agent, inv.agents[agent].host if agent in inv.agents else "",
                                     o.value["domains"].get(agent, "?"), held.get("image_version", ""),
                                     *collector(agent), f"extra on {host.name}"))
    errors = tuple(o.error for o in outcomes.values() if not o.ok)
    return Status(tuple(rows), errors, collector_error)


def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.0f}h"


def render(st: Status) -> str:
    head = ("AGENT", "HOST", "DOMAIN", "ON DISK", "HEALTH", "REPORTED", "DRIFT", "SEEN", "PROBLEM")
    table = [head] + [(r.agent, r.host or "-", r.domain, r.image_on_disk or "-", r.health, r.reported_version or "-",
                       "-" if r.drift is None else str(r.drift), _age(r.last_seen_s), r.problem)
                      for r in st.rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.append(f"{len(st.rows)} agents, drift {st.drift_total}, "
                 f"{sum(1 for r in st.rows if r.problem)} differing from the inventory")
    return "\n".join(lines + list(st.host_errors) + ([st.collector_error] if st.collector_error else []))
