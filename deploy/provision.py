"""The clone recipe for the agents named in one run: decide per agent (clone, start, no-op, replace, refuse), build
overlays, inject everything in one appliance launch, define and start the domains, and for replaces wait for health
and roll back by itself. Each step is recorded in the agent's state before the next, so a killed run converges."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from deploy import disks, openclaw_config
from host import accel
from deploy.console import ConsoleWatch, console_log
from deploy.domain import domain_xml, spec_for
from deploy.errors import CloneError, RolledBack
from deploy.health import wait_healthy
from deploy.hostkeys import HostKey, ensure_host_keys, known_hosts_lines
from deploy.images import Image, find_image
from deploy.inject import AgentDisks, Mkdir, inject
from deploy.inventory import Agent, Inventory
from deploy.payload import agent_ops
from deploy.secrets import AgentSecrets, load_secrets
from deploy.state import AgentState, Slot, load_state, new_state, save_state

log = logging.getLogger(__name__)


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


@dataclass
class Result:
    agent: str
    action: str                                  # clone | start | noop | replace | rollback | destroy
    image_version: str = ""
    root_disk: str = ""
    data_disk: str = ""
    domain_type: str = ""
    ssh: dict = field(default_factory=dict)
    known_hosts: list = field(default_factory=list)
    snapshots: list = field(default_factory=list)
    message: str = ""


@dataclass
class Work:
    """One agent's plan for this run."""
    agent: Agent
    state_dir: Path
    state: AgentState
    action: str
    root_disk: Path = Path()
    data_disk: Path = Path()
    previous: Optional[Slot] = None


class Connections:
    def __init__(self, override: Optional[str]):
        self.override, self._open = override, {}

    def get(self, inv: Inventory, agent: Agent):
        from deploy.hypervisor import Hypervisor

        uri = self.override or inv.host_of(agent).uri
        if uri not in self._open:
            self._open[uri] = Hypervisor(uri)
        return self._open[uri]

    def close(self):
        for hv in self._open.values():
            hv.close()


# ---------------------------------------------------------------------------------------------------------- clone
def clone(inv: Inventory, names: list[str], opts: Options, out=print) -> list[Result]:
    agents = [inv.agent(n) for n in dict.fromkeys(names)]
    image = find_image(inv.images_dir, opts.image)
    secrets = load_secrets(inv.secrets, [a.name for a in agents])
    schema = openclaw_config.load_schema(image.schema_path)
    for agent in agents:
        openclaw_config.validate_config(openclaw_config.build_config(inv, agent), schema, agent.name)
    dtype = accel.domain_type()
    if opts.dry_run:
        return [_dry_run(inv, a, image, secrets[a.name], dtype, opts, out) for a in agents]

    conns = Connections(opts.connect)
    try:
        work = [_decide(inv, a, image, opts, conns) for a in agents]
        return _execute(inv, work, image, secrets, dtype, opts, conns)
    finally:
        conns.close()


def _decide(inv: Inventory, agent: Agent, image: Image, opts: Options, conns: Optional[Connections]) -> Work:
    state_dir = inv.state_dir(agent)
    storage = inv.host_of(agent).storage_dir
    st = load_state(state_dir) or new_state(agent.name, disks.data_disk_path(storage, agent.name))
    running = conns.get(inv, agent).is_running(agent.name) if conns else False
    defined = bool(conns and conns.get(inv, agent).domain(agent.name))
    root = disks.root_disk_path(storage, agent.name, image.version)
    w = Work(agent, state_dir, st, "clone", root, Path(st.data_disk))
    if st.current is None:
        if running:
            raise CloneError(f"{agent.name}: a domain of that name is running but has no agentfleet state; "
                             f"remove it or use --destroy")
        return w
    if st.current.image_version == image.version:
        if st.pending and st.pending.image_version == image.version:
            w.action = "resume"                       # swapped but never proven healthy
        else:
            w.action = "noop" if running and defined else "start"
        w.root_disk = Path(st.current.root_disk)
        return w
    if not opts.replace:
        raise CloneError(f"{agent.name}: runs image {st.current.image_version}; {image.version} differs "
                         f"(use --replace to upgrade)")
    w.action, w.previous = "replace", st.current
    return w


def _execute(inv, work: list[Work], image: Image, secrets, dtype: str, opts: Options, conns) -> list[Result]:
    results = {}
    batch: list[AgentDisks] = []
    for w in work:
        if w.action in ("noop",):
            results[w.agent.name] = _result(inv, w, image, dtype, "noop", "already runs this image")
            continue
        if w.action in ("start", "resume"):
            continue
        keys = ensure_host_keys(w.state_dir, w.agent.name)
        save_state(w.state_dir, w.state)              # uuid, MAC, machine-id fixed before any disk exists
        disks.create_overlay(image.path, disks.partial(w.root_disk))
        seed = not w.data_disk.exists()
        if seed:
            disks.create_data_disk(disks.partial(w.data_disk), w.agent.disk_gb)
        if w.action == "replace":
            w.state = w.state.evolve(pending=Slot(image.version, str(w.root_disk)))
            save_state(w.state_dir, w.state)
            hv = conns.get(inv, w.agent)
            hv.stop(w.agent.name, opts.stop_timeout_s)
            w.state = _snapshot_data(w.state, w.data_disk, image.version, opts.keep_snapshots)
            save_state(w.state_dir, w.state)
        ops = agent_ops(inv, w.agent, image, w.state, secrets[w.agent.name], keys)
        batch.append(AgentDisks(w.agent.name, disks.partial(w.root_disk),
                                disks.partial(w.data_disk) if seed else w.data_disk, seed, ops,
                                meta=(("agent", w.agent.name), ("image_version", image.version))))
    if batch:
        log.info("injecting %d agent(s) in one appliance launch", len(batch))
        inject(batch)
    for w in work:
        if w.action in ("clone", "replace"):
            os.replace(disks.partial(w.root_disk), w.root_disk)
            if disks.partial(w.data_disk).exists():
                os.replace(disks.partial(w.data_disk), w.data_disk)
            pending = Slot(image.version, str(w.root_disk)) if w.action == "replace" else None
            w.state = w.state.evolve(current=Slot(image.version, str(w.root_disk)),
                                     previous=w.previous if w.action == "replace" else w.state.previous,
                                     pending=pending)
            save_state(w.state_dir, w.state)
    started = time.time()
    # only what these boots print, and only where a replace waits for health
    consoles = {w.agent.name: ConsoleWatch(console_log(w.state_dir)) for w in work if w.action in ("replace", "resume")}
    for w in work:
        if w.action != "noop":
            _define_and_start(inv, w, dtype, conns, image.version)
    for w in work:
        if w.action in ("clone", "start"):
            results[w.agent.name] = _result(inv, w, image, dtype, w.action, "defined and started")
    failures = []
    for w in work:
        if w.action in ("replace", "resume"):
            res, why = _await_replace(inv, w, image, dtype, opts, conns, started, consoles[w.agent.name])
            results[w.agent.name] = res
            if why:
                failures.append(why)
    ordered = [results[w.agent.name] for w in work]
    if failures:
        err = RolledBack("; ".join(failures))
        err.results = ordered
        raise err
    return ordered


def _await_replace(inv, w: Work, image: Image, dtype, opts: Options, conns, since: float, console: ConsoleWatch):
    hv = conns.get(inv, w.agent)
    verdict = wait_healthy(inv.services.collector_api_url, w.agent.name, image.version, since,
                           deadline_s=opts.health_timeout_s, unhealthy_grace_s=opts.unhealthy_grace_s,
                           domain_alive=lambda: hv.is_running(w.agent.name), early_failure=console.agentd_failed)
    if verdict.ok:
        w.state = w.state.evolve(pending=None)
        save_state(w.state_dir, w.state)
        _prune_overlays(inv, w)
        return _result(inv, w, image, dtype, "replace", f"healthy on {image.version} ({verdict.detail})"), None
    log.warning("%s: replace failed (%s: %s); rolling back", w.agent.name, verdict.reason, verdict.detail)
    w.state = rollback_state(inv, w.agent, w.state, opts, conns, dtype, force=True)
    why = f"{w.agent.name}: rolled back to {w.state.current.image_version} ({verdict.reason}: {verdict.detail})"
    return _result(inv, w, image, dtype, "rollback", why), why


def _define_and_start(inv, w: Work, dtype: str, conns, version: str) -> None:
    spec = spec_for(inv, w.agent, uuid=w.state.uuid, mac=w.state.mac, root_disk=Path(w.state.current.root_disk),
                    data_disk=Path(w.state.data_disk), console_log=console_log(w.state_dir), domain_type=dtype,
                    image_version=w.state.current.image_version)
    conns.get(inv, w.agent).define_and_start(domain_xml(spec), w.agent.name)


def _snapshot_data(st: AgentState, data_disk: Path, version: str, keep: int) -> AgentState:
    """Snapshot /home/agent before the swap (the domain is stopped). A resumed replace keeps its snapshot."""
    if not data_disk.exists():
        return st
    name = f"pre-{version}"
    existing = disks.snapshot_list(data_disk)
    resumed = st.pending and st.pending.image_version == version and name in existing and name in st.snapshots
    if not resumed:
        if name in existing:
            disks.snapshot_delete(data_disk, name)
        disks.snapshot_create(data_disk, name)
    snaps = [s for s in st.snapshots if s != name] + [name]
    for old in snaps[:-keep]:
        if old in disks.snapshot_list(data_disk):
            disks.snapshot_delete(data_disk, old)
    return st.evolve(snapshots=tuple(snaps[-keep:]))


def _prune_overlays(inv: Inventory, w: Work) -> None:
    keep = {w.state.current.root_disk, w.state.previous.root_disk if w.state.previous else ""}
    for path in inv.host_of(w.agent).storage_dir.glob(f"{w.agent.name}-root-*.qcow2"):
        if str(path) not in keep:
            path.unlink()


# ------------------------------------------------------------------------------------------------------- rollback
def rollback(inv: Inventory, names: list[str], opts: Options) -> list[Result]:
    conns = Connections(opts.connect)
    dtype = accel.domain_type()
    try:
        out = []
        for agent in [inv.agent(n) for n in dict.fromkeys(names)]:
            st = load_state(inv.state_dir(agent))
            if st is None or st.previous is None:
                raise CloneError(f"{agent.name}: nothing to roll back to (no previous image recorded)")
            st = rollback_state(inv, agent, st, opts, conns, dtype, force=False)
            w = Work(agent, inv.state_dir(agent), st, "rollback", Path(st.current.root_disk), Path(st.data_disk))
            out.append(_result(inv, w, None, dtype, "rollback", f"back on {st.current.image_version}"))
        return out
    finally:
        conns.close()


def rollback_state(inv, agent: Agent, st: AgentState, opts: Options, conns, dtype: str, force: bool) -> AgentState:
    """Stop, restore /home/agent from the snapshot taken before the swap, boot the previous overlay."""
    hv = conns.get(inv, agent)
    hv.stop(agent.name, 5 if force else opts.stop_timeout_s)
    snap = f"pre-{st.current.image_version}"
    data = Path(st.data_disk)
    if data.exists() and snap in disks.snapshot_list(data):
        disks.snapshot_apply(data, snap)
    st = st.evolve(current=st.previous, previous=st.current, pending=None)
    save_state(inv.state_dir(agent), st)
    w = Work(agent, inv.state_dir(agent), st, "rollback")
    _define_and_start(inv, w, dtype, conns, st.current.image_version)
    return st


# -------------------------------------------------------------------------------------------------------- destroy
def destroy(inv: Inventory, names: list[str], opts: Options, purge_data: bool = False) -> list[Result]:
    conns = Connections(opts.connect)
    try:
        out = []
        for agent in [inv.agent(n) for n in dict.fromkeys(names)]:
            state_dir = inv.state_dir(agent)
            st = load_state(state_dir)
            conns.get(inv, agent).undefine(agent.name)
            for path in inv.host_of(agent).storage_dir.glob(f"{agent.name}-root-*.qcow2*"):
                path.unlink()
            data = Path(st.data_disk) if st else disks.data_disk_path(inv.host_of(agent).storage_dir, agent.name)
            if purge_data:
                data.unlink(missing_ok=True)
                disks.partial(data).unlink(missing_ok=True)
                if st:
                    st = st.evolve(snapshots=())
            if st:
                save_state(state_dir, st.evolve(current=None, previous=None, pending=None))
            msg = "domain and root disks removed; " + ("data disk purged" if purge_data else f"data disk kept: {data}")
            out.append(Result(agent.name, "destroy", data_disk=str(data), message=msg))
        return out
    finally:
        conns.close()


# -------------------------------------------------------------------------------------------------------- output
def _result(inv: Inventory, w: Work, image: Optional[Image], dtype: str, action: str, message: str) -> Result:
    keys_dir = w.state_dir / "ssh"
    keys = [HostKey(k, keys_dir / f"ssh_host_{k}_key", keys_dir / f"ssh_host_{k}_key.pub")
            for k in ("ed25519", "ecdsa", "rsa") if (keys_dir / f"ssh_host_{k}_key.pub").exists()]
    ssh = {"host": w.agent.ip, "port": 22, "user": "agent"}
    names = [w.agent.name, w.agent.ip]
    if inv.network.mode == "user":
        ssh = {"host": "127.0.0.1", "port": w.agent.ssh_port, "user": "agent"}
        names = [f"[127.0.0.1]:{w.agent.ssh_port}"]
    cur = w.state.current
    return Result(w.agent.name, action, image_version=cur.image_version if cur else "",
                  root_disk=cur.root_disk if cur else "", data_disk=w.state.data_disk, domain_type=dtype, ssh=ssh,
                  known_hosts=known_hosts_lines(keys, names), snapshots=list(w.state.snapshots), message=message)


def _dry_run(inv: Inventory, agent: Agent, image: Image, secrets: AgentSecrets, dtype: str, opts: Options,
             out) -> Result:
    """Print disks, injected files (secret values masked) and the domain XML; write nothing."""
    w = _decide(inv, agent, image, opts, None)
    keys_dir = w.state_dir / "ssh"
    keys = [HostKey(k, keys_dir / f"ssh_host_{k}_key", keys_dir / f"ssh_host_{k}_key.pub")
            for k in ("ed25519", "ecdsa", "rsa") if (keys_dir / f"ssh_host_{k}_key.pub").exists()]
    ops = agent_ops(inv, agent, image, w.state, secrets, keys)
    out(f"== {agent.name} ({w.action}, image {image.version}, domain type {dtype})")
    out(f"disk root: {w.root_disk} (qcow2 overlay, backing {image.path})")
    out(f"disk data: {w.data_disk} ({'exists, kept' if w.data_disk.exists() else f'new, {agent.disk_gb:g} GB'}, "
        f"mounted at /home/agent)")
    if not keys:
        out("ssh host keys: generated on first clone (ed25519, ecdsa, rsa)")
    for op in ops:
        if isinstance(op, Mkdir):
            out(f"mkdir {op.path} {op.mode:04o} {op.owner}")
        else:
            out(f"file  {op.path} {op.mode:04o} {op.owner} ({len(op.data())} bytes)")
            body = "    <secret, masked>" if op.secret else "\n".join(
                "    " + ln for ln in op.data().decode(errors="replace").splitlines())
            out(body)
    spec = spec_for(inv, agent, uuid=w.state.uuid, mac=w.state.mac, root_disk=w.root_disk, data_disk=w.data_disk,
                    console_log=console_log(w.state_dir), domain_type=dtype, image_version=image.version)
    out(domain_xml(spec))
    return _result(inv, w, image, dtype, "dry-run", w.action)
