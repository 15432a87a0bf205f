"""Resize from the inventory: vCPU and RAM (the domain is defined again from the inventory at every start the clone
makes, so an --update's restart or a --replace applies them), the data and Docker disks' sizes (grown on --update and
--replace while the VM is stopped: `qemu-img resize`, then resize2fs in the appliance), and the root disk's size
(`root_gb`, applied to the new overlay of a clone or replace: the root partition and its file system are grown in the
appliance).

Disks only grow: a smaller size would cut the file system, so it is refused with one line before any VM stops."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from deploy import disks
from deploy.errors import CloneError
from deploy.inventory import Agent
from deploy.state import AgentState

GIB = 1 << 30


@dataclass(frozen=True)
class DiskGrowth:
    """One disk to grow, file system included: `role` is data, docker or root."""
    role: str
    path: Path
    from_bytes: int
    to_bytes: int

    def describe(self) -> str:
        return f"{self.role} disk {self.path.name}: {gb(self.from_bytes)} -> {gb(self.to_bytes)} (file system grown)"


@dataclass(frozen=True)
class Resources:
    """What a domain has (or will have): vCPUs and RAM in MiB."""
    vcpu: int
    memory_mib: int


@dataclass(frozen=True)
class ResizePlan:
    """What an update or replace changes in an agent's size, settled (and refused if it shrinks) before a VM stops."""
    agent: str
    disks: tuple[DiskGrowth, ...] = ()
    before: Optional[Resources] = None   # the domain as libvirt has it; None: unknown (not defined, unreachable)
    after: Optional[Resources] = None
    notes: tuple[str, ...] = ()          # a size that waits for the next replace

    @property
    def resources_change(self) -> bool:
        return self.before is not None and self.after is not None and self.before != self.after

    def lines(self) -> list[str]:
        out = [d.describe() for d in self.disks]
        if self.resources_change:
            out.append(f"domain: {self.before.vcpu} -> {self.after.vcpu} vCPU, {gb(self.before.memory_mib << 20)} -> "
                       f"{gb(self.after.memory_mib << 20)} RAM (applied by the restart: a clean shutdown, then start)")
        return out + list(self.notes)


def gb(size_bytes: int) -> str:
    return f"{size_bytes / GIB:g} GB"


def wanted_resources(agent: Agent) -> Resources:
    return Resources(agent.vcpu, int(agent.ram_gb * 1024))


def resources_of(domain_xml: Optional[str]) -> Optional[Resources]:
    """vCPUs and RAM from a libvirt domain XML (as XMLDesc gives it, memory in KiB unless a unit says otherwise)."""
    if not domain_xml:
        return None
    vcpu = re.search(r"<vcpu[^>]*>(\d+)</vcpu>", domain_xml)
    mem = re.search(r"<memory(?: unit='(\w+)')?>(\d+)</memory>", domain_xml)
    if not vcpu or not mem:
        return None
    unit = {"KiB": 1 << 10, "k": 1 << 10, None: 1 << 10, "MiB": 1 << 20, "M": 1 << 20, "GiB": GIB, "G": GIB,
            "b": 1, "bytes": 1}.get(mem[1], 1 << 10)
    return Resources(int(vcpu[1]), int(mem[2]) * unit >> 20)


def disk_growth(agent: Agent, role: str, key: str, path: Path, want_gb: float) -> Optional[DiskGrowth]:
    """The growth of an existing disk to `want_gb`, None when it has that size; a smaller size is refused."""
    have, want = disks.virtual_size(path), disks.gb_bytes(want_gb)
    if want < have:
        raise CloneError(f"{agent.name}: {key} {want_gb:g} is smaller than its {role} disk ({gb(have)}, {path}); "
                         f"disks only grow (shrinking would cut the file system)")
    return DiskGrowth(role, path, have, want) if want > have else None


def persistent_growth(agent: Agent, state: AgentState) -> tuple[DiskGrowth, ...]:
    """The data disk's and the Docker disk's growth for an update or replace (the disks that outlive the root)."""
    out = []
    data = Path(state.data_disk)
    if data.exists():
        out.append(disk_growth(agent, "data", "disk_gb", data, agent.disk_gb))
    if state.docker_disk and Path(state.docker_disk).exists():
        out.append(disk_growth(agent, "docker", "docker_gb", Path(state.docker_disk), agent.docker_gb))
    return tuple(g for g in out if g)


def root_bytes(agent: Agent, image_size: int) -> int:
    """The root overlay's size: `root_gb`, or the image's own when unset; never smaller than the image (its file
    system fills it)."""
    if agent.root_gb is None:
        return image_size
    want = disks.gb_bytes(agent.root_gb)
    if want < image_size:
        raise CloneError(f"{agent.name}: root_gb {agent.root_gb:g} is smaller than the image's root disk "
                         f"({gb(image_size)}); the root can only be the image's size or larger")
    return want


def root_growth(agent: Agent, root: Path, image_size: int) -> Optional[DiskGrowth]:
    """A new overlay bigger than its image: its partition and file system are grown in the appliance."""
    want = root_bytes(agent, image_size)
    return DiskGrowth("root", root, image_size, want) if want > image_size else None


def root_note(agent: Agent, root: Path) -> tuple[str, ...]:
    """An update keeps its overlay: a changed root_gb waits for the next replace (said, never silently ignored)."""
    if agent.root_gb is None or not root.exists():
        return ()
    have = disks.virtual_size(root)
    want = disks.gb_bytes(agent.root_gb)
    if want == have:
        return ()
    return (f"root disk: root_gb {agent.root_gb:g} (now {gb(have)}) applies to the next --replace's new overlay",)


def grow_disks(growth: tuple[DiskGrowth, ...]) -> None:
    """The qcow2 side, with the VM stopped; the file systems follow in the appliance (deploy/inject.py)."""
    for g in growth:
        if g.role != "root":          # a root overlay is created at its size (disks.create_overlay)
            disks.grow(g.path, g.to_bytes)
