#!/usr/bin/env python3
"""Does a chain slow the guest? Boots a throwaway overlay of a flat image and of the layered image of the same
version (the same files: tests/test_bake_layers.py checks it), alternately, and times each boot from qemu's start
to the console's login prompt (with agentd's first start, which needs a clone's config and says so, behind it).
Issue 17's goal: the layered image within 5 % of the flat one. Prints the medians and their ratio; not a test.

Under TCG a boot's time varies by several percent from run to run on a shared machine: the rounds alternate the two
images so that a change of load hits both, and the ratio of medians is what to read.

    .venv/bin/python bench/layered_boot.py --flat build/flat-small-images/agent-V.qcow2 \\
        --layered build/small-images/agent-V.qcow2 [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bake import publish  # noqa: E402
from host.accel import kvm_works  # noqa: E402
from host.run import run  # noqa: E402

DEADLINE_S = 900


def boot_seconds(image: Path, work: Path, accel: str) -> float:
    """qemu's start to the login prompt on the serial console, on a fresh overlay of `image`."""
    overlay, console = work / "boot.qcow2", work / "console.log"
    overlay.unlink(missing_ok=True)
    console.unlink(missing_ok=True)
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image.resolve()), str(overlay)])
    started = time.monotonic()
    qemu = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", accel, "-m", "1024", "-smp", "1", "-nodefaults", "-display", "none",
         "-drive", f"file={overlay},if=virtio,format=qcow2", "-nic", "none", "-serial", f"file:{console}",
         "-no-reboot"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while time.monotonic() - started < DEADLINE_S:
            if console.exists() and "login:" in console.read_text(errors="replace"):
                return time.monotonic() - started
            if qemu.poll() is not None:
                sys.exit(f"bench: qemu exited on {image.name}: {qemu.stderr.read().decode()[-300:]}")
            time.sleep(0.5)
        sys.exit(f"bench: {image.name}: no login prompt within {DEADLINE_S} s")
    finally:
        qemu.kill()
        qemu.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flat", type=Path, required=True, help="a flat published image (.qcow2)")
    p.add_argument("--layered", type=Path, required=True, help="the layered image of the same version")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    flat, layered = publish.beside(args.flat), publish.beside(args.layered)
    if flat is None or layered is None:
        sys.exit("bench: both images must be published (their manifests beside them)")
    if flat.manifest.layers or not layered.manifest.layers:
        sys.exit("bench: --flat must name a flat image and --layered a layered one")
    accel = "kvm" if kvm_works() else "tcg"
    times: dict[str, list[float]] = {"flat": [], "layered": []}
    with tempfile.TemporaryDirectory(prefix="layered-boot-") as tmp:
        for round_ in range(args.rounds):
            for name, image in (("flat", flat), ("layered", layered))[::1 if round_ % 2 == 0 else -1]:
                seconds = boot_seconds(image.qcow2, Path(tmp), accel)
                times[name].append(seconds)
                print(f"round {round_ + 1}: {name:8s} {seconds:6.1f} s", file=sys.stderr, flush=True)
    f, la = statistics.median(times["flat"]), statistics.median(times["layered"])
    print(f"boot to the login prompt ({accel}, {args.rounds} rounds each, alternating; "
          f"{len(layered.manifest.layers)} files in the chain): flat {f:.1f} s, layered {la:.1f} s: "
          f"{la / f:.3f}x the flat (goal <= 1.05x)")
    print("  flat:    " + ", ".join(f"{t:.1f}" for t in times["flat"]))
    print("  layered: " + ", ".join(f"{t:.1f}" for t in times["layered"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
