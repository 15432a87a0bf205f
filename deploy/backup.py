"""`clone.py AGENT --backup DIR`: a consistent copy of what makes the agent itself, its data disk (/home/agent) and
the identity its hypervisor keeps (domain UUID, MAC, machine-id, SSH host keys), taken while the VM runs.

Why a snapshot and not a plain copy: a copy of a disk the guest is writing is torn (blocks from different moments).
So the running guest's data disk is frozen with a libvirt external disk-only snapshot (the guest writes into an
overlay beside it from then on), the frozen file is copied with qemu-img, and the overlay is merged back with an
active block commit and a pivot: the VM never stops, and its disk chain is one file again at the end. The copy is
crash-consistent (what a power cut would leave: ext4's journal replays on the next mount). A shut-off VM's disk is
copied directly.

Nothing is half-done: the backup is written into `DIR/.partial-<agent>-<time>` and renamed to `DIR/<agent>-<time>`
once whole, with its manifest last; any failure merges the overlay back and removes the partial dir. The secrets a
clone injects into the data disk (OpenClaw's .env) are scrubbed from the copy: they come from the inventory's
secrets source again on restore, so a backup holds no API key. The host keys it holds are secret: the backup dir is
0700 and every file in it 0600. The format: deploy/backup_manifest.py."""
from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from deploy import disks
from deploy.action import Action
from deploy.backup_manifest import (
    DATA_DISK,
    DIR_MODE,
    FILE_MODE,
    SSH_DIR,
    Identity,
    Manifest,
    backup_name,
    describe_files,
    key_files,
    partial_name,
    write_manifest,
)
from deploy.context import Connections, Options
from deploy.errors import CloneError
from deploy.inventory import Agent, Inventory
from deploy.result import existing_host_keys, result_for
from deploy.state import AgentState, load_state
from host import exit_codes
from host.progress import Progress, deadline_for

log = logging.getLogger(__name__)

DATA_TARGET = "vdb"                  # the data disk's device in every agent's domain (deploy/domain.py)
# Files under /home/agent that the clone fills with secret values (deploy/payload.py): never in a backup.
SECRET_DATA_FILES = (".openclaw/.env",)
DEADLINES_S = {"backup-copy": 3600, "backup-merge": 900, "backup-scrub": 900}


@dataclass(frozen=True)
class BackupPlan:
    """One agent's backup, settled (and refused if it cannot be taken) before any VM is touched."""
    agent: Agent
    state_dir: Path
    state: AgentState
    data_disk: Path
    dest: Path                        # the directory the backup dir goes into

    @property
    def overlay(self) -> Path:
        return disks.backup_overlay_path(self.data_disk)


def plan_backup(inv: Inventory, agent: Agent, dest: Path) -> BackupPlan:
    state_dir = inv.state_dir(agent)
    st = load_state(state_dir)
    if st is None or st.current is None:
        raise CloneError(f"{agent.name}: no VM here to back up (no current image in {state_dir / 'state.json'})")
    if st.pending is not None:
        raise CloneError(f"{agent.name}: a replace to {st.pending.image_version} is not finished; back up after it "
                         f"(or after its rollback)")
    data = Path(st.data_disk)
    if not data.exists():
        raise CloneError(f"{agent.name}: its data disk {data} is missing; nothing to back up")
    if len(existing_host_keys(state_dir)) != len(key_files()) // 2:
        raise CloneError(f"{agent.name}: its SSH host keys are incomplete in {state_dir / 'ssh'}")
    return BackupPlan(agent, state_dir, st, data, dest)


def backup(inv: Inventory, names: list[str], dest: Path, opts: Options, progress: Progress,
           out: Callable[[str], None] = print) -> list:
    """Back up each agent into its own dir under `dest`; every refusal is raised before the first copy."""
    plans = [plan_backup(inv, inv.agent(n), dest) for n in dict.fromkeys(names)]
    if opts.dry_run:
        return [_show(inv, plan, out) for plan in plans]
    _prepare_dest(dest)
    conns = Connections(opts.connect)
    try:
        results = []
        for plan in plans:
            hv = conns.get(inv, plan.agent)
            with progress.phase(f"backup: {plan.agent.name} into {dest}"):
                path, manifest = take_backup(hv, plan, progress)
            size = sum(f.size for f in manifest.files)
            how = "live (external snapshot, merged back)" if manifest.live else "from the shut-off VM"
            results.append(_result(inv, plan, f"backup {path.name} written, {size / 2**20:.0f} MiB, {how}",
                                   str(path)))
        return results
    finally:
        conns.close()


def take_backup(hv, plan: BackupPlan, progress: Progress) -> tuple[Path, Manifest]:
    """The backup dir of one agent, whole, or nothing: the partial dir is removed on any failure."""
    taken_at = time.time()
    final = plan.dest / backup_name(plan.agent.name, taken_at)
    if final.exists():
        raise CloneError(f"{plan.agent.name}: {final} already exists (one backup per agent per second)")
    partial = plan.dest / partial_name(plan.agent.name, taken_at)
    partial.mkdir(mode=DIR_MODE)
    try:
        _copy_host_keys(plan.state_dir, partial)
        live = copy_data_disk(hv, plan, partial / DATA_DISK, progress)
        with progress.phase(f"backup: {plan.agent.name}: scrub secrets from the copy",
                            deadline_for("backup-scrub", DEADLINES_S)):
            scrubbed = scrub_secrets(partial / DATA_DISK)
        os.chmod(partial / DATA_DISK, FILE_MODE)
        st = plan.state
        keys = tuple((k.type, k.public_line()) for k in existing_host_keys(plan.state_dir))
        manifest = Manifest(agent=plan.agent.name, host=plan.agent.host, image_version=st.current.image_version,
                            taken_at=taken_at, live=live,
                            identity=Identity(st.uuid, st.mac, st.machine_id, st.cloned_at, keys),
                            files=describe_files(partial), scrubbed=scrubbed)
        write_manifest(partial, manifest)
        os.rename(partial, final)
        _fsync_dir(plan.dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final, manifest


def copy_data_disk(hv, plan: BackupPlan, dest: Path, progress: Progress) -> bool:
    """Copy the data disk into `dest`; True when the VM ran (frozen, copied, merged back), False when shut off."""
    name = plan.agent.name
    merge_leftover(hv, plan, progress)
    copy_deadline = deadline_for("backup-copy", DEADLINES_S)
    if not hv.is_running(name):
        with progress.phase(f"backup: {name}: copy {plan.data_disk.name} (VM shut off)", copy_deadline):
            disks.copy_disk(plan.data_disk, dest)
        return False
    hv.freeze_disk(name, DATA_TARGET, str(plan.overlay))
    try:
        with progress.phase(f"backup: {name}: copy the frozen {plan.data_disk.name} (the VM writes into "
                            f"{plan.overlay.name} meanwhile)", copy_deadline):
            disks.copy_disk(plan.data_disk, dest)
    finally:
        _merge_back(hv, plan, progress)
    return True


def _merge_back(hv, plan: BackupPlan, progress: Progress) -> None:
    """Pivot the guest back onto its data disk and remove the overlay; when that fails, say where the VM writes."""
    name = plan.agent.name
    try:
        with progress.phase(f"backup: {name}: merge {plan.overlay.name} back",
                            deadline_for("backup-merge", DEADLINES_S)):
            hv.commit_active(name, DATA_TARGET, deadline_for("backup-merge", DEADLINES_S))
    except CloneError as e:
        raise CloneError(f"{e}; the VM still writes into {plan.overlay}: run the backup again (it merges a "
                         f"leftover overlay first)", exit_codes.FAILED) from None
    plan.overlay.unlink(missing_ok=True)


def merge_leftover(hv, plan: BackupPlan, progress: Progress) -> None:
    """A backup killed between its snapshot and its merge leaves the guest on the overlay: merge it first, so every
    backup starts from a chain of one file (the copy must be of the whole data, not the part under the overlay)."""
    name, overlay = plan.agent.name, str(plan.overlay)
    if hv.is_running(name) and hv.disk_source(name, DATA_TARGET) == overlay:
        log.warning("%s: an earlier backup left the VM writing into %s; merging it back first", name, overlay)
        _merge_back(hv, plan, progress)
    elif hv.disk_source(name, DATA_TARGET, inactive=True) == overlay:   # shut off since: merge offline
        log.warning("%s: an earlier backup left %s under the shut-off VM; merging it back first", name, overlay)
        disks.commit_overlay(plan.overlay)
        xml = hv.xml_of(name, inactive=True)
        hv.define(xml.replace(f"'{overlay}'", f"'{plan.data_disk}'").replace(f'"{overlay}"', f'"{plan.data_disk}"'),
                  name)
        plan.overlay.unlink(missing_ok=True)
    elif plan.overlay.exists():                                          # made, never used: a snapshot that failed
        plan.overlay.unlink()


def scrub_secrets(data_copy: Path) -> tuple[str, ...]:
    """Overwrite with zeros, then remove, the secret files the clone injected into /home/agent (the copy only): the
    inventory's secrets source injects them again on restore. Zeros first, so the values are not left in free
    blocks of the copy. Returns the guest paths removed."""
    from host.appliance import Drive, appliance

    removed = []
    with appliance([Drive(data_copy)]) as g:
        device = g.list_devices()[0]
        try:
            g.mount(device, "/")
        except RuntimeError as e:
            raise CloneError(f"backup: the data disk copy has no file system to mount ({str(e).splitlines()[0]})",
                             exit_codes.FAILED) from None
        for rel in SECRET_DATA_FILES:
            path = "/" + rel
            if g.is_file(path, followsymlinks=False):
                size = g.filesize(path)
                for offset in range(0, size, 1 << 20):
                    g.pwrite(path, b"\0" * min(1 << 20, size - offset), offset)
                g.sync()
                g.rm(path)
                removed.append(f"/home/agent/{rel}")
    return tuple(removed)


def _copy_host_keys(state_dir: Path, root: Path) -> None:
    (root / SSH_DIR).mkdir(mode=DIR_MODE)
    for rel in key_files():
        dest = root / rel
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write((state_dir / rel).read_bytes())


def _prepare_dest(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if stat.S_IMODE(dest.stat().st_mode) & 0o077:
        log.warning("%s is open to other users; each backup in it is 0700 (its host keys are secret)", dest)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _show(inv: Inventory, plan: BackupPlan, out: Callable[[str], None]):
    """--backup --dry-run: what would be copied where; nothing is touched (the VM is not even looked at)."""
    name = plan.agent.name
    out(f"== {name}: would back up into {plan.dest}/{name}-<time>/ (0700), via {plan.dest}/.partial-{name}-<time>/")
    out(f"{DATA_DISK}: {plan.data_disk} (running: an external snapshot to {plan.overlay.name}, a copy of the "
        f"frozen disk, merged back; shut off: copied), then {', '.join(SECRET_DATA_FILES)} scrubbed from the copy")
    out(f"{SSH_DIR}/: the host keys from {plan.state_dir / SSH_DIR} (0600)")
    out(f"manifest.json: image {plan.state.current.image_version}, uuid {plan.state.uuid}, mac {plan.state.mac}, "
        f"machine-id {plan.state.machine_id}, sha256 of every file")
    planned = _result(inv, plan, f"dry run: would back up {name} into {plan.dest}", "")
    return replace(planned, dry_run=True)


def _result(inv: Inventory, plan: BackupPlan, message: str, path: str):
    return replace(result_for(inv, plan.agent, plan.state, "", Action.BACKUP, message), backup=path)
