"""Define and start an agent's domain from what its state records (the current overlay, UUID, MAC)."""
from __future__ import annotations

from pathlib import Path

from deploy.console import console_log
from deploy.context import CloneRun
from deploy.domain import domain_xml, spec_for
from deploy.inventory import Agent
from deploy.state import AgentState


def define_and_start(run: CloneRun, agent: Agent, state: AgentState) -> None:
    spec = spec_for(run.inv, agent, uuid=state.uuid, mac=state.mac, root_disk=Path(state.current.root_disk),
                    data_disk=Path(state.data_disk), console_log=console_log(run.inv.state_dir(agent)),
                    domain_type=run.domain_type, image_version=state.current.image_version,
                    docker_disk=Path(state.docker_disk) if state.docker_disk else None)
    run.hypervisor(agent).define_and_start(domain_xml(spec), agent.name)
