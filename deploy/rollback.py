"""Back to the previous image: by hand (`clone.py AGENT --rollback [--restore-data]`) or after a replace that failed
its health gate.

By hand, only the root goes back by default: the data disk (/home/agent, the agent's work) stays as it is. A manual
rollback may come days after the upgrade, and restoring the snapshot taken before it would silently discard
everything the agent wrote since. `--restore-data` is the explicit choice to restore it too; the snapshot's age is
printed before anything is changed (and `--dry-run` prints it without changing anything).

The automatic rollback of a failed replace restores the data (recipe.py): it comes minutes after the swap, before
the new image was ever healthy, so there is little work to lose, and the new image may have changed /home/agent in
ways the old one cannot read."""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from deploy.action import Action
from deploy.boot import define_and_start
from deploy.context import CloneRun, Connections, Options
from deploy.data_snapshots import DataSnapshot, restore_before, snapshot_before, snapshot_name
from deploy.errors import CloneError
from deploy.inventory import Agent, Inventory
from deploy.result import Result, result_for
from deploy.state import AgentState, load_state, save_state
from host import accel
from host.progress import Progress

log = logging.getLogger(__name__)
DEADLINE_S = 900  # stop (up to --stop-timeout), restore the snapshot, define and start


@dataclass(frozen=True)
class RollbackPlan:
    """What a manual rollback of one agent will do, settled (and refused if it cannot be done) before any VM stops."""
    agent: Agent
    state: AgentState
    restore_data: bool
    snapshot: Optional[DataSnapshot]   # taken before the current image was swapped in; None when none is left

    def describe(self) -> str:
        to, snap = self.state.previous.image_version, self.snapshot
        if self.restore_data:
            return (f"roll back to {to}, root and data: /home/agent back to snapshot {snap.name} ({snap.age()}); "
                    f"what the agent wrote since is discarded")
        kept = f"; snapshot {snap.name} ({snap.age()}) not restored (--restore-data)" if snap else ""
        return f"roll back to {to}, root only: the data disk is kept as it is{kept}"


def plan_rollback(inv: Inventory, agent: Agent, restore_data: bool) -> RollbackPlan:
    st = load_state(inv.state_dir(agent))
    if st is None or st.current is None or st.previous is None:
        raise CloneError(f"{agent.name}: nothing to roll back to (no previous image recorded)")
    snap = snapshot_before(Path(st.data_disk), st.current.image_version)
    if restore_data and snap is None:
        raise CloneError(f"{agent.name}: --restore-data: the data disk has no snapshot "
                         f"{snapshot_name(st.current.image_version)} (taken before {st.current.image_version} was "
                         f"swapped in); nothing was changed")
    return RollbackPlan(agent, st, restore_data, snap)


def rollback(inv: Inventory, names: list[str], opts: Options, progress: Progress,
             out: Callable[[str], None] = print) -> list[Result]:
    """Every agent's plan is made (and any refusal raised) before the first VM is stopped."""
    plans = [plan_rollback(inv, inv.agent(n), opts.restore_data) for n in dict.fromkeys(names)]
    if opts.dry_run:
        return [_show(inv, plan, out) for plan in plans]
    run = CloneRun(inv, opts, Connections(opts.connect), accel.domain_type(), progress)
    try:
        results = []
        for plan in plans:
            agent, st = plan.agent, plan.state
            if plan.restore_data:  # said before anything changes, on stderr even with --json
                log.warning("%s: restoring /home/agent to snapshot %s (%s); what the agent wrote since is discarded",
                            agent.name, plan.snapshot.name, plan.snapshot.age())
            with progress.phase(f"rollback: {agent.name} to {st.previous.image_version}",
                                DEADLINE_S + opts.stop_timeout_s):
                st = rollback_state(run, agent, st, force=False, restore_data=plan.restore_data)
            data = f"/home/agent restored to {plan.snapshot.name}" if plan.restore_data else "data disk kept as it is"
            results.append(result_for(inv, agent, st, run.domain_type, Action.ROLLBACK,
                                      f"back on {st.current.image_version} ({data})"))
        return results
    finally:
        run.conns.close()


def _show(inv: Inventory, plan: RollbackPlan, out: Callable[[str], None]) -> Result:
    """--rollback --dry-run: what would happen, from the state file and the data disk alone; nothing is changed."""
    st = plan.state
    out(f"== {plan.agent.name}: would {plan.describe()}")
    out(f"stop the domain (ACPI, forced after --stop-timeout), boot {st.previous.root_disk}")
    after = st.evolve(current=st.previous, previous=st.current, pending=None)
    planned = result_for(inv, plan.agent, after, "", Action.ROLLBACK, f"dry run: would {plan.describe()}")
    return replace(planned, dry_run=True)


def rollback_state(run: CloneRun, agent: Agent, st: AgentState, *, force: bool, restore_data: bool) -> AgentState:
    """Stop, restore /home/agent from the snapshot taken before the swap if asked, boot the previous overlay."""
    run.hypervisor(agent).stop(agent.name, 5 if force else run.opts.stop_timeout_s)
    if restore_data:
        restore_before(Path(st.data_disk), st.current.image_version)
    st = st.evolve(current=st.previous, previous=st.current, pending=None)
    save_state(run.inv.state_dir(agent), st)
    define_and_start(run, agent, st)
    return st
