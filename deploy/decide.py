"""The decision per agent, made before anything is written: clone, start, resume, no-op, replace, or refuse."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from deploy import disks, resize
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
    docker_disk: Optional[Path] = None  # Docker's disk: recorded in the state, or to be made (docker_gb > 0)
    resize: Optional[resize.ResizePlan] = None   # what grows (settled before any VM stops; shrinking is refused)

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
    docker = Path(st.docker_disk) if st.docker_disk else \
        disks.docker_disk_path(storage, agent.name) if agent.docker_gb > 0 else None
    work = Work(agent, state_dir, st, Action.CLONE, disks.root_disk_path(storage, agent.name, image.version),
                Path(st.data_disk), docker_disk=docker)
    if run.opts.update:
        return _with_resize(run, _decide_update(work, st), image, connected)
    if st.current is None:
        if running:
            raise CloneError(f"{agent.name}: a domain of that name is running but has no agentfleet state; "
                             f"remove it or use --destroy")
        return _with_resize(run, work, image, connected)
    if st.current.image_version == image.version:
        if st.pending and st.pending.image_version == image.version:
            action = Action.RESUME                    # swapped but never proven healthy
        else:
            action = Action.NOOP if running and defined else Action.START
        return work.evolve(action=action, root_disk=Path(st.current.root_disk))
    if not run.opts.replace:
        raise CloneError(f"{agent.name}: runs image {st.current.image_version}; {image.version} differs "
                         f"(use --replace to upgrade)")
    return _with_resize(run, work.evolve(action=Action.REPLACE, previous=st.current), image, connected)


def _with_resize(run: CloneRun, w: Work, image: Image, connected: bool) -> Work:
    """What grows on this clone, replace or update: the persistent disks (a re-clone finds its kept data disk), the
    root (a new overlay of root_gb), the domain's vCPU and RAM (as libvirt has them now; the dry run asks too)."""
    agent = w.agent
    growth = resize.persistent_growth(agent, w.state)
    notes: tuple[str, ...] = ()
    if w.action.builds_disks:
        root = resize.root_growth(agent, w.root_disk, disks.virtual_size(image.path))
        growth += (root,) if root else ()
    else:
        notes = resize.root_note(agent, w.root_disk)
    if agent.docker_gb > 0 and not (w.docker_disk and w.docker_disk.exists()):
        notes += (f"docker disk: new, {agent.docker_gb:g} GB at /var/lib/docker" if w.action.builds_disks else
                  "docker disk: comes with the next --replace (an update does not rewrite /etc/fstab)",)
    before = None
    if w.state.current is not None and (connected or w.action is Action.UPDATE):   # a dry run asks only for an update
        try:
            before = resize.resources_of(run.hypervisor(agent).xml_of(agent.name))
        except CloneError:
            if connected:
                raise
    return w.evolve(resize=resize.ResizePlan(agent.name, growth, before, resize.wanted_resources(agent), notes))


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
    if work.docker_disk and not work.docker_disk.exists():
        work = work.evolve(docker_disk=None)      # made by the next replace, with the fstab that mounts it
    check_updatable(work.agent, st)
    return work.evolve(action=Action.UPDATE, root_disk=Path(st.current.root_disk))
