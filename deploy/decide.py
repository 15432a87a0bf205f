"""The decision per agent, made before anything is written: clone, start, resume, no-op, replace, or refuse."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from deploy import disks
from deploy.action import Action
from deploy.context import CloneRun
from deploy.errors import CloneError
from deploy.images import Image
from deploy.inventory import Agent
from deploy.state import AgentState, Slot, load_state, new_state


@dataclass(frozen=True)
class Work:
    """One agent's plan for this run; `state` is what the run has recorded so far (each phase returns a new Work)."""
    agent: Agent
    state_dir: Path
    state: AgentState
    action: Action
    root_disk: Path = Path()
    data_disk: Path = Path()
    previous: Optional[Slot] = None     # a replace's way back

    def evolve(self, **changes) -> "Work":
        return replace(self, **changes)


def decide(run: CloneRun, agent: Agent, image: Image, connected: bool = True) -> Work:
    """What this run will do to `agent`; `connected=False` (--dry-run) decides from the state file alone."""
    inv = run.inv
    state_dir = inv.state_dir(agent)
    storage = inv.host_of(agent).storage_dir
    st = load_state(state_dir) or new_state(agent.name, disks.data_disk_path(storage, agent.name))
    hv = run.hypervisor(agent) if connected else None
    running = hv.is_running(agent.name) if hv else False
    defined = bool(hv and hv.domain(agent.name))
    work = Work(agent, state_dir, st, Action.CLONE, disks.root_disk_path(storage, agent.name, image.version),
                Path(st.data_disk))
    if run.opts.update:
        return _decide_update(work, st)
    if st.current is None:
        if running:
            raise CloneError(f"{agent.name}: a domain of that name is running but has no agentfleet state; "
                             f"remove it or use --destroy")
        return work
    if st.current.image_version == image.version:
        if st.pending and st.pending.image_version == image.version:
            action = Action.RESUME                    # swapped but never proven healthy
        else:
            action = Action.NOOP if running and defined else Action.START
        return work.evolve(action=action, root_disk=Path(st.current.root_disk))
    if not run.opts.replace:
        raise CloneError(f"{agent.name}: runs image {st.current.image_version}; {image.version} differs "
                         f"(use --replace to upgrade)")
    return work.evolve(action=Action.REPLACE, previous=st.current)


def check_updatable(agent: Agent, st: Optional[AgentState]) -> None:
    """--update writes into the agent's current overlay: there must be one, and no replace half done."""
    if st is None or st.current is None:
        raise CloneError(f"{agent.name}: no VM to update (clone it first)")
    if st.pending is not None:
        raise CloneError(f"{agent.name}: a replace to {st.pending.image_version} is not finished; run it again or "
                         f"--rollback before --update")
    if not Path(st.current.root_disk).exists():
        raise CloneError(f"{agent.name}: its root overlay {st.current.root_disk} is missing; nothing to update")


def _decide_update(work: Work, st: AgentState) -> Work:
    check_updatable(work.agent, st)
    return work.evolve(action=Action.UPDATE, root_disk=Path(st.current.root_disk))
