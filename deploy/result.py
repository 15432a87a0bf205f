"""What a run did to each agent, as the CLI prints it (text or --json) and the fleet tool merges it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from deploy.action import Action
from deploy.hostkeys import KEY_TYPES, HostKey, known_hosts_lines
from deploy.inventory import Agent, Inventory
from deploy.state import AgentState


@dataclass(frozen=True)
class Result:
    agent: str
    action: Action
    image_version: str = ""
    root_disk: str = ""
    data_disk: str = ""
    domain_type: str = ""
    ssh: dict = field(default_factory=dict)
    known_hosts: tuple[str, ...] = ()
    snapshots: tuple[str, ...] = ()
    message: str = ""
    dry_run: bool = False     # what the run would do; nothing was written
    backup: str = ""          # --backup: the backup dir written; --restore: the one restored from

    def to_json(self) -> dict:
        return {**asdict(self), "action": self.action.value, "known_hosts": list(self.known_hosts),
                "snapshots": list(self.snapshots)}


def existing_host_keys(state_dir: Path) -> list[HostKey]:
    """The agent's host keys already generated on this hypervisor (none before its first clone)."""
    keys_dir = state_dir / "ssh"
    return [HostKey(k, keys_dir / f"ssh_host_{k}_key", keys_dir / f"ssh_host_{k}_key.pub")
            for k in KEY_TYPES if (keys_dir / f"ssh_host_{k}_key.pub").exists()]


def result_for(inv: Inventory, agent: Agent, state: AgentState, domain_type: str, action: Action,
               message: str) -> Result:
    """A result with how to reach the agent: its SSH address and the known_hosts lines of its host keys."""
    ssh = {"host": agent.ip, "port": 22, "user": "agent"}
    names = [agent.name, agent.ip]
    if inv.network.mode == "user":
        ssh = {"host": "127.0.0.1", "port": agent.ssh_port, "user": "agent"}
        names = [f"[127.0.0.1]:{agent.ssh_port}"]
    cur = state.current
    keys = existing_host_keys(inv.state_dir(agent))
    return Result(agent.name, action, image_version=cur.image_version if cur else "",
                  root_disk=cur.root_disk if cur else "", data_disk=state.data_disk, domain_type=domain_type,
                  ssh=ssh, known_hosts=tuple(known_hosts_lines(keys, names)), snapshots=tuple(state.snapshots),
                  message=message)
