"""`clone.py AGENT --restore DIR`: bring an agent back from a backup (deploy/backup.py), on any hypervisor the
inventory places it on, with the same identity: domain UUID, MAC, machine-id and SSH host keys from the backup (an
admin's known_hosts stays valid), its /home/agent from the backup's data disk, a fresh root overlay of the image the
backup names (or --image), and today's inventory and secrets injected as a clone does. Then it starts and, like a
replace, waits for a healthy report at the collector.

Refused when the agent exists on this hypervisor (a domain of that name, a recorded VM, or a data disk kept by a
--destroy): a restore would make a second copy of it or silently throw its data away, so the operator removes it
first (`--destroy --purge-data`) as an explicit step. There is no --force: discarding an agent's /home/agent
deserves its own command. Every check (the backup's sha256s, the image, the secrets, the refusal) comes before
anything is written.

A restore that fails after placing its files removes what it made (the backup is only read), so running it again
starts clean; one that was killed left `restoring.json` in the agent's state dir naming its backup, and running the
same restore again first removes what that one made."""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from deploy import disks
from deploy.action import Action
from deploy.backup_manifest import DATA_DISK, SSH_DIR, Manifest, backup_dir, key_files, verify
from deploy.console import ConsoleWatch, console_log
from deploy.context import Connections, Options
from deploy.destroy import destroy
from deploy.errors import CloneError
from deploy.health import wait_healthy
from deploy.images import Image, find_image
from deploy.inventory import Agent, Inventory
from deploy.recipe import clone
from deploy.result import Result, result_for
from deploy.secrets import load_secrets
from deploy.state import AgentState, load_state, save_state, write_atomic
from host import exit_codes
from host.progress import Progress, deadline_for

log = logging.getLogger(__name__)

RESTORING = "restoring.json"      # in the agent's state dir while a restore has placed files not yet booted
DEADLINES_S = {"restore-verify": 1800, "restore-place": 3600}
AWAIT_MARGIN_S = 600


@dataclass(frozen=True)
class RestorePlan:
    agent: Agent
    source: Path                  # the backup dir (the one holding manifest.json)
    manifest: Manifest
    image: Image
    state_dir: Path
    data_disk: Path

    def describe(self) -> str:
        m = self.manifest
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(m.taken_at))
        return (f"restore {m.agent} from {self.source.name} (taken {when} on {m.host}, image {m.image_version}) "
                f"onto image {self.image.version}")


def plan_restore(inv: Inventory, agent: Agent, source: Path, opts: Options, progress: Progress,
                 hv=None) -> tuple[RestorePlan, bool]:
    """Everything that can refuse, checked while nothing is written: the backup whole, the agent absent here (`hv`
    None: from the state file and the storage dir alone, for --dry-run), the image, the secrets. Also says whether
    what is here was made by a killed restore of this same backup (then it is removed first)."""
    source = backup_dir(source, agent.name)
    with progress.phase(f"restore: verify {source} (sha256 of every file)", deadline_for("restore-verify",
                                                                                        DEADLINES_S)):
        manifest = verify(source, agent.name)
        _check_host_keys(source, manifest)
    state_dir, storage = inv.state_dir(agent), inv.host_of(agent).storage_dir
    resume = refuse_present(agent, source, state_dir, disks.data_disk_path(storage, agent.name), hv)
    wanted = opts.image or manifest.image_version
    try:
        image = find_image(inv.images_dir, wanted)
    except CloneError as e:
        raise CloneError(f"{agent.name}: {e}; the backup was taken on {manifest.image_version}: publish (push) it "
                         f"here, or restore onto another with --image VERSION") from None
    load_secrets(inv.secrets, [agent.name])          # a missing secret stops the restore before anything is placed
    return RestorePlan(agent, source, manifest, image, state_dir, disks.data_disk_path(storage, agent.name)), resume


def restore(inv: Inventory, names: list[str], source: Path, opts: Options, progress: Progress,
            out: Callable[[str], None] = print) -> list[Result]:
    names = list(dict.fromkeys(names))
    if len(names) != 1:
        raise CloneError("--restore brings back one agent: name exactly one (the one the backup is of)")
    agent = inv.agent(names[0])
    if opts.dry_run:
        return [_show(inv, plan_restore(inv, agent, source, opts, progress)[0], out)]
    conns = Connections(opts.connect)
    try:
        plan, resume = plan_restore(inv, agent, source, opts, progress, conns.get(inv, agent))
    finally:
        conns.close()
    if resume:   # a restore of this same backup was killed midway: what it made goes first
        log.warning("%s: an earlier restore from %s did not finish; removing what it made", plan.agent.name,
                    plan.source)
        _discard(inv, plan, opts, progress)
    with progress.phase(f"restore: {plan.agent.name}: identity, host keys and data disk from {plan.source.name}",
                        deadline_for("restore-place", DEADLINES_S)):
        place(plan)
    since = time.time()
    console = ConsoleWatch(console_log(plan.state_dir))
    try:
        cloned = clone(inv, [plan.agent.name], replace(opts, image=plan.image.version, restored=True, replace=False,
                                                       update=False), progress, out)[0]
    except BaseException:
        _discard(inv, plan, opts, progress)
        raise
    (plan.state_dir / RESTORING).unlink(missing_ok=True)
    health = _await_health(inv, plan, opts, progress, since, console)
    state = load_state(plan.state_dir)
    message = f"restored from {plan.source.name} (taken on {plan.manifest.host}) on {plan.image.version}; {health}"
    return [replace(result_for(inv, plan.agent, state, cloned.domain_type, Action.RESTORE, message),
                    backup=str(plan.source))]


def refuse_present(agent: Agent, source: Path, state_dir: Path, data_disk: Path, hv) -> bool:
    """Refuse when the agent exists here; True when what is here was made by a killed restore of this backup."""
    name = agent.name
    first = f"remove it first: deploy/clone.py {name} --destroy --purge-data (back it up first if its data matters)"
    marker = _marker(state_dir)
    if marker is not None and marker.get("backup") == str(source.resolve()):
        return True
    if hv is not None and hv.domain(name) is not None:
        raise CloneError(f"{name}: a VM of that name is defined on this hypervisor; a restore would make a second "
                         f"{name}: {first}")
    st = load_state(state_dir)
    if st is not None and st.current is not None:
        raise CloneError(f"{name}: already cloned here (image {st.current.image_version}); a restore would make a "
                         f"second {name}: {first}")
    if data_disk.exists():
        raise CloneError(f"{name}: its data disk {data_disk} is here (kept by a --destroy); the restore "
                         f"brings its own: {first}")
    return False


def place(plan: RestorePlan) -> None:
    """The agent's state (the backup's identity), host keys and data disk, where a clone expects them; the marker
    first, so a kill at any step is recognised by the next run."""
    plan.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    marker = {"backup": str(plan.source.resolve()), "started_at": time.time()}
    write_atomic(plan.state_dir / RESTORING, (json.dumps(marker) + "\n").encode())
    ssh_dir = plan.state_dir / SSH_DIR
    ssh_dir.mkdir(exist_ok=True, mode=0o700)
    ssh_dir.chmod(0o700)
    for rel in key_files():
        write_atomic(plan.state_dir / rel, (plan.source / rel).read_bytes(), 0o644 if rel.endswith(".pub") else 0o600)
    ident = plan.manifest.identity
    save_state(plan.state_dir, AgentState(agent=plan.agent.name, uuid=ident.uuid, mac=ident.mac,
                                          machine_id=ident.machine_id, data_disk=str(plan.data_disk),
                                          cloned_at=ident.cloned_at))
    partial = disks.partial(plan.data_disk)
    disks.copy_disk(plan.source / DATA_DISK, partial)
    os.replace(partial, plan.data_disk)


def _discard(inv: Inventory, plan: RestorePlan, opts: Options, progress: Progress) -> None:
    """Best effort: the domain, root overlays and data disk this restore made go (destroy --purge-data), so the
    next run starts clean; the backup is never touched. The original failure is the one reported."""
    try:
        destroy(inv, [plan.agent.name], replace(opts, dry_run=False), progress, purge_data=True, out=lambda *_: None)
        disks.partial(plan.data_disk).unlink(missing_ok=True)
        (plan.state_dir / RESTORING).unlink(missing_ok=True)
    except Exception as e:
        log.warning("%s: could not remove what the restore made (%s); `--destroy --purge-data` does", plan.agent.name,
                    e)


def _await_health(inv: Inventory, plan: RestorePlan, opts: Options, progress: Progress, since: float,
                  console: ConsoleWatch) -> str:
    """A healthy report of the restored agent, as a replace waits for one; the VM is kept either way (there is
    nothing to go back to), and a failure is exit 1 with the reason."""
    api_url = inv.services.collector_api_url
    if not api_url:
        return "started (no collector in the inventory to wait for)"
    conns = Connections(opts.connect)
    try:
        hv = conns.get(inv, plan.agent)
        with progress.phase(f"await health: {plan.agent.name} on {plan.image.version}",
                            opts.health_timeout_s + AWAIT_MARGIN_S):
            verdict = wait_healthy(api_url, plan.agent.name, plan.image.version, since,
                                   deadline_s=opts.health_timeout_s, unhealthy_grace_s=opts.unhealthy_grace_s,
                                   domain_alive=lambda: hv.is_running(plan.agent.name),
                                   early_failure=console.agentd_failed)
    finally:
        conns.close()
    if not verdict.ok:
        raise CloneError(f"{plan.agent.name}: restored and started, but not healthy ({verdict.reason}: "
                         f"{verdict.detail}); the VM is kept, see {console.log}", exit_codes.FAILED)
    return f"healthy ({verdict.detail})"


def _check_host_keys(source: Path, manifest: Manifest) -> None:
    """The public keys in ssh/ must be the ones the manifest's identity names."""
    for kind, line in manifest.identity.host_keys:
        pub = (source / SSH_DIR / f"ssh_host_{kind}_key.pub").read_text().split()[:2]
        if pub != line.split()[:2]:
            raise CloneError(f"backup {source}: {SSH_DIR}/ssh_host_{kind}_key.pub is not the key its manifest names")


def _marker(state_dir: Path) -> Optional[dict]:
    try:
        return json.loads((state_dir / RESTORING).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _show(inv: Inventory, plan: RestorePlan, out: Callable[[str], None]) -> Result:
    """--restore --dry-run: the plan, from the backup (verified), the state file and the storage dir; no change."""
    m, ident = plan.manifest, plan.manifest.identity
    out(f"== {plan.agent.name}: would {plan.describe()}")
    out(f"identity: uuid {ident.uuid}, mac {ident.mac}, machine-id {ident.machine_id}, host keys "
        f"{', '.join(k for k, _ in ident.host_keys)} -> {plan.state_dir}")
    out(f"data disk: {plan.source / DATA_DISK} -> {plan.data_disk}"
        + (f" (without {', '.join(m.scrubbed)}: injected from the secrets source)" if m.scrubbed else ""))
    out(f"root: a fresh overlay of {plan.image.path}; inject as a clone does; start; wait for a healthy report")
    st = AgentState(plan.agent.name, ident.uuid, ident.mac, ident.machine_id, str(plan.data_disk))
    planned = result_for(inv, plan.agent, st, "", Action.RESTORE, f"dry run: would {plan.describe()}")
    return replace(planned, dry_run=True, image_version=plan.image.version, backup=str(plan.source))
