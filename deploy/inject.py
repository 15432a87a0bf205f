"""Offline injection with libguestfs: one appliance launch serves every agent of a run.

Operations are data (Mkdir, WriteFile) built and validated before the appliance is used (while it boots, when
the recipe hands them in that way); the runner only applies them.
Each agent's files go in as one tar streamed from an in-memory fd, never as API arguments, so libguestfs's trace
(LIBGUESTFS_TRACE=1) shows a path, not a value."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

from agentd import vm_files
from deploy.errors import CloneError
from deploy.secrets import Secret
from host import exit_codes
from host.appliance import Drive, appliance

log = logging.getLogger(__name__)
HOME = "/home/agent"
DATA_LABEL = "agent-home"


@dataclass(frozen=True)
class Mkdir:
    path: str
    mode: int = 0o755
    owner: str = "root:root"


@dataclass(frozen=True)
class WriteFile:
    path: str
    content: Union[bytes, Secret]      # a Secret's text is uploaded from memory and never logged
    mode: int = 0o644
    owner: str = "root:root"

    def data(self) -> bytes:
        return self.content.reveal().encode() if isinstance(self.content, Secret) else self.content

    @property
    def secret(self) -> bool:
        return isinstance(self.content, Secret)


Op = Union[Mkdir, WriteFile]


@dataclass(frozen=True)
class ExtraDisk:
    """A persistent disk beyond root and data (Docker's), attached to grow its file system (labelled `label`); a new
    one comes formatted from the hypervisor (deploy/disks.create_data_disk) and is not attached at all."""
    path: Path
    label: str


@dataclass(frozen=True)
class AgentDisks:
    """One agent's part of a launch: its disks and the operations to apply (paths as seen inside the VM)."""
    agent: str
    root_disk: Path
    data_disk: Path
    seed_data: bool                      # a fresh (formatted, empty) data disk: copy the image's /home/agent skeleton
    ops: tuple[Op, ...] = field(default=())
    meta: tuple[tuple[str, str], ...] = ()  # extra keys for injected.json (agent, image_version)
    # --update: the disks are the agent's own (its live root overlay), not fresh ones over the golden image. Owners
    # come from its own /etc/passwd; /etc/fstab is left as it is; the baseline keeps its entries for files not
    # written again, so drift in them is still seen.
    updating: bool = False
    extra: tuple[ExtraDisk, ...] = ()       # attached for growing only
    fstab_extra: tuple[str, ...] = ()       # lines a new overlay's /etc/fstab gets after /home/agent's
    grow_fs: tuple[str, ...] = ()           # "root", "data", or an extra disk's label: grown to fill its disk

    def drives(self) -> list[Path]:
        return [self.root_disk, self.data_disk, *(d.path for d in self.extra)]


@dataclass(frozen=True)
class Injected:
    """What one agent's injection recorded: the new drift baseline, and the one it replaced (empty on a fresh disk)."""
    baseline: dict
    previous: dict

    def changed(self) -> tuple[str, ...]:
        return tuple(sorted(p for p, entry in self.baseline.items() if self.previous.get(p) != entry))


def validate_ops(ops: tuple[Op, ...], agent: str) -> None:
    """Reject duplicates and relative paths before the (expensive) launch."""
    seen = set()
    for op in ops:
        if not op.path.startswith("/") or ".." in op.path.split("/"):
            raise CloneError(f"{agent}: injection path {op.path!r} must be absolute and normalised")
        if op.path in seen:
            raise CloneError(f"{agent}: {op.path} injected twice")
        seen.add(op.path)


def baseline_of(ops: tuple[Op, ...]) -> dict[str, dict]:
    """The baseline agentd compares against: sha256, octal mode, owner per injected file."""
    return vm_files.baseline_to_json({op.path: vm_files.FileState.of(hashlib.sha256(op.data()).hexdigest(), op.mode,
                                                                     op.owner)
                                      for op in ops if isinstance(op, WriteFile)})


def inject(batch: list[AgentDisks], with_operations: Optional[Callable[[], list[AgentDisks]]] = None
           ) -> dict[str, Injected]:
    """Apply every agent's operations in one launch; returns agent -> the baseline written to injected.json (and
    the one it replaced).

    `with_operations`, when given, returns the batch with its operations (host keys to generate, files to build):
    it runs while the appliance boots, which keeps one emulated CPU busy and leaves the host's others to it. Its
    agents and disks must be the batch's (the appliance's drives are fixed before)."""
    drives = [Drive(p) for item in batch for p in item.drives()]
    final = list(batch)

    def operations() -> None:
        final[:] = with_operations() if with_operations else batch
        if [(i.agent, i.drives()) for i in final] != [(i.agent, i.drives()) for i in batch]:
            raise ValueError("inject: the operations came for other agents or disks than the appliance's")
        for item in final:
            validate_ops(item.ops, item.agent)

    if with_operations is None:
        operations()               # invalid operations are refused before the (expensive) launch
    baselines = {}
    current = "(launch)"
    try:
        with appliance(drives, meanwhile=operations if with_operations else None) as g:
            devices = g.list_devices()
            partitions = set(g.list_partitions())
            facts = None
            first = 0
            for item in final:
                current = item.agent
                mine = devices[first:first + len(item.drives())]
                first += len(mine)
                root_dev, data_dev = mine[0], mine[1]
                root_part = root_dev + "1" if root_dev + "1" in partitions else root_dev
                started = time.monotonic()
                _prepare_file_systems(g, item, root_dev, root_part, data_dev, mine[2:])
                g.mount(root_part, "/")
                if item.updating:
                    baselines[item.agent] = _update_one(g, item, data_dev)
                else:
                    facts = facts or _image_facts(g)   # every new overlay of a run has the same backing image
                    baselines[item.agent] = Injected(_inject_one(g, item, data_dev, facts), {})
                log.info("guestfs: %s: %d operations in %.1fs", item.agent, len(item.ops), time.monotonic() - started)
    except RuntimeError as e:  # libguestfs reports every failure as RuntimeError
        raise CloneError(f"libguestfs ({current}): {str(e).splitlines()[0][:300]}", exit_codes.FAILED) from None
    return baselines


def _prepare_file_systems(g, item: AgentDisks, root_dev: str, root_part: str, data_dev: str,
                          extra_devs: list[str]) -> None:
    """Before anything is mounted: grow each file system whose disk was grown (the root's partition first).
    resize2fs wants a freshly checked file system, hence e2fsck -f."""
    for disk, dev in zip(item.extra, extra_devs):
        if disk.label in item.grow_fs:
            _grow_fs(g, dev)
    if "data" in item.grow_fs and not item.seed_data:
        _grow_fs(g, data_dev)
    if "root" in item.grow_fs and root_part != root_dev:
        g.part_resize(root_dev, 1, g.blockdev_getsz(root_dev) - 1)   # the image's one partition, to the disk's end
        _grow_fs(g, root_part)


def _grow_fs(g, dev: str) -> None:
    g.e2fsck_f(dev)
    g.resize2fs(dev)


@dataclass(frozen=True)
class ImageFacts:
    """What injection needs from the golden image, read once per launch: each appliance call is a round trip
    (about 0.3 s under TCG), so per-agent calls are what makes a fleet slower than one agent."""
    ids: dict
    fstab: tuple[str, ...]     # the image's fstab without a /home/agent line
    skeleton: bytes            # tar of the image's /home/agent, seeded into new data disks
    has_home: bool


def _image_facts(g) -> ImageFacts:
    has_home = g.is_dir(HOME)
    skeleton = b""
    if has_home:
        with tempfile.NamedTemporaryFile(prefix="agentfleet-skel-", suffix=".tar") as tmp:
            g.tar_out(HOME, tmp.name)
            skeleton = Path(tmp.name).read_bytes()
    fstab = tuple(ln for ln in g.cat("/etc/fstab").splitlines() if ln.split()[1:2] != [HOME]) \
        if g.is_file("/etc/fstab") else ()
    return ImageFacts(ids=_ids(g), fstab=fstab, skeleton=skeleton, has_home=has_home)


def _inject_one(g, item: AgentDisks, data_dev: str, facts: ImageFacts) -> dict:
    """Root is mounted at /. Mount the data disk (a new one comes formatted) at /home/agent, extract one tar,
    unmount."""
    if not facts.has_home:
        g.mkdir_p(HOME)
    _mount_data(g, data_dev)
    try:
        # a long device timeout: under TCG on a busy host udev can take longer than systemd's default 90 s
        mount = f"LABEL={DATA_LABEL} {HOME} ext4 defaults,nofail,x-systemd.device-timeout=10min 0 2"
        fstab = WriteFile("/etc/fstab", ("\n".join(facts.fstab + (mount,) + item.fstab_extra) + "\n").encode(),
                          0o644)
        ops = (Mkdir(HOME, 0o750, "agent:agent"),) + item.ops + (fstab,)
        baseline = baseline_of(ops)
        record = json.dumps({**dict(item.meta), "injected_at": int(time.time()), "baseline": baseline}, indent=2,
                            sort_keys=True)
        ops += (WriteFile(vm_files.INJECTED_JSON, record.encode() + b"\n", 0o644),)
        # one tar_in per agent (skeleton, files, owners and modes) instead of several calls per file
        tar = _tar_of(ops, facts.ids, skeleton=facts.skeleton if item.seed_data else b"")
        _upload_from_memory(g, tar, "/", tar=True)
    finally:
        g.umount_all()
    return baseline


def _update_one(g, item: AgentDisks, data_dev: str) -> Injected:
    """Root (the agent's live overlay, the VM stopped) is mounted at /: write the files again over the data disk
    mounted at /home/agent, and a baseline that records them as they are now."""
    previous = _read_baseline(g)
    _mount_data(g, data_dev)
    try:
        ops = (Mkdir(HOME, 0o750, "agent:agent"),) + item.ops
        baseline = {**previous, **baseline_of(ops)}
        record = json.dumps({**dict(item.meta), "injected_at": int(time.time()), "baseline": baseline}, indent=2,
                            sort_keys=True)
        ops += (WriteFile(vm_files.INJECTED_JSON, record.encode() + b"\n", 0o644),)
        _upload_from_memory(g, _tar_of(ops, _ids(g)), "/", tar=True)
    finally:
        g.umount_all()
    return Injected(baseline, previous)


def _mount_data(g, data_dev: str) -> None:
    """The data disk at /home/agent. noinit_itable: a new ext4's inode tables are zeroed by the kernel in the
    background after its first mount (lazy init); in the appliance that thread would take the one emulated CPU from
    the next agents' work for a mount of a second. The guest's own mount does it, as it would have anyway."""
    g.mount_options("noinit_itable", data_dev, HOME)


def _read_baseline(g) -> dict:
    if not g.is_file(vm_files.INJECTED_JSON):
        return {}
    try:
        return json.loads(g.cat(vm_files.INJECTED_JSON)).get("baseline") or {}
    except ValueError:
        log.warning("guestfs: %s is not JSON; the new baseline starts afresh", vm_files.INJECTED_JSON)
        return {}


def read_injected(root_disk: Path, data_disk: Path, paths: list[str]) -> tuple[dict, dict[str, bytes]]:
    """Read-only, so the VM may keep running (--update --dry-run): the baseline of the last injection and the
    guest's current copies of `paths` (callers never pass a secret file's path)."""
    try:
        with appliance([Drive(root_disk, readonly=True), Drive(data_disk, readonly=True)]) as g:
            root_dev, data_dev = g.list_devices()[:2]
            g.mount_ro(root_dev + "1" if root_dev + "1" in g.list_partitions() else root_dev, "/")
            if g.is_dir(HOME):
                g.mount_ro(data_dev, HOME)
            baseline = _read_baseline(g)
            files = {p: g.read_file(p) for p in paths if g.is_file(p)}
            g.umount_all()
    except RuntimeError as e:
        raise CloneError(f"libguestfs (reading {root_disk.name}): {str(e).splitlines()[0][:300]}") from None
    return baseline, files


def _ids(g) -> dict[str, tuple[int, int]]:
    """owner name -> (uid, gid) from the image's own passwd and group files."""
    users = {f[0]: (int(f[2]), int(f[3])) for f in (ln.split(":") for ln in g.cat("/etc/passwd").splitlines()) if
             len(f) > 3}
    groups = {f[0]: int(f[2]) for f in (ln.split(":") for ln in g.cat("/etc/group").splitlines()) if len(f) > 2} \
        if g.is_file("/etc/group") else {}
    out = {}
    for user, (uid, gid) in users.items():
        for group, g_id in list(groups.items()) + [(user, gid)]:
            out[f"{user}:{group}"] = (uid, g_id)
    out.setdefault("root:root", (0, 0))
    return out


def _owner(ids: dict, owner: str, path: str) -> tuple[int, int]:
    if owner not in ids:
        raise CloneError(f"injection {path}: owner {owner} does not exist in the image")
    return ids[owner]


def _tar_of(ops: tuple[Op, ...], ids: dict, skeleton: bytes = b"") -> bytes:
    """The operations as one tar (paths relative to /, numeric owners, exact modes), after the skeleton's members
    re-rooted under home/agent. Parents of files must exist or come from an earlier Mkdir op (tar would create
    them root-owned 0755)."""
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        if skeleton:
            with tarfile.open(fileobj=io.BytesIO(skeleton)) as skel:
                for member in skel.getmembers():
                    name = member.name[2:] if member.name.startswith("./") else member.name
                    if name in ("", "."):
                        continue
                    member.name = HOME.lstrip("/") + "/" + name
                    tar.addfile(member, skel.extractfile(member) if member.isfile() else None)
        for op in ops:
            info = tarfile.TarInfo(op.path.lstrip("/"))
            info.uid, info.gid = _owner(ids, op.owner, op.path)
            info.uname = info.gname = ""
            info.mode, info.mtime = op.mode, now
            if isinstance(op, Mkdir):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                data = op.data()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _upload_from_memory(g, data: bytes, path: str, tar: bool = False) -> None:
    """Upload bytes (or extract a tar at path) through a memfd: no file on disk, and libguestfs's trace names only
    /proc/self/fd/N, never the content."""
    fd = os.memfd_create("agentfleet-inject", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        if tar:
            g.tar_in(f"/proc/self/fd/{fd}", path)
        else:
            g.upload(f"/proc/self/fd/{fd}", path)
    finally:
        os.close(fd)


