"""The capacity view and its guard: per host, the agents placed on it and the RAM and disk they take, against the
host's `ram_gb` and `disk_gb` less its reserve (`reserve: {ram: 10%, disk: 15%}`, fleet-wide or per host).

Disk counts the worst case of what the clone puts in the host's storage dir: each agent's data disk (`disk_gb`), its
root overlay at full size (`root_gb`, default the image's own size: an overlay can grow to it), its Docker disk
(`docker_gb`), and the golden images present. qcow2 files are thin, so real use is lower until they fill; the
reserve is the margin for what is not counted (data-disk snapshots, logs, the host itself).

`capacity()` is pure (the facts measured on disk come in as `DiskFacts`); `check_reserve()` refuses a run that would
clone or grow past a host's reserve, with one line naming the host and the numbers."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional

from deploy import disks
from deploy.errors import CloneError
from deploy.images import find_image
from deploy.inventory import Agent, Host, Inventory
from deploy.state import load_state

GIB = 1 << 30


@dataclass(frozen=True)
class DiskFacts:
    """What the plan cannot read from the inventory: the image's root size (for agents without `root_gb`) and the
    golden images present per host (only measurable on the host itself)."""
    image_root_gb: float = 0
    golden_gb: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class HostUsage:
    host: str
    agents: tuple[str, ...]
    vcpu: int
    ram_gb: float
    ram_used_gb: float
    disk_gb: float
    disk_used_gb: float                 # data + root + Docker disks + golden images
    data_gb: float = 0
    root_gb: float = 0
    docker_gb: float = 0
    golden_gb: float = 0
    ram_reserve_pct: float = 0
    disk_reserve_pct: float = 0

    @property
    def ram_free_gb(self) -> float:
        return self.ram_gb - self.ram_used_gb

    @property
    def disk_free_gb(self) -> float:
        return self.disk_gb - self.disk_used_gb

    @property
    def ram_usable_gb(self) -> float:
        """What agents may take: the host's RAM less its reserve."""
        return self.ram_gb * (1 - self.ram_reserve_pct / 100)

    @property
    def disk_usable_gb(self) -> float:
        return self.disk_gb * (1 - self.disk_reserve_pct / 100)

    @property
    def over_reserve(self) -> tuple[str, ...]:
        """"ram", "disk": what is used past the reserve (the host is overcommitted by the plan's own count)."""
        return tuple(k for k, used, usable in (("ram", self.ram_used_gb, self.ram_usable_gb),
                                                ("disk", self.disk_used_gb, self.disk_usable_gb))
                     if used > usable + 1e-9)

    def to_json(self) -> dict:
        return {**asdict(self), "agents": list(self.agents), "ram_free_gb": self.ram_free_gb,
                "disk_free_gb": self.disk_free_gb, "ram_usable_gb": round(self.ram_usable_gb, 2),
                "disk_usable_gb": round(self.disk_usable_gb, 2), "over_reserve": list(self.over_reserve)}


def agent_root_gb(agent: Agent, facts: DiskFacts) -> float:
    return agent.root_gb if agent.root_gb is not None else facts.image_root_gb


def usage(host: Host, agents: Iterable[Agent], facts: DiskFacts) -> HostUsage:
    placed = [a for a in agents if a.host == host.name]
    data = sum(a.disk_gb for a in placed)
    root = sum(agent_root_gb(a, facts) for a in placed)
    docker = sum(a.docker_gb for a in placed)
    golden = facts.golden_gb.get(host.name, 0)
    return HostUsage(host=host.name, agents=tuple(a.name for a in placed), vcpu=sum(a.vcpu for a in placed),
                     ram_gb=host.ram_gb, ram_used_gb=sum(a.ram_gb for a in placed), disk_gb=host.disk_gb,
                     disk_used_gb=round(data + root + docker + golden, 2), data_gb=data, root_gb=round(root, 2),
                     docker_gb=docker, golden_gb=round(golden, 2), ram_reserve_pct=host.reserve.ram_pct,
                     disk_reserve_pct=host.reserve.disk_pct)


def capacity(inv: Inventory, facts: DiskFacts = DiskFacts()) -> list[HostUsage]:
    return [usage(host, inv.agents.values(), facts) for host in inv.hosts.values()]


def golden_gb(images_dir: Path) -> float:
    """The published golden images in `images_dir` as they take space (allocated blocks, not virtual size)."""
    files = [p for p in images_dir.glob("agent-*.qcow2") if p.is_file()] if images_dir.is_dir() else []
    return sum(p.stat().st_blocks * 512 for p in files) / GIB


def newest_root_gb(images_dir: Path) -> float:
    """The newest published image's root size, the default root of an agent without `root_gb` (0: no image)."""
    try:
        return disks.virtual_size(find_image(images_dir).path) / GIB
    except CloneError:
        return 0


def check_reserve(inv: Inventory, works: list, image) -> None:
    """Refuse a run that clones an agent, or grows one (disks, vCPU, RAM), past its host's reserve: counted are the
    agents this hypervisor runs already (a state with a current image) and the run's own, at the inventory's sizes;
    the golden images in `images_dir` count against every host of the run (they are this machine's)."""
    growing = [w for w in works if w.state.current is None or (w.resize and (w.resize.disks or
                                                                           w.resize.resources_change))]
    if not growing:
        return
    image_root = disks.virtual_size(image.path) / GIB
    golden = golden_gb(inv.images_dir)
    running = {w.agent.name for w in works}
    for host_name in dict.fromkeys(w.agent.host for w in growing):
        host = inv.hosts[host_name]
        counted = [a for a in inv.agents.values() if a.host == host_name and (a.name in running or _deployed(inv, a))]
        row = usage(host, counted, DiskFacts(image_root, {host_name: golden}))
        names = ", ".join(w.agent.name for w in growing if w.agent.host == host_name)
        for kind in row.over_reserve:
            used, total, usable, pct = (row.ram_used_gb, row.ram_gb, row.ram_usable_gb, row.ram_reserve_pct) \
                if kind == "ram" else (row.disk_used_gb, row.disk_gb, row.disk_usable_gb, row.disk_reserve_pct)
            raise CloneError(f"{host_name}: {names} would bring {kind} to {used:g} GB of {total:g} GB, past the "
                             f"{pct:g}% reserve ({usable:.0f} GB usable); see `clone.py --plan`, or lower the "
                             f"host's reserve ({kind}) in the inventory")


def _deployed(inv: Inventory, agent: Agent) -> bool:
    st = load_state(inv.state_dir(agent))
    return st is not None and st.current is not None


def render(rows: list[HostUsage]) -> str:
    head = f"{'host':<10} {'agents':<28} {'vCPU':>4} {'RAM used/total':>15} {'RAM free':>9} " \
           f"{'disk used/total':>16} {'disk free':>10} {'reserve':>9}  over"
    lines = [head, "-" * len(head)]
    for r in rows:
        reserve = f"{r.ram_reserve_pct:g}/{r.disk_reserve_pct:g}%"
        lines.append(f"{r.host:<10} {', '.join(r.agents) or '-':<28} {r.vcpu:>4} "
                     f"{_gb(r.ram_used_gb) + '/' + _gb(r.ram_gb):>15} {_gb(r.ram_free_gb):>9} "
                     f"{_gb(r.disk_used_gb) + '/' + _gb(r.disk_gb):>16} {_gb(r.disk_free_gb):>10} {reserve:>9}  "
                     f"{'+'.join(r.over_reserve) or '-'}")
    ram, ram_used = sum(r.ram_gb for r in rows), sum(r.ram_used_gb for r in rows)
    disk, disk_used = sum(r.disk_gb for r in rows), sum(r.disk_used_gb for r in rows)
    lines.append("-" * len(head))
    agents = str(sum(len(r.agents) for r in rows)) + " agents"
    lines.append(f"{'total':<10} {agents:<28} {sum(r.vcpu for r in rows):>4} "
                 f"{_gb(ram_used) + '/' + _gb(ram):>15} {_gb(ram - ram_used):>9} "
                 f"{_gb(disk_used) + '/' + _gb(disk):>16} {_gb(disk - disk_used):>10}")
    lines.append(f"RAM {_pct(ram_used, ram)} used, disk {_pct(disk_used, disk)} used (disk: data + root at full "
                 f"size + docker + golden images; reserve: RAM/disk kept free)")
    for r in rows:
        if r.over_reserve:
            lines.append(f"{r.host}: past its reserve ({', '.join(r.over_reserve)}): a clone or growth there is "
                         f"refused (usable RAM {r.ram_usable_gb:.0f} GB, disk {r.disk_usable_gb:.0f} GB)")
    return "\n".join(lines)


def _gb(value: float) -> str:
    return f"{round(value, 1):g}G"


def _pct(used: float, total: float) -> str:
    return f"{100 * used / total:.0f}%" if total else "-"


def facts_here(inv: Inventory, this_host: Optional[str]) -> DiskFacts:
    """The facts this machine can measure: the newest image's root size, and its golden images counted against the
    inventory host it is (none when it has no host identity, e.g. a workstation)."""
    golden = {this_host: golden_gb(inv.images_dir)} if this_host in inv.hosts else {}
    return DiskFacts(newest_root_gb(inv.images_dir), golden)
