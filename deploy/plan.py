"""The capacity view: per host, the agents placed on it and the RAM and disk they use and leave free,
as the seed's tables show them. Pure: computed from the Inventory, printed as text or JSON."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from deploy.inventory import Inventory


@dataclass(frozen=True)
class HostUsage:
    host: str
    agents: tuple[str, ...]
    vcpu: int
    ram_gb: float
    ram_used_gb: float
    disk_gb: float
    disk_used_gb: float

    @property
    def ram_free_gb(self) -> float:
        return self.ram_gb - self.ram_used_gb

    @property
    def disk_free_gb(self) -> float:
        return self.disk_gb - self.disk_used_gb

    def to_json(self) -> dict:
        return {**asdict(self), "agents": list(self.agents), "ram_free_gb": self.ram_free_gb,
                "disk_free_gb": self.disk_free_gb}


def capacity(inv: Inventory) -> list[HostUsage]:
    rows = []
    for host in inv.hosts.values():
        placed = [a for a in inv.agents.values() if a.host == host.name]
        rows.append(HostUsage(host=host.name, agents=tuple(a.name for a in placed), vcpu=sum(a.vcpu for a in placed),
                              ram_gb=host.ram_gb, ram_used_gb=sum(a.ram_gb for a in placed),
                              disk_gb=host.disk_gb, disk_used_gb=sum(a.disk_gb for a in placed)))
    return rows


def render(rows: list[HostUsage]) -> str:
    head = f"{'host':<10} {'agents':<28} {'vCPU':>4} {'RAM used/total':>15} {'RAM free':>9} " \
           f"{'disk used/total':>16} {'disk free':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.host:<10} {', '.join(r.agents) or '-':<28} {r.vcpu:>4} "
                     f"{_gb(r.ram_used_gb) + '/' + _gb(r.ram_gb):>15} {_gb(r.ram_free_gb):>9} "
                     f"{_gb(r.disk_used_gb) + '/' + _gb(r.disk_gb):>16} {_gb(r.disk_free_gb):>10}")
    ram, ram_used = sum(r.ram_gb for r in rows), sum(r.ram_used_gb for r in rows)
    disk, disk_used = sum(r.disk_gb for r in rows), sum(r.disk_used_gb for r in rows)
    lines.append("-" * len(head))
    agents = str(sum(len(r.agents) for r in rows)) + " agents"
    lines.append(f"{'total':<10} {agents:<28} {sum(r.vcpu for r in rows):>4} "
                 f"{_gb(ram_used) + '/' + _gb(ram):>15} {_gb(ram - ram_used):>9} "
                 f"{_gb(disk_used) + '/' + _gb(disk):>16} {_gb(disk - disk_used):>10}")
    lines.append(f"RAM {_pct(ram_used, ram)} used, disk {_pct(disk_used, disk)} used")
    return "\n".join(lines)


def _gb(value: float) -> str:
    return f"{value:g}G"


def _pct(used: float, total: float) -> str:
    return f"{100 * used / total:.0f}%" if total else "-"
