"""The clone as a recipe of timed phases, for all the agents named in one run:

    decide (per agent) -> prepare disks -> inject (one libguestfs launch) -> swap -> boot -> await health

Prepare and boot run the agents side by side (host/run.concurrently), and host keys and files are made while the
appliance boots: a fleet's disks, keys and domain starts cost about what one agent's do, and the launch is shared,
so eight agents take little more than one (docs/clone.md, "A fleet in one run").

An update (--update) goes through the same phases without a new overlay: prepare stops the VM, inject writes into
its current overlay and data disk, nothing is swapped, boot starts it again.

Each step is recorded in the agent's state before the next, so a killed run converges when run again. A run that
fails before the swap removes what it prepared and starts any VM it stopped, so nothing is left half-injected."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import Callable, Optional

from agentd.protocol import AuditEvent
from deploy import audit, disks, docker_data, dry_run, openclaw_config, plan, resize
from deploy.action import Action
from deploy.boot import define_and_start
from deploy.console import ConsoleWatch, console_log
from deploy.context import CloneRun, Connections, Options
from deploy.data_snapshots import snapshot_before_swap
from deploy.decide import Work, check_updatable, decide
from deploy.errors import RolledBack
from deploy.health import wait_healthy
from deploy.hostkeys import ensure_host_keys
from deploy.images import find_image
from deploy.inject import DATA_LABEL, AgentDisks, ExtraDisk, Injected, Op, inject
from deploy.inventory import Agent, Inventory
from deploy.payload import agent_ops
from deploy.result import Result, result_for
from deploy.rollback import rollback_state
from deploy.secrets import load_secrets
from deploy.state import Slot, load_state, save_state
from host import accel
from host.progress import Progress, deadline_for
from host.run import concurrently

log = logging.getLogger(__name__)

# Generous phase deadlines (seconds; AGENTFLEET_DEADLINE_SCALE scales them): only a hang reaches them. Awaiting
# health has its own deadline (--health-timeout); the phase adds a margin for the rollback that may follow.
DEADLINES_S = {"prepare": 600, "inject": 1800, "swap": 120, "boot": 600}
AWAIT_MARGIN_S = 600


def clone(inv: Inventory, names: list[str], opts: Options, progress: Progress,
          out: Callable[[str], None] = print) -> list[Result]:
    """Clone, start, resume, replace or update the named agents; raises RolledBack (with every result) if a replace
    failed."""
    agents = [inv.agent(n) for n in dict.fromkeys(names)]
    if opts.update:
        return _update(inv, agents, opts, progress, out)
    return _clone(inv, agents, opts, progress, out)


def _update(inv: Inventory, agents: list[Agent], opts: Options, progress: Progress,
            out: Callable[[str], None]) -> list[Result]:
    """Each agent keeps its image: one recipe run per image version among them (usually one), every refusal
    raised before any VM is stopped."""
    by_version: dict[str, list[Agent]] = {}
    for agent in agents:
        st = load_state(inv.state_dir(agent))
        check_updatable(agent, st)
        by_version.setdefault(st.current.image_version, []).append(agent)
    results = {}
    for version, group in by_version.items():
        for r in _clone(inv, group, replace(opts, image=version), progress, out):
            results[r.agent] = r
    return [results[a.name] for a in agents]


def _clone(inv: Inventory, agents: list[Agent], opts: Options, progress: Progress,
           out: Callable[[str], None]) -> list[Result]:
    image = find_image(inv.images_dir, opts.image)
    secrets = load_secrets(inv.secrets, [a.name for a in agents])
    schema = openclaw_config.load_schema(image.schema_path)
    for agent in agents:
        config = openclaw_config.build_config(inv, agent, image.manifest.openclaw_plugins)
        openclaw_config.validate_config(config, schema, agent.name)
    run = CloneRun(inv, opts, Connections(opts.connect), accel.domain_type(), progress, image, secrets, out)
    if opts.dry_run:
        works = [decide(run, agent, image, connected=False) for agent in agents]
        plan.check_reserve(inv, works, image)
        return [dry_run.show(run, w) for w in works]
    try:
        works = [decide(run, agent, image) for agent in agents]
        plan.check_reserve(inv, works, image)
        return _run_recipe(run, works)
    finally:
        run.conns.close()


def _run_recipe(run: CloneRun, works: list[Work]) -> list[Result]:
    results: dict[str, Result] = {}
    for w in works:
        if w.action is Action.NOOP:
            results[w.agent.name] = _result(run, w, "already runs this image")
    building = [w for w in works if w.action.injects]
    injected: dict[str, Injected] = {}
    changes: dict[str, tuple[str, ...]] = {}
    if building:
        swapped, injected, ops = _build_disks(run, building)
        works = [{w.agent.name: w for w in swapped}.get(w.agent.name, w) for w in works]
        for w in building:   # every injection leaves its .env key fingerprints for the next update's audit
            previous, current = audit.record_prints(w.state_dir, ops[w.agent.name])
            changes[w.agent.name] = audit.describe(injected[w.agent.name].changed(), previous, current)
    since = time.time()
    # only what these boots print, and only where a replace waits for health
    consoles = {w.agent.name: ConsoleWatch(console_log(w.state_dir)) for w in works if w.action.awaits_health}
    booting = [w for w in works if w.action.boots]
    if booting:
        with _phase(run, "boot", f"boot: define and start {_names(booting)}"):
            concurrently(lambda w: define_and_start(run, w.agent, w.state), booting)
    for w in works:
        if w.action in (Action.CLONE, Action.START):
            results[w.agent.name] = _result(run, w, "defined and started")
        elif w.action is Action.UPDATE:
            results[w.agent.name] = _result(run, w, _updated(injected[w.agent.name], w))
            _audit_update(run, w, changes[w.agent.name])
    failures = []
    waiting = [w for w in works if w.action.awaits_health]
    if waiting:
        deadline = run.opts.health_timeout_s + AWAIT_MARGIN_S
        with run.progress.phase(f"await health: {_names(waiting)} on {run.image.version}", deadline):
            for w in waiting:
                result, why = _await_replace(run, w, since, consoles[w.agent.name])
                results[w.agent.name] = result
                if why:
                    failures.append(why)
    ordered = [results[w.agent.name] for w in works]
    if failures:
        raise RolledBack("; ".join(failures), results=ordered)
    return ordered


def _build_disks(run: CloneRun, building: list[Work]) -> tuple[list[Work], dict[str, Injected],
                                                                dict[str, tuple[Op, ...]]]:
    """prepare -> inject -> swap; a failure before the swap removes the partial disks and restarts stopped VMs.
    Updates are injected in place and have nothing to swap."""
    done: dict[str, tuple[Work, AgentDisks]] = {}   # filled by the agents' prepares as each ends

    def prepare_one(w: Work) -> None:
        done[w.agent.name] = _prepare(run, w)

    finished: list[AgentDisks] = []     # with their operations, made while the appliance boots

    def with_operations() -> list[AgentDisks]:
        finished[:] = concurrently(lambda pair: _with_ops(run, *pair), prepared)
        return finished

    try:
        with _phase(run, "prepare", f"prepare disks: {_names(building)}"):
            concurrently(prepare_one, building)   # qemu-img, mkfs, a replace's stop: each agent's own
        prepared = [done[w.agent.name] for w in building]
        with _phase(run, "inject", f"inject: {len(prepared)} agent(s) in one libguestfs launch"):
            injected = inject([disk for _, disk in prepared], with_operations)
    except BaseException:
        latest = {name: w for name, (w, _) in done.items()}  # with the states prepare recorded (snapshots, pending)
        _undo_prepare(run, [latest.get(w.agent.name, w) for w in building])
        raise
    works = [w for w, _ in prepared]
    if any(w.action.builds_disks for w in works):
        with _phase(run, "swap", "swap: overlays in place, state recorded"):
            works = [_swap(run, w) if w.action.builds_disks else w for w in works]
    return works, injected, {disk.agent: disk.ops for disk in finished}


def _prepare(run: CloneRun, w: Work) -> tuple[Work, AgentDisks]:
    """A new root overlay and (first time) a data disk, all as .partial files; a replace stops the VM and snapshots
    its data disk first. The files to inject come later (_with_ops), while the appliance boots."""
    image, agent = run.image, w.agent
    if (w.action is Action.CLONE and not run.opts.restored) or not w.state.cloned_at:  # a restore keeps its own
        w = w.evolve(state=w.state.evolve(cloned_at=int(time.time())))
    save_state(w.state_dir, w.state)              # uuid, MAC, machine-id fixed before any disk exists
    growth = w.resize.disks if w.resize else ()
    grown = tuple(g.role for g in growth)
    if w.action is Action.UPDATE:                 # its own disks, written offline: the VM stops for the inject
        run.hypervisor(agent).stop(agent.name, run.opts.stop_timeout_s)
        resize.grow_disks(growth)
        extra = (ExtraDisk(w.docker_disk, docker_data.DOCKER_LABEL),) if "docker" in grown else ()
        return w, AgentDisks(agent.name, w.root_disk, w.data_disk, False, (), updating=True,
                             meta=(("agent", agent.name), ("image_version", image.version)), extra=extra,
                             grow_fs=_fs_to_grow(grown))
    root = next((g for g in growth if g.role == "root"), None)
    disks.create_overlay(image.path, disks.partial(w.root_disk), root.to_bytes if root else 0)
    seed = not w.data_disk.exists()
    if seed:
        disks.create_data_disk(disks.partial(w.data_disk), agent.disk_gb, DATA_LABEL)
    seed_docker = bool(w.docker_disk) and not w.docker_disk.exists()
    if seed_docker:
        disks.create_data_disk(disks.partial(w.docker_disk), agent.docker_gb, docker_data.DOCKER_LABEL)
    if w.action is Action.REPLACE:
        state = w.state.evolve(pending=Slot(image.version, str(w.root_disk)))
        save_state(w.state_dir, state)
        run.hypervisor(agent).stop(agent.name, run.opts.stop_timeout_s)
        state = snapshot_before_swap(state, w.data_disk, image.version, run.opts.keep_snapshots)
        save_state(w.state_dir, state)
        w = w.evolve(state=state)
    resize.grow_disks(growth)     # the kept data and Docker disks; the VM is stopped (or was never started)
    ops: tuple[Op, ...] = ()
    extra: tuple[ExtraDisk, ...] = ()
    fstab: tuple[str, ...] = ()
    if w.docker_disk:             # the new overlay mounts Docker's disk at /var/lib/docker
        ops += docker_data.mount_ops()
        fstab = (docker_data.fstab_line(),)
        if "docker" in grown:     # a new one comes formatted (seed_docker) and is not attached
            extra = (ExtraDisk(w.docker_disk, docker_data.DOCKER_LABEL),)
    disk = AgentDisks(agent.name, disks.partial(w.root_disk), disks.partial(w.data_disk) if seed else w.data_disk,
                      seed, ops, meta=(("agent", agent.name), ("image_version", image.version)), extra=extra,
                      fstab_extra=fstab, grow_fs=_fs_to_grow(grown))
    return w, disk


def _with_ops(run: CloneRun, w: Work, disk: AgentDisks) -> AgentDisks:
    """The agent's files to inject, before what prepare put there (Docker's mount): its host keys (made the first
    time; RSA's prime search takes a second of CPU, which the appliance's boot leaves to spare), identity, config
    and secrets."""
    keys = ensure_host_keys(w.state_dir, w.agent.name)
    return replace(disk, ops=agent_ops(run.inv, w.agent, run.image, w.state, run.secrets[w.agent.name], keys)
                   + disk.ops)


def _fs_to_grow(roles: tuple[str, ...]) -> tuple[str, ...]:
    """The appliance names an extra disk's file system by its label."""
    return tuple(docker_data.DOCKER_LABEL if role == "docker" else role for role in roles)


def _undo_prepare(run: CloneRun, works: list[Work]) -> None:
    """Best effort after a failed prepare or inject: no partial disk stays, a stopped VM runs its old image again."""
    for w in works:
        disks.partial(w.root_disk).unlink(missing_ok=True)
        disks.partial(w.data_disk).unlink(missing_ok=True)
        if w.docker_disk:
            disks.partial(w.docker_disk).unlink(missing_ok=True)
        if w.action in (Action.REPLACE, Action.UPDATE) and w.state.current is not None:
            try:
                save_state(w.state_dir, w.state.evolve(pending=None))
                if not run.hypervisor(w.agent).is_running(w.agent.name):
                    define_and_start(run, w.agent, w.state)
                    # an update's files may be partly written: running it again writes them all
                    log.warning("%s: %s abandoned; started again on %s", w.agent.name, w.action.value,
                                w.state.current.image_version)
            except Exception as e:  # the original failure is the one to report
                log.warning("%s: could not start the previous VM again: %s", w.agent.name, e)


def _swap(run: CloneRun, w: Work) -> Work:
    os.replace(disks.partial(w.root_disk), w.root_disk)
    if disks.partial(w.data_disk).exists():
        os.replace(disks.partial(w.data_disk), w.data_disk)
    if w.docker_disk and disks.partial(w.docker_disk).exists():
        os.replace(disks.partial(w.docker_disk), w.docker_disk)
    docker = str(w.docker_disk) if w.docker_disk and w.docker_disk.exists() else w.state.docker_disk
    version = run.image.version
    replacing = w.action is Action.REPLACE
    state = w.state.evolve(current=Slot(version, str(w.root_disk)), docker_disk=docker,
                           previous=w.previous if replacing else w.state.previous,
                           pending=Slot(version, str(w.root_disk)) if replacing else None)
    save_state(w.state_dir, state)
    return w.evolve(state=state)


def _await_replace(run: CloneRun, w: Work, since: float, console: ConsoleWatch) -> tuple[Result, Optional[str]]:
    """Keep the new image if the collector sees it healthy; otherwise roll back and say why."""
    hv = run.hypervisor(w.agent)
    opts, version = run.opts, run.image.version
    verdict = wait_healthy(run.inv.services.collector_api_url, w.agent.name, version, since,
                           deadline_s=opts.health_timeout_s, unhealthy_grace_s=opts.unhealthy_grace_s,
                           domain_alive=lambda: hv.is_running(w.agent.name), early_failure=console.agentd_failed)
    if verdict.ok:
        state = w.state.evolve(pending=None)
        save_state(w.state_dir, state)
        w = w.evolve(state=state)
        _prune_overlays(run, w)
        return _result(run, w, f"healthy on {version} ({verdict.detail})", Action.REPLACE), None
    log.warning("%s: replace failed (%s: %s); rolling back", w.agent.name, verdict.reason, verdict.detail)
    # automatic: minutes after the swap, the new image never healthy, so /home/agent goes back too (rollback.py)
    state = rollback_state(run, w.agent, w.state, force=True, restore_data=True)
    why = f"{w.agent.name}: rolled back to {state.current.image_version} ({verdict.reason}: {verdict.detail})"
    return _result(run, w.evolve(state=state), why, Action.ROLLBACK), why


def _audit_update(run: CloneRun, w: Work, changes: tuple[str, ...]) -> None:
    """The collector's audit trail of this update (deploy/audit.py), when the inventory names a collector; the
    update is done either way, so a collector that is down costs one warning line."""
    api_url = run.inv.services.collector_api_url
    if not api_url:
        return
    event = AuditEvent(w.agent.name, time.time(), audit.operator(), changes)
    why = audit.post_event(api_url, run.secrets[w.agent.name]["collector_secret"].reveal().encode(), event)
    if why:
        log.warning("%s: updated, but the collector at %s did not record it in its audit trail (%s)", w.agent.name,
                    api_url, why)


def _updated(injected: Injected, w: Work) -> str:
    changed = injected.changed()
    what = f"{len(changed)} file(s) changed: {', '.join(changed)}" if changed else "nothing changed"
    grown = [line.split(" (")[0] for line in (w.resize.lines() if w.resize else []) if "->" in line]
    return f"re-injected, {what}" + (f"; resized: {'; '.join(grown)}" if grown else "") + \
        "; restarted on the same overlay"


def _prune_overlays(run: CloneRun, w: Work) -> None:
    keep = {w.state.current.root_disk, w.state.previous.root_disk if w.state.previous else ""}
    for path in run.inv.host_of(w.agent).storage_dir.glob(f"{w.agent.name}-root-*.qcow2"):
        if str(path) not in keep:
            path.unlink()


def _result(run: CloneRun, w: Work, message: str, action: Optional[Action] = None) -> Result:
    return result_for(run.inv, w.agent, w.state, run.domain_type, action or w.action, message)


def _phase(run: CloneRun, key: str, label: str):
    """A timed phase with its deadline from DEADLINES_S (or AGENTFLEET_DEADLINES)."""
    return run.progress.phase(label, deadline_for(key, DEADLINES_S))


def _names(works: list[Work]) -> str:
    return ", ".join(w.agent.name for w in works)
