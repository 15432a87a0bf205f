"""Back to the previous image: by hand (`clone.py AGENT --rollback`) or after a replace that failed its health gate."""
from __future__ import annotations

from pathlib import Path

from deploy.action import Action
from deploy.boot import define_and_start
from deploy.context import CloneRun, Connections, Options
from deploy.data_snapshots import restore_before
from deploy.errors import CloneError
from deploy.inventory import Agent, Inventory
from deploy.result import Result, result_for
from deploy.state import AgentState, load_state, save_state
from host import accel
from host.progress import Progress

DEADLINE_S = 900  # stop (up to --stop-timeout), restore the snapshot, define and start


def rollback(inv: Inventory, names: list[str], opts: Options, progress: Progress) -> list[Result]:
    run = CloneRun(inv, opts, Connections(opts.connect), accel.domain_type(), progress)
    try:
        results = []
        for agent in [inv.agent(n) for n in dict.fromkeys(names)]:
            st = load_state(inv.state_dir(agent))
            if st is None or st.previous is None:
                raise CloneError(f"{agent.name}: nothing to roll back to (no previous image recorded)")
            with progress.phase(f"rollback: {agent.name} to {st.previous.image_version}",
                                DEADLINE_S + opts.stop_timeout_s):
                st = rollback_state(run, agent, st, force=False)
            results.append(result_for(inv, agent, st, run.domain_type, Action.ROLLBACK,
                                      f"back on {st.current.image_version}"))
        return results
    finally:
        run.conns.close()


def rollback_state(run: CloneRun, agent: Agent, st: AgentState, force: bool) -> AgentState:
    """Stop, restore /home/agent from the snapshot taken before the swap, boot the previous overlay."""
    run.hypervisor(agent).stop(agent.name, 5 if force else run.opts.stop_timeout_s)
    restore_before(Path(st.data_disk), st.current.image_version)
    st = st.evolve(current=st.previous, previous=st.current, pending=None)
    save_state(run.inv.state_dir(agent), st)
    define_and_start(run, agent, st)
    return st
