"""Remove agents' domains and root overlays; the data disk (the agent's work) and Docker's disk stay unless purged."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from deploy import disks
from deploy.action import Action
from deploy.context import Connections, Options
from deploy.errors import CloneError
from deploy.inventory import Agent, Inventory
from deploy.result import Result
from deploy.state import AgentState, load_state, save_state
from host.progress import Progress

DEADLINE_S = 300


def destroy(inv: Inventory, names: list[str], opts: Options, progress: Progress,
            purge_data: bool = False, out: Callable[[str], None] = print) -> list[Result]:
    if opts.dry_run:
        return [_show(inv, inv.agent(n), purge_data, out) for n in dict.fromkeys(names)]
    conns = Connections(opts.connect)
    try:
        results = []
        for agent in [inv.agent(n) for n in dict.fromkeys(names)]:
            with progress.phase(f"destroy: {agent.name}", DEADLINE_S):
                state_dir = inv.state_dir(agent)
                st = load_state(state_dir)
                hv = conns.get(inv, agent)
                _refuse_a_domain_we_did_not_make(hv, agent.name, st)
                hv.undefine(agent.name)
                for path in inv.host_of(agent).storage_dir.glob(f"{agent.name}-root-*.qcow2*"):
                    path.unlink()
                data = Path(st.data_disk) if st else disks.data_disk_path(inv.host_of(agent).storage_dir, agent.name)
                docker = _docker_disk(inv, agent, st)
                if purge_data:
                    for path in (data, docker):
                        path.unlink(missing_ok=True)
                        disks.partial(path).unlink(missing_ok=True)
                    if st:
                        st = st.evolve(snapshots=(), docker_disk="")
                if st:
                    save_state(state_dir, st.evolve(current=None, previous=None, pending=None))
            kept = "data disk purged" if purge_data else f"data disk kept: {data}"
            if docker.exists():
                kept += f"; docker disk kept: {docker}"
            results.append(Result(agent.name, Action.DESTROY, data_disk=str(data),
                                  message=f"domain and root disks removed; {kept}"))
        return results
    finally:
        conns.close()


def _docker_disk(inv: Inventory, agent: Agent, st: Optional[AgentState]) -> Path:
    """The recorded Docker disk, or where one would be (a purge removes a stray one too)."""
    return Path(st.docker_disk) if st and st.docker_disk else \
        disks.docker_disk_path(inv.host_of(agent).storage_dir, agent.name)


def _refuse_a_domain_we_did_not_make(hv, name: str, st: Optional[AgentState]) -> None:
    """A domain of that name whose UUID is not the one recorded here belongs to someone else (another run, another
    tool): never remove it. A domain with no state at all is a stray the clone refuses to adopt; removing it is what
    --destroy is for."""
    dom = hv.domain(name)
    if dom is not None and st is not None and dom.UUIDString() != st.uuid:
        raise CloneError(f"{name}: the domain of that name has UUID {dom.UUIDString()}, not {st.uuid} recorded in "
                         f"this hypervisor's state; not removing a VM agentfleet did not make here")


def _show(inv: Inventory, agent: Agent, purge_data: bool, out: Callable[[str], None]) -> Result:
    """--destroy --dry-run: what would be removed, from the state file and the storage dir; nothing is touched."""
    st = load_state(inv.state_dir(agent))
    data = Path(st.data_disk) if st else disks.data_disk_path(inv.host_of(agent).storage_dir, agent.name)
    roots = sorted(str(p) for p in inv.host_of(agent).storage_dir.glob(f"{agent.name}-root-*.qcow2*"))
    out(f"== {agent.name}: would remove the domain {agent.name} (stopped first if it runs)")
    for root in roots:
        out(f"remove {root}")
    out(f"remove {data} (and its snapshots)" if purge_data else f"keep {data}")
    docker = _docker_disk(inv, agent, st)
    if docker.exists():
        out(f"remove {docker}" if purge_data else f"keep {docker}")
    kept = "data disk purged" if purge_data else f"data disk kept: {data}"
    return Result(agent.name, Action.DESTROY, data_disk=str(data), dry_run=True,
                  message=f"dry run: would remove the domain and {len(roots)} root disk(s); {kept}")
