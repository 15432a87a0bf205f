"""What the fleet tool runs on a hypervisor (`python -m deploy.fleet.hostside STEP ...` over SSH): small steps that
read or change only this host and answer one JSON object on stdout. The inventory is not needed here: the
workstation sends each step the paths and names it needs. Errors: one line on stderr, exit code 2.

Steps: probe (doctor's facts), agents (status's facts), push-begin / push-receive / push-publish (an image arriving
in pieces, verified, published manifest last), setup (prepare a fresh hypervisor), backup-send / backup-receive /
backup-remove (an agent backup leaving or arriving as a tar stream; send answers with the stream itself)."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Optional

HOST_FILE = Path("/etc/agentfleet/host")
CODE_DIRS = ("deploy", "host", "agentd", "bake")     # what a clone on the host imports
CHUNK = 1 << 20
PART = ".part"          # an image file being received: `.agent-<v>.qcow2.part`, never matched by the clone's globs


class HostStepError(Exception):
    """A step's failure on this host: one line, the workstation prefixes the host's name."""


def code_version(root: Path) -> str:
    """A hash of the agentfleet code the clone runs (its .py files), equal on the workstation and a host that
    holds the same checkout: doctor's "expected version"."""
    h = hashlib.sha256()
    for d in CODE_DIRS:
        for path in sorted((root / d).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def host_file() -> Path:
    """host.identity.host_file(), repeated on purpose: `fleet setup` runs this file alone on a host that has no
    agentfleet checkout yet, so it imports nothing of ours."""
    return Path(os.environ.get("AGENTFLEET_HOST_FILE") or HOST_FILE)


def published(images: Path) -> list[str]:
    """Versions published here: the manifest in place and every file of its chain with the manifest's size (a qcow2
    without its manifest is not published; nor is an app layer without its base layer, whose clone would fail on
    the missing backing file)."""
    manifests = sorted(images.glob("agent-*.manifest.json"), key=lambda p: p.stat().st_mtime)
    return [v for v in (m.name[len("agent-"):-len(".manifest.json")] for m in manifests) if is_published(images, v)]


def is_published(images: Path, version: str) -> bool:
    """bake/publish.py reads the manifest and checks the chain (sizes, backing names): one reader of the format.
    Imported here, not at the top: `setup` runs this file alone on a host without our code."""
    from bake import publish
    from bake.errors import BakeError
    manifest = images / f"agent-{version}.manifest.json"
    if not manifest.exists():
        return False
    try:
        publish.check_published(publish.load(manifest), full=False)
    except BakeError:
        return False
    return True


def free_bytes(path: Path) -> int:
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


# ------------------------------------------------------------------------------------------------------- probe
def probe(args) -> dict:
    facts: dict = {"agentfleet": code_version(Path.cwd()), "host_file": str(host_file())}
    try:
        facts["identity"] = host_file().read_text().strip()
    except OSError:
        facts["identity"] = None
    facts["libvirt"] = _libvirt_check(args.uri)
    facts["kvm"] = _kvm()
    storage = Path(args.storage)
    facts["storage_dir"] = str(storage)
    facts["storage_exists"] = storage.is_dir()
    facts["free_bytes"] = free_bytes(storage)
    facts["images"] = published(Path(args.images)) if Path(args.images).is_dir() else []
    return facts


def _libvirt_check(uri: str) -> dict:
    try:
        import libvirt
    except ImportError:
        return {"ok": False, "detail": "python3-libvirt is not installed"}
    try:
        libvirt.registerErrorHandler(lambda *_: None, None)
        conn = libvirt.openReadOnly(uri)
        try:
            return {"ok": True, "detail": f"{uri}: {conn.getType()} {conn.getLibVersion()}"}
        finally:
            conn.close()
    except libvirt.libvirtError as e:
        return {"ok": False, "detail": f"{uri}: {str(e).splitlines()[0]}"}


def _kvm() -> dict:
    """Cheap facts only (doctor must be fast): the accelerator override, the probe's cached verdict, /dev/kvm."""
    forced = os.environ.get("AGENTFLEET_ACCEL")
    if forced:
        return {"accel": forced, "detail": f"AGENTFLEET_ACCEL={forced}"}
    cache = Path(os.environ.get("AGENTFLEET_ACCEL_CACHE") or "/var/cache/agentfleet/accel.json")
    try:
        cached = json.loads(cache.read_text())
        return {"accel": cached.get("accel", "?"), "detail": cached.get("reason", "") + " (cached verdict)"}
    except (OSError, ValueError):
        pass
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        return {"accel": "kvm?", "detail": "/dev/kvm present, not probed yet (the first clone probes it)"}
    return {"accel": "tcg", "detail": "/dev/kvm missing: guests run under TCG (slow)"}


# ------------------------------------------------------------------------------------------------------ agents
def agents(args) -> dict:
    """Every agent this host holds state for (placed here or not) and every domain libvirt knows here."""
    state_dir = Path(args.state_dir)
    held = {}
    for path in sorted(state_dir.glob("*/state.json")) if state_dir.is_dir() else []:
        try:
            st = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        current = st.get("current") or {}
        held[path.parent.name] = {"image_version": current.get("image_version", ""),
                                  "previous": (st.get("previous") or {}).get("image_version", "")}
    domains = {}
    try:
        import libvirt
        libvirt.registerErrorHandler(lambda *_: None, None)
        conn = libvirt.openReadOnly(args.uri)
        try:
            names = {d.name(): d for d in conn.listAllDomains()}
            for name in set(held) | set(args.names or []):
                dom = names.get(name)
                domains[name] = _STATE.get(dom.state()[0], "other") if dom else "absent"
        finally:
            conn.close()
        libvirt_error = ""
    except Exception as e:  # libvirt missing or down: report it, keep what the state dir says
        libvirt_error = str(e).splitlines()[0] if str(e) else type(e).__name__
    return {"held": held, "domains": domains, "libvirt_error": libvirt_error}


_STATE = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shut off", 6: "crashed",
          7: "suspended"}


# -------------------------------------------------------------------------------------------------------- push
def _part(images: Path, name: str) -> Path:
    return images / f".{name}{PART}"


def _check_name(name: str) -> str:
    if "/" in name or not name.startswith("agent-") or name.startswith("."):
        raise HostStepError(f"not an image file name: {name!r}")
    return name


def push_begin(args) -> dict:
    """What is here for this version: published or not; each layer already here whole (by its final name, with the
    manifest's size: a file is renamed in only once verified, so it is not sent again; the base layer an earlier
    version brought, say); the bytes of each partial file (-1: received and verified, not yet renamed in); free
    space. A lower layer here with another size is refused: a published layer is never rewritten (the images on it
    would change under their clones)."""
    images = Path(args.images)
    images.mkdir(parents=True, exist_ok=True)
    if is_published(images, args.version):
        return {"published": True, "present": [], "partial": {}, "free_bytes": free_bytes(images)}
    layers = [_layer_arg(a) for a in args.layer]
    present = []
    for i, (name, size) in enumerate(layers):
        if not (images / name).exists():
            continue
        here = (images / name).stat().st_size
        if here == size:
            present.append(name)
        elif i < len(layers) - 1:
            raise HostStepError(_rewrite_refused(name, here, size))
    have = {}
    for name in [n for n, _ in layers if n not in present] + [_check_name(n) for n in args.files]:
        part, verified = _part(images, name), _verified(images, name)
        have[name] = -1 if verified.exists() else part.stat().st_size if part.exists() else 0   # -1: verified
    return {"published": False, "present": present, "partial": have, "free_bytes": free_bytes(images)}


def _layer_arg(arg: str) -> tuple[str, int]:
    """`NAME:SIZE`, one file of the image's chain as its manifest records it."""
    name, _, size = arg.rpartition(":")
    if not size.isdigit():
        raise HostStepError(f"not a layer NAME:SIZE: {arg!r}")
    return _check_name(name), int(size)


def _rewrite_refused(name: str, here: int, size: int) -> str:
    return (f"{name}: here with {here} bytes, the manifest says {size}; a layer other images back onto is never "
            f"rewritten: check it (bake verify) and remove it with the images on it")


def push_receive(args) -> dict:
    """Append standard input to the partial file from `offset` (what push-begin said was here). The whole file is
    hashed on the way (the part already here first), so a complete file is verified against the manifest's sha256
    without a second read; a mismatch removes the part (a corrupted copy must not be resumed from either)."""
    images = Path(args.images)
    name = _check_name(args.name)
    part = _part(images, name)
    digest = hashlib.sha256()
    hashing = _Hasher(digest)
    received = 0
    with open(part, "ab") as f:
        _lock(f, part)
        if f.tell() < args.offset:
            raise HostStepError(f"{part.name} has {f.tell()} bytes, the sender resumes at {args.offset}")
        f.truncate(args.offset)
        with open(part, "rb") as before:            # the part already here counts in the hash
            while chunk := before.read(4 * CHUNK):
                hashing.put(chunk)
        f.seek(args.offset)
        stdin = _big_pipe(sys.stdin.buffer)
        try:
            while chunk := stdin.read(4 * CHUNK):    # whole 4 MiB reads: fewer writes, queue hand-offs, wake-ups
                if args.offset + received + len(chunk) > args.size:
                    raise HostStepError(f"{name}: more bytes arrived than its {args.size}")
                f.write(chunk)
                hashing.put(chunk)
                received += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        except OSError as e:
            raise HostStepError(f"writing {part}: {e.strerror} after {received} bytes (kept; push again resumes)") \
                from None
        finally:
            hashing.close()
    size = args.offset + received
    if size < args.size:
        raise HostStepError(f"{name}: the stream ended at {size} of {args.size} bytes (kept; push again resumes)")
    if args.sha256 and digest.hexdigest() != args.sha256:
        part.unlink()
        raise HostStepError(f"{name}: sha256 {digest.hexdigest()[:12]}... differs from the manifest's "
                            f"{args.sha256[:12]}...; the corrupted copy was removed, push again")
    if args.sha256:
        os.replace(part, _verified(images, name))
    return {"received": received, "size": size}


def _lock(f, part: Path) -> None:
    """Two pushes appending to one part would interleave their bytes: the second one is refused."""
    import fcntl
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise HostStepError(f"{part.name}: another push is writing it right now") from None


def _big_pipe(stream):
    """A 1 MiB pipe buffer when stdin is a pipe (the default 64 KiB makes sshd and us take turns)."""
    import fcntl
    try:
        fcntl.fcntl(stream.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except OSError:
        pass
    return stream


class _Hasher:
    """sha256 in a second thread (hashlib releases the GIL), so hashing overlaps the pipe and the disk."""

    def __init__(self, digest):
        import queue
        import threading
        self.queue: "queue.Queue[Optional[bytes]]" = queue.Queue(maxsize=16)
        self.thread = threading.Thread(target=self._run, args=(digest,), daemon=True)
        self.thread.start()

    def _run(self, digest) -> None:
        while (chunk := self.queue.get()) is not None:
            digest.update(chunk)

    def put(self, chunk: bytes) -> None:
        self.queue.put(chunk)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()


def _verified(images: Path, name: str) -> Path:
    return images / f".{name}.verified"


def push_publish(args) -> dict:
    """Publish the version whose manifest is standard input. Every file of its chain, the base layer first, is here
    already (a lower layer is never rewritten; the version's own qcow2 is replaced by a verified copy that arrived)
    or received and verified; in a chain each layer's backing file (its qcow2 header) must be the layer before it,
    or nothing is published. The schema goes in before the image is visible, the layers base first, the manifest
    last. bake/publish.py reads the manifest: imported here, as `setup` runs this file alone on a bare host."""
    from bake import publish
    from bake.errors import BakeError
    images = Path(args.images)
    manifest_bytes = sys.stdin.buffer.read()
    try:
        manifest = publish.Manifest.from_json(json.loads(manifest_bytes), "the manifest sent")
    except ValueError:
        raise HostStepError("the manifest sent is not JSON") from None
    except BakeError as e:
        raise HostStepError(str(e)) from None
    version = args.version
    if manifest.version != version or manifest.name != "agent":
        raise HostStepError(f"the manifest sent is {manifest.name}-{manifest.version}'s, not agent-{version}'s")
    final_manifest = images / f"agent-{version}.manifest.json"
    chain = publish.Published(images / manifest.qcow2.file, final_manifest, manifest).chain
    moves = [_layer_source(images, final, want.size, top=i == len(chain) - 1) for i, (final, want) in enumerate(chain)]
    for i, (path, final) in enumerate(moves):
        try:
            found = publish.backing_mismatch(chain, i, path)
        except BakeError as e:
            raise HostStepError(f"{final.name}: {str(e).rpartition(': ')[2]}; nothing published") from None
        if found is not None:
            raise HostStepError(f"{final.name}: backing file {found[0] or '(none)'!r}, the manifest's chain says "
                                f"{found[1] or '(none)'!r}; nothing published")
    for extra in args.extra:              # the OpenClaw schema, before the image is visible
        part = _part(images, _check_name(extra))
        if part.exists():
            os.replace(part, images / extra)
    renamed = []
    for path, final in moves:             # base first: a layer is never in place before the one it backs onto
        if path != final:
            os.chmod(path, 0o644)         # libvirt's QEMU user reads the backing files
            os.replace(path, final)
            renamed.append(final.name)
    _fsync_dir(images)
    tmp = images / f".agent-{version}.manifest.json.tmp"
    with open(tmp, "wb") as f:
        f.write(manifest_bytes)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, final_manifest)       # last: now the version is published
    _fsync_dir(images)
    return {"published": version, "renamed": renamed}


def _layer_source(images: Path, final: Path, size: int, top: bool) -> tuple[Path, Path]:
    """(the file to publish as `final`, final): the one here, or the verified copy received (checked for size)."""
    name = _check_name(final.name)
    verified = _verified(images, name)
    if final.exists() and (not top or not verified.exists()):
        here = final.stat().st_size
        if here != size:
            raise HostStepError(_rewrite_refused(name, here, size) if not top else
                                f"{name}: here with {here} bytes, the manifest says {size}; push again")
        verified.unlink(missing_ok=True)  # a copy an interrupted push left: this one stays
        return final, final
    if not verified.exists():
        raise HostStepError(f"{name}: no verified copy here; push again")
    if verified.stat().st_size != size:
        verified.unlink()
        raise HostStepError(f"{name}: the verified copy here is not the manifest's size; removed, push again")
    return verified, final


def _fsync_dir(path: Path) -> None:
    dirfd = os.open(path, os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


# ------------------------------------------------------------------------------------------------------- setup
CLONE_PACKAGES = ("qemu-system-x86", "qemu-utils", "libvirt-daemon-system", "libvirt-clients", "python3-libvirt",
                  "python3-guestfs", "libguestfs-tools", "linux-image-amd64", "python3-venv", "openssh-client",
                  "netcat-openbsd")
VENV_PACKAGES = ("pyyaml>=6", "jsonschema>=4.17")   # the clone's only needs beyond Debian's python3 modules


def setup(args) -> dict:
    """Prepare this hypervisor: packages (clone side only), the bridge check, the identity file, the dirs."""
    done = []
    if args.packages:
        missing = [p for p in CLONE_PACKAGES if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p],
                                                               capture_output=True, text=True).stdout
                   != "install ok installed"]
        if missing:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                                        *missing]):
                proc = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
                if proc.returncode != 0:
                    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                    raise HostStepError(f"{' '.join(argv[:2])} failed: {tail}")
            done.append(f"installed {' '.join(missing)}")
        venv = Path(args.agentfleet) / ".venv"
        if not (venv / "bin" / "python").exists():
            for argv in (["python3", "-m", "venv", "--system-site-packages", str(venv)],
                         [str(venv / "bin" / "pip"), "install", "-q", *VENV_PACKAGES]):
                proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
                if proc.returncode != 0:
                    raise HostStepError(f"{argv[0]} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
            done.append(f"made {venv}")
    if args.bridge and not Path("/sys/class/net", args.bridge).exists():
        raise HostStepError(f"bridge {args.bridge} does not exist; create it (Debian: /etc/network/interfaces "
                            f"`auto {args.bridge}` / `iface {args.bridge} inet static` with `bridge_ports <nic>`; "
                            f"Ubuntu: a netplan `bridges: {{{args.bridge}: {{interfaces: [<nic>]}}}}`) "
                            f"and run setup again")
    path = host_file()
    current = path.read_text().strip() if path.exists() else None
    if current and current != args.name and not args.rename:
        raise HostStepError(f"{path} says this host is {current!r}, not {args.name!r} (--rename to change it)")
    if current != args.name:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(args.name + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        done.append(f"wrote {path}")
    for d, mode in ((args.storage, 0o711), (args.images, 0o755), (args.state_dir, 0o700)):
        p = Path(d)
        if not p.is_dir():
            p.mkdir(parents=True, mode=mode)
            done.append(f"made {p}")
        os.chmod(p, mode)   # storage: QEMU's user traverses it; images: reads them; state: host keys, root only
    return {"host": args.name, "done": done}


BACKUPS_DIR = ".agentfleet-backups"   # under the storage dir: agent backups on their way to or from the workstation
BACKUP_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}-[0-9]{8}T[0-9]{6}Z$")   # deploy/backup_manifest.py's names


def _backup_path(storage: str, name: str) -> Path:
    if not BACKUP_NAME.match(name):
        raise HostStepError(f"{name!r} is not the name of an agent backup")
    return Path(storage) / BACKUPS_DIR / name


def send_backup(root: Path, out) -> None:
    """A backup dir as a tar stream (members under its name), regular files and dirs only."""
    with tarfile.open(fileobj=out, mode="w|") as tar:
        tar.add(root, arcname=root.name, recursive=True)


def extract_backup(stream, partial: Path, name: str) -> None:
    """Unpack a backup's tar stream into `partial` (0700 dirs, 0600 files): members must be regular files or dirs
    under `name/`, nothing absolute, no `..`, no link (a stream from elsewhere must not write outside)."""
    partial.mkdir(mode=0o700)
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not parts or parts[0] != name or ".." in parts or Path(member.name).is_absolute():
                raise HostStepError(f"backup stream: {member.name!r} is not inside {name}/")
            target = partial.joinpath(*parts[1:])
            if member.isdir():
                target.mkdir(mode=0o700, exist_ok=True)
            elif member.isfile():
                source = tar.extractfile(member)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    shutil.copyfileobj(source, f, CHUNK)
                    f.flush()
                    os.fsync(f.fileno())
            else:
                raise HostStepError(f"backup stream: {member.name!r} is neither a file nor a directory")


def backup_send(args) -> None:
    root = _backup_path(args.storage, args.name)
    if not root.is_dir():
        raise HostStepError(f"no backup {root}")
    send_backup(root, sys.stdout.buffer)
    sys.stdout.buffer.flush()


def backup_receive(args) -> dict:
    """A backup arriving on stdin: unpacked beside its place, renamed in when whole (a cut stream leaves nothing)."""
    final = _backup_path(args.storage, args.name)
    final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(final.parent, 0o700)                       # host keys travel in it
    partial = final.with_name(".partial-" + args.name)
    shutil.rmtree(partial, ignore_errors=True)
    try:
        extract_backup(sys.stdin.buffer, partial, args.name)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return {"path": str(final)}


def backup_remove(args) -> dict:
    root = _backup_path(args.storage, args.name)
    existed = root.exists()
    if existed and not stat.S_ISDIR(root.lstat().st_mode):
        raise HostStepError(f"{root} is not a directory")
    shutil.rmtree(root, ignore_errors=True)
    return {"removed": str(root) if existed else ""}


# ---------------------------------------------------------------------------------------------------------- gc
def gc(args) -> dict:
    """fleet gc's step: bake/gc.py's collection of this host's images dir (deploy/fleet/gc_step.py), imported here
    and not at the top because `setup` runs this file alone on a host that has no checkout yet."""
    from deploy.fleet.gc_step import gc as step
    return step(args, HostStepError)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deploy.fleet.hostside", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    s = sub.add_parser("probe")
    s.add_argument("--uri", required=True)
    s.add_argument("--storage", required=True)
    s.add_argument("--images", required=True)
    s = sub.add_parser("agents")
    s.add_argument("--uri", required=True)
    s.add_argument("--state-dir", required=True)
    s.add_argument("names", nargs="*")
    s = sub.add_parser("push-begin")
    s.add_argument("--images", required=True)
    s.add_argument("--version", required=True)
    s.add_argument("--layer", action="append", default=[], help="NAME:SIZE, each file of the chain, the base first")
    s.add_argument("files", nargs="*", help="the other files (the schema)")
    s = sub.add_parser("push-receive")
    s.add_argument("--images", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--offset", type=int, required=True)
    s.add_argument("--size", type=int, required=True)
    s.add_argument("--sha256", default="", help="verify the complete file (the qcow2; the schema has none)")
    s = sub.add_parser("push-publish")
    s.add_argument("--images", required=True)
    s.add_argument("--version", required=True)
    s.add_argument("extra", nargs="*")
    s = sub.add_parser("setup")
    s.add_argument("--name", required=True)
    s.add_argument("--storage", required=True)
    s.add_argument("--images", required=True)
    s.add_argument("--state-dir", required=True)
    s.add_argument("--bridge", default="")
    s.add_argument("--agentfleet", required=True, help="the checkout (its .venv is made with --packages)")
    s.add_argument("--packages", action="store_true")
    s.add_argument("--rename", action="store_true")
    for step in ("backup-send", "backup-receive", "backup-remove"):
        s = sub.add_parser(step)
        s.add_argument("--storage", required=True)
        s.add_argument("--name", required=True)
    s = sub.add_parser("gc", help="collect images no agent here uses (deploy/fleet/gc_step.py)")
    s.add_argument("--images", required=True)
    s.add_argument("--storage", required=True)
    s.add_argument("--state-dir", required=True)
    s.add_argument("--keep", type=int, required=True)
    s.add_argument("--dry-run", action="store_true")
    return p


STEPS = {"probe": probe, "agents": agents, "push-begin": push_begin, "push-receive": push_receive,
         "push-publish": push_publish, "setup": setup, "backup-send": backup_send, "backup-receive": backup_receive,
         "backup-remove": backup_remove}
STEPS["gc"] = gc


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        answer = STEPS[args.step](args)
        if answer is not None:           # backup-send's answer is the stream it wrote
            print(json.dumps(answer))
        return 0
    except HostStepError as e:
        print(str(e), file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{e.filename or ''}: {e.strerror}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
