"""Does KVM really work here? Decided by booting a guest, never by `/dev/kvm` existing or qemu staying alive.

Nested KVM fails in two ways: qemu aborts at once, or it **hangs** (the vCPU spins in the host kernel, the guest
prints nothing more, qemu burns a core forever). A qemu that merely stays alive proves nothing, so the probe boots
the host's own kernel (the one libguestfs's appliance uses) with no root disk: only a guest that runs the whole
kernel init reaches "Kernel panic - not syncing" (1-2 s under KVM). No such line within the deadline means KVM does
not work: fall back to TCG. The verdict is cached per host boot (`AGENTFLEET_ACCEL_CACHE`, default
`/var/cache/agentfleet/accel.json`) and `AGENTFLEET_ACCEL=kvm|tcg` overrides it.

Shared by the bake (guestfs) and the clone (libvirt domain type).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import selectors
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROBE_DEADLINE_S = 30.0  # a working KVM reaches the marker in about 1 s; TCG on a loaded 2-core box in about 10 s
PROBE_MARKER = b"Kernel panic - not syncing"  # printed only at the end of kernel init (no root disk given)
DEFAULT_CACHE = Path("/var/cache/agentfleet/accel.json")
ACCELS = ("kvm", "tcg")


@dataclass(frozen=True)
class ProbeResult:
    """What one probe boot showed: whether the guest reached the marker, how long it took, and why not."""
    reached_marker: bool
    seconds: float
    detail: str


@dataclass(frozen=True)
class Verdict:
    """The accelerator chosen for this host and the one-line reason a user sees."""
    accel: str  # "kvm" | "tcg"
    reason: str
    key: str = ""  # what the cached verdict is valid for (this boot, this qemu, this kernel)

    @property
    def kvm(self) -> bool:
        return self.accel == "kvm"


def probe_kernel() -> Path | None:
    """The newest readable host kernel (`linux-image-amd64` is a setup dependency; libguestfs boots it too)."""
    kernels = sorted(Path("/boot").glob("vmlinuz-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((k for k in kernels if os.access(k, os.R_OK)), None)


def probe_boot(accel: str, kernel: Path, deadline_s: float = PROBE_DEADLINE_S,
               extra_qemu_args: tuple[str, ...] = ()) -> ProbeResult:
    """Boot `kernel` under `accel` and wait for PROBE_MARKER on its serial console; qemu is killed in every case."""
    cpu = ["-cpu", "host"] if accel == "kvm" else []
    argv = ["qemu-system-x86_64", "-machine", f"accel={accel}", *cpu, "-nodefaults", "-display", "none",
            "-m", "256", "-no-reboot", "-monitor", "none", "-serial", "stdio", "-kernel", str(kernel),
            "-append", "console=ttyS0 panic=-1 root=/dev/agentfleet-probe-none", *extra_qemu_args]
    start = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except FileNotFoundError:
        return ProbeResult(False, 0.0, "qemu-system-x86_64 not found")
    seen = b""
    exited_by_itself = False
    try:
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while (left := deadline_s - (time.monotonic() - start)) > 0:
                if not sel.select(timeout=left):
                    continue
                chunk = proc.stdout.read(65536) or b""
                if not chunk:  # EOF: qemu is exiting; reap it so its exit code is known
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        pass
                    break
                seen = (seen + chunk)[-65536:]
                if PROBE_MARKER in seen:
                    return ProbeResult(True, time.monotonic() - start, "guest kernel finished its init")
        exited_by_itself = proc.poll() is not None
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    elapsed = time.monotonic() - start
    lines = [ln for ln in seen.decode(errors="replace").splitlines() if ln.strip()]
    if exited_by_itself:
        last = lines[-1].strip() if lines else "no output"
        return ProbeResult(False, elapsed, f"qemu exited with code {proc.returncode} ({last[:160]})")
    shown = f"{len(lines)} console lines" if lines else "no console output"
    return ProbeResult(False, elapsed, f"guest hung: {shown} within {deadline_s:.0f} s, never finished booting")


def _cache_path() -> Path:
    return Path(os.environ.get("AGENTFLEET_ACCEL_CACHE") or DEFAULT_CACHE)


def _cache_key(kernel: Path) -> str:
    """A verdict holds for one host boot with one qemu and one probe kernel (nested KVM can change across boots)."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = "unknown-boot"
    qemu = shutil.which("qemu-system-x86_64")
    qemu_id = f"{qemu}:{os.stat(qemu).st_mtime_ns}" if qemu else "no-qemu"
    return f"{boot_id}|{qemu_id}|{kernel}"


def _read_cached(key: str) -> Verdict | None:
    try:
        data = json.loads(_cache_path().read_text())
        verdict = Verdict(accel=data["accel"], reason=data["reason"], key=data["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return verdict if verdict.key == key and verdict.accel in ACCELS else None


def _write_cached(verdict: Verdict) -> None:
    """Best effort: a host where the cache cannot be written probes again next time (it costs seconds)."""
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(asdict(verdict)) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        log.debug("accel: verdict not cached at %s: %s", path, e)


def decide(deadline_s: float = PROBE_DEADLINE_S) -> Verdict:
    """The verdict for this host, without the per-process memo: override, then cache, then a probe boot."""
    forced = os.environ.get("AGENTFLEET_ACCEL", "")
    if forced in ACCELS:
        return Verdict(forced, f"AGENTFLEET_ACCEL={forced}")
    if forced:
        log.warning("accel: ignoring AGENTFLEET_ACCEL=%r (use kvm or tcg)", forced)
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Verdict("tcg", "/dev/kvm is missing or not accessible")
    kernel = probe_kernel()
    if kernel is None:
        return Verdict("tcg", "no /boot/vmlinuz-* to probe KVM with (install linux-image-amd64)")
    key = _cache_key(kernel)
    cached = _read_cached(key)
    if cached is not None:
        return Verdict(cached.accel, f"{cached.reason} (cached in {_cache_path()})", key)
    result = probe_boot("kvm", kernel, deadline_s)
    if result.reached_marker:
        verdict = Verdict("kvm", f"a probe guest booted under KVM in {result.seconds:.1f} s", key)
    else:
        verdict = Verdict("tcg", f"KVM probe failed: {result.detail}", key)
    _write_cached(verdict)
    return verdict


@functools.lru_cache(maxsize=1)
def verdict() -> Verdict:
    """decide(), once per process, logged once: which accelerator and why."""
    chosen = decide()
    if chosen.kvm:
        log.info("accel: KVM (%s)", chosen.reason)
    else:
        log.warning("accel: TCG, slow (%s); set AGENTFLEET_ACCEL=kvm to force KVM", chosen.reason)
    return chosen


def kvm_works() -> bool:
    return verdict().kvm


def domain_type() -> str:
    """libvirt domain type: `kvm` when it works, else `qemu` (TCG)."""
    return "kvm" if kvm_works() else "qemu"


def guestfs_env() -> dict[str, str]:
    """Environment for libguestfs: the direct backend, and TCG when KVM does not work."""
    env = {"LIBGUESTFS_BACKEND": "direct"}
    if not kvm_works():
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    return env


def apply_guestfs_env() -> None:
    """Set guestfs_env() in os.environ (libguestfs reads it at handle creation)."""
    os.environ.update(guestfs_env())
