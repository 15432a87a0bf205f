"""`fleet push [VERSION]`: send a published image (every file of its qcow2 chain, OpenClaw schema, manifest) to
every host that lacks it, all hosts at once.

Per host: ask what is there (push-begin); a host that has the version published costs one SSH round trip, and a
layer the host already holds (the base layer an earlier version on the same base brought) is not sent. Each file
streams over the host's SSH connection into a hidden `.part` from where the host's copy ends (a push killed or cut
midway resumes: only the rest travels). The host hashes while it writes and checks each layer against the
manifest's sha256; a mismatch removes the copy. Then push-publish checks the chain (each layer backed by the one
before it) and renames the files in, base first, the manifest last, so a half-sent image is never "the newest" on a
host. Progress per host (bytes, rate) goes to stderr."""
from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from deploy.errors import CloneError
from deploy.fleet.errors import FleetError, SshFailed
from deploy.fleet.ssh import SSH_FAILED, Ssh, check_remote, each_host, explain, kill_group, remote_python
from deploy.images import find_image
from deploy.inventory import Host, Inventory

CHUNK = 4 << 20
FREE_MARGIN = 1 << 30          # leave a GiB on the host's disk beyond the image


@dataclass(frozen=True)
class SourceFile:
    name: str
    path: Path
    size: int
    sha256: str = ""           # a layer's, from the manifest; the schema has none
    what: str = "schema"       # image (a flat qcow2) | base layer | app layer | layer N | schema: what a person reads

    @property
    def layer(self) -> bool:
        return self.what != "schema"


@dataclass(frozen=True)
class Source:
    version: str
    files: tuple[SourceFile, ...]   # the chain, base layer first, then the schema
    manifest: bytes

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def layers(self) -> tuple[SourceFile, ...]:
        return tuple(f for f in self.files if f.layer)


@dataclass
class HostPush:
    host: str
    result: str                 # present | pushed | failed
    bytes_sent: int = 0
    seconds: float = 0.0
    error: str = ""
    bytes_skipped: int = 0      # layers the host already held whole (a base layer shared with an earlier version)
    # what each file of the chain is (SourceFile.what: base layer, app layer; image when flat), base first
    layers_sent: list[str] = field(default_factory=list)       # travelled in this push (or a resumed earlier one)
    layers_present: list[str] = field(default_factory=list)    # already in the host's images dir: not sent

    @property
    def travelled(self) -> str:
        """What went over the wire, in words: "app layer; base layer already there"."""
        return "; ".join(filter(None, (", ".join(self.layers_sent),
                                       f"{', '.join(self.layers_present)} already there" if self.layers_present
                                       else "")))

    @property
    def rate_mbps(self) -> float:
        return self.bytes_sent / self.seconds / 1e6 if self.seconds else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "rate_mbps": round(self.rate_mbps, 1)}


def source(inv: Inventory, version: Optional[str]) -> Source:
    """The published image on this workstation: every file of its chain, the base layer first, with the size and
    sha256 its manifest records (checked on the host as it arrives), then the schema."""
    try:
        image = find_image(inv.images_dir, version)
    except CloneError as e:
        raise FleetError(str(e)) from None
    chain = image.chain
    files = []
    for i, (path, want) in enumerate(chain):
        if not path.exists():
            raise FleetError(f"image {image.version}: {path} is listed by its manifest but missing")
        if path.stat().st_size != want.size:
            raise FleetError(f"image {image.version}: {path} is not the size its manifest says")
        files.append(SourceFile(path.name, path, want.size, want.sha256, _what(i, len(chain))))
    if image.schema_path is not None:
        files.append(SourceFile(image.schema_path.name, image.schema_path, image.schema_path.stat().st_size))
    return Source(image.version, tuple(files), image.manifest_path.read_bytes())


def _what(i: int, n: int) -> str:
    if n == 1:
        return "image"
    return "base layer" if i == 0 else "app layer" if i == n - 1 else f"layer {i + 1}"


class Progress:
    """One line per host on stderr, at most every `every_s`: bytes so far of what it needs, and the rate."""

    def __init__(self, enabled: bool, every_s: float = 1.0):
        self.enabled, self.every_s = enabled, every_s
        self.lock = threading.Lock()
        self.last: dict[str, float] = {}

    def __call__(self, host: str, done: int, total: int, started: float, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last.get(host, 0) < self.every_s):
            return
        self.last[host] = now
        rate = done / max(now - started, 1e-6) / 1e6
        with self.lock:
            print(f"push {host}: {done / 1e6:.1f}/{total / 1e6:.1f} MB, {rate:.1f} MB/s", file=sys.stderr, flush=True)

    def note(self, host: str, text: str) -> None:
        """Once per host, before its stream: what will travel and what the host already holds."""
        if self.enabled:
            with self.lock:
                print(f"push {host}: {text}", file=sys.stderr, flush=True)


def push_host(ssh: Ssh, host: Host, src: Source, progress: "Progress", limit_bps: float = 0) -> HostPush:
    images = str(host.host_images_dir)
    begin = check_remote(ssh.run(host, _hostside(host, "push-begin", "--images", images, "--version", src.version,
                                                 *(f"--layer={f.name}:{f.size}" for f in src.layers),
                                                 *(f.name for f in src.files if not f.layer)), timeout=60),
                         host, "push-begin")
    state = json.loads(begin.stdout)
    if state["published"]:
        return HostPush(host.name, "present")
    present = [f for f in src.files if f.name in state["present"]]
    todo = [f for f in src.files if f not in present]
    have = {}                                     # bytes already on the host per file; -1: complete and verified
    for f in todo:
        n = state["partial"].get(f.name, 0)
        have[f.name] = 0 if n > f.size else n
    need = sum(f.size - have[f.name] for f in todo if have[f.name] != -1)
    if need + FREE_MARGIN > state["free_bytes"]:
        raise FleetError(f"{host.name}: push of {src.version} needs {need / 1e9:.1f} GB (+1 GB margin) in {images}, "
                         f"{state['free_bytes'] / 1e9:.1f} GB free")
    result = HostPush(host.name, "pushed", bytes_skipped=sum(f.size for f in present),
                      layers_sent=[f.what for f in todo if f.layer], layers_present=[f.what for f in present])
    progress.note(host.name, f"{need / 1e6:.1f} MB to send ({result.travelled})")
    started = time.monotonic()
    sent = 0
    for f in todo:
        if have[f.name] == -1:
            continue                              # received and verified by an earlier push, not yet published
        sent += _stream(ssh, host, f, have[f.name], images,
                        lambda n, before=sent: progress(host.name, before + n, need, started), limit_bps)
    check_remote(ssh.run(host, _hostside(host, "push-publish", "--images", images, "--version", src.version,
                                         *(f.name for f in src.files if not f.layer)), stdin=src.manifest,
                         timeout=120), host, "publish")
    result.seconds = time.monotonic() - started
    result.bytes_sent = sent
    progress(host.name, sent, need, started, final=True)
    return result


def _hostside(host: Host, *args: str) -> list[str]:
    return remote_python(host, ["-m", "deploy.fleet.hostside", *args], site=False)


def _stream(ssh: Ssh, host: Host, f: SourceFile, offset: int, images: str, tick: Callable[[int], None],
            limit_bps: float, stall_s: float = 120) -> int:
    """Send f from offset into the host's part; the host verifies it when complete. Returns the bytes sent."""
    remote = _hostside(host, "push-receive", "--images", images, "--name", f.name, "--offset", str(offset),
                       "--size", str(f.size), *(["--sha256", f.sha256] if f.sha256 else []))
    proc = ssh.popen(host, remote)
    errors: list[bytes] = []
    drain = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)  # never a full pipe
    drain.start()
    sent = 0
    started = time.monotonic()
    watchdog = StallWatch(stall_s, lambda: kill_group(proc))      # a stalled link never hangs the push
    try:
        with open(f.path, "rb") as data:
            data.seek(offset)
            try:
                while chunk := data.read(CHUNK):
                    proc.stdin.write(chunk)
                    sent += len(chunk)
                    tick(sent)
                    watchdog.progress()
                    if limit_bps:
                        ahead = sent / limit_bps - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)
                proc.stdin.close()
            except BrokenPipeError:
                pass                               # the host stopped reading: its stderr says why
        # the host hashes what it already held before it reads the stream; wait for its verdict
        proc.wait(timeout=max(600, f.size / 50e6))
        drain.join()
    except BaseException:
        kill_group(proc)
        proc.wait()
        raise
    finally:
        watchdog.stop()
    text = b"".join(errors).decode(errors="replace")
    if proc.returncode == SSH_FAILED:
        raise SshFailed(explain(host, text, ssh.config.known_hosts))
    if proc.returncode != 0:
        tail = text.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise FleetError(f"{host.name}: push of {f.name} failed: {tail[0]}")
    return sent


class StallWatch:
    """Calls on_stall when progress() was not called for stall_s seconds: one thread per stream, not a timer per
    chunk."""

    def __init__(self, stall_s: float, on_stall: Callable[[], None]):
        self.stall_s, self.on_stall = stall_s, on_stall
        self.last = time.monotonic()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def progress(self) -> None:
        self.last = time.monotonic()

    def _run(self) -> None:
        while not self.done.wait(min(5.0, self.stall_s)):
            if time.monotonic() - self.last > self.stall_s:
                self.on_stall()
                return

    def stop(self) -> None:
        self.done.set()


def render(version: str, results: Sequence[HostPush]) -> str:
    lines = [f"image {version}", f"{'HOST':<8}  {'RESULT':<8}  {'SENT':>10}  {'TIME':>7}  {'RATE':>10}"]
    for r in results:
        if r.result == "failed":
            lines.append(f"{r.host:<8}  FAILED    {r.error}")
            continue
        if r.result == "present":
            lines.append(f"{r.host:<8}  present   (already published there: nothing sent)")
            continue
        lines.append(f"{r.host:<8}  {r.result:<8}  {r.bytes_sent / 1e6:>7.1f} MB  {r.seconds:>5.1f} s  "
                     f"{r.rate_mbps:>6.1f} MB/s  ({r.travelled})")
    return "\n".join(lines)


def push(ssh: Ssh, hosts: Sequence[Host], src: Source, progress: "Progress", limit_bps: float = 0) -> list[HostPush]:
    outcomes = each_host(hosts, lambda h: push_host(ssh, h, src, progress, limit_bps))
    return [o.value if o.ok else HostPush(o.host, "failed", error=o.error) for o in outcomes.values()]


def main(args, inv: Inventory, ssh: Ssh, hosts: Sequence[Host]) -> int:
    src = source(inv, args.version)
    results = push(ssh, hosts, src, Progress(enabled=not args.json), args.limit_mbps * 1e6)
    if args.json:
        print(json.dumps({"version": src.version, "hosts": [r.to_json() for r in results]}, indent=2))
    else:
        print(render(src.version, results))
    for r in results:
        if r.result == "failed":
            print(f"fleet: {r.error}", file=sys.stderr)
    return 2 if any(r.result == "failed" for r in results) else 0
