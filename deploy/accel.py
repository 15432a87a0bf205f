"""Does KVM really work here? `/dev/kvm` can exist while nested KVM crashes qemu on the first vCPU run, so we
probe with a short real qemu run (cached per process) and fall back to TCG with a warning.

Shared by the bake (guestfs) and the clone (libvirt domain type)."""
from __future__ import annotations

import functools
import logging
import os
import subprocess
import time

log = logging.getLogger(__name__)
PROBE_SECONDS = 1.5


@functools.lru_cache(maxsize=1)
def kvm_works() -> bool:
    """True when qemu with `-accel kvm -cpu host` survives PROBE_SECONDS (a broken nested KVM aborts at once)."""
    if os.environ.get("AGENTFLEET_ACCEL") in ("tcg", "kvm"):
        return os.environ["AGENTFLEET_ACCEL"] == "kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        log.warning("KVM: /dev/kvm not usable; using TCG (slow)")
        return False
    argv = ["qemu-system-x86_64", "-machine", "accel=kvm", "-cpu", "host", "-nodefaults", "-display", "none",
            "-m", "64", "-no-reboot", "-serial", "none", "-monitor", "none"]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except FileNotFoundError:
        log.warning("KVM: qemu-system-x86_64 not found; assuming TCG")
        return False
    deadline = time.monotonic() + PROBE_SECONDS
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
        return True
    err = (proc.stderr.read() or b"").decode(errors="replace").strip().splitlines()
    log.warning("KVM: qemu crashed under KVM (%s); using TCG (slow)", err[-1] if err else f"rc {proc.returncode}")
    return False


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
