"""One clone run's context: the inventory, the image, the secrets, the options and the open hypervisor connections,
passed as one object instead of seven positional arguments."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Optional

from deploy.images import Image
from deploy.inventory import Agent, Inventory
from deploy.secrets import AgentSecrets
from host.progress import Progress


@dataclass(frozen=True)
class Options:
    image: Optional[str] = None
    dry_run: bool = False
    replace: bool = False
    connect: Optional[str] = None
    health_timeout_s: float = 900
    unhealthy_grace_s: float = 120
    stop_timeout_s: float = 120
    keep_snapshots: int = 3
    update: bool = False            # --update: re-inject into the current overlay (same image), restart
    restore_data: bool = False      # --rollback: restore the data snapshot too (by hand the root only goes back)
    restored: bool = False          # --restore: identity and data disk come from a backup (cloned_at is kept)


class Connections:
    """libvirt connections opened on first use, one per URI, closed together at the end of the run. Agents prepared
    and booted side by side share them (a libvirt connection is thread-safe); the lock keeps it one per URI."""

    def __init__(self, override: Optional[str]):
        self.override, self._open = override, {}
        self._lock = threading.Lock()

    def get(self, inv: Inventory, agent: Agent):
        from deploy.hypervisor import Hypervisor

        uri = self.override or inv.host_of(agent).uri
        with self._lock:
            if uri not in self._open:
                self._open[uri] = Hypervisor(uri)
            return self._open[uri]

    def close(self) -> None:
        for hv in self._open.values():
            hv.close()


@dataclass(frozen=True)
class CloneRun:
    inv: Inventory
    opts: Options
    conns: Connections
    domain_type: str                                # "kvm" or "qemu" (TCG)
    progress: Progress
    image: Optional[Image] = None                   # none for rollback and destroy
    secrets: Optional[dict[str, AgentSecrets]] = None
    out: Callable[[str], None] = print              # where --dry-run prints

    def hypervisor(self, agent: Agent):
        return self.conns.get(self.inv, agent)
