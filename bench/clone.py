#!/usr/bin/env python3
"""Clone benchmark: time to clone one agent, and the eight-agent fleet in one run (one appliance launch), against
the usual way measured in the same run (full disk copy, then virt-sysprep and virt-customize per VM).

Goals: the fleet in at most 1.5x one agent's time; the fleet at least 15x faster than the usual way.
Uses the newest published image in --images (default build/images) when there is one, else (or with --synthetic) a
synthetic image carrying --tree-mb of data. Domains are started (that is part of a clone) and destroyed right after
each measurement. Besides the totals it prints the clone's own phases (its `-v` progress lines) for one agent and
for eight side by side, so where the fleet's extra time goes is read off one table; the host's load (`uptime`) is
printed before each measurement, since the figures are only comparable within one run. Prints figures; not a test.

    .venv/bin/python bench/clone.py [--images DIR | --synthetic] [--tree-mb 2048] [--usual-vms 1] [--rounds 1]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bake import publish as bake_publish  # noqa: E402
from host import accel  # noqa: E402
from tests.clone_support import (  # noqa: E402
    SEED_AGENTS,
    ensure_libvirtd,
    guest_root,
    libvirt_workdir,
    make_synthetic_image,
    publish,
    write_overlay,
    write_secrets,
)

FLEET = tuple(f"bench-{a}" for a in SEED_AGENTS)


# `clone: [00:03] inject: 8 agent(s) in one libguestfs launch done in 21.4s` -> ("inject", 21.4)
PHASE_DONE = re.compile(r"^clone: \[\d+:\d+\] (?P<label>.+) done in (?P<s>[\d.]+)s$")
# parts of the inject phase: `clone: guestfs: appliance up with 16 drives in 6.2s`, `clone: guestfs: athena: 24
# operations in 1.1s` (each agent's own calls), `clone: guestfs: appliance shut down (disks flushed) in 0.8s`
INJECT_PARTS = ((re.compile(r"^clone: guestfs: appliance up with \d+ drives in (?P<s>[\d.]+)s$"), "  (launch)"),
                (re.compile(r"^clone: guestfs: \S+: \d+ operations in (?P<s>[\d.]+)s$"), "  (agents' calls)"),
                (re.compile(r"^clone: guestfs: appliance shut down .* in (?P<s>[\d.]+)s$"), "  (shutdown)"))


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_cmd(label: str, argv: list[str], env: dict | None = None) -> tuple[float, str]:
    before = load()
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})})
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"bench: {label} failed: {proc.stderr.strip()[-500:]}")
    print(f"  {label:<34} {elapsed:7.1f} s   (load before: {before})", flush=True)
    return elapsed, proc.stderr


def timed(label: str, argv: list[str], env: dict | None = None) -> float:
    return run_cmd(label, argv, env)[0]


def phases_of(stderr: str, total: float) -> dict[str, float]:
    """The clone's phases from its -v progress lines (keyed by the label's first part: "prepare disks", "inject"),
    the parts of inject (launch, the agents' own calls, shutdown), and what lies outside every phase (interpreter
    start, inventory, secrets, schema checks, the result)."""
    out: dict[str, float] = {}
    for line in stderr.splitlines():
        if m := PHASE_DONE.match(line):
            key = m["label"].split(":")[0].strip()
            out[key] = out.get(key, 0) + float(m["s"])
        for pattern, key in INJECT_PARTS:
            if m := pattern.match(line):
                out[key] = out.get(key, 0) + float(m["s"])
    out["outside phases"] = total - sum(v for k, v in out.items() if not k.startswith(" "))
    return out


def phase_table(one: dict[str, float], eight: dict[str, float]) -> None:
    print(f"  {'phase':<26} {'one':>8} {'eight':>8} {'ratio':>7} {'+s/agent':>9}")
    keys = [k for k in dict.fromkeys([*one, *eight]) if not k.startswith(" ")]
    parts = [key for _, key in INJECT_PARTS]
    at = keys.index("inject") + 1 if "inject" in keys else len(keys)
    for key in keys[:at] + parts + keys[at:]:
        a, b = one.get(key, 0.0), eight.get(key, 0.0)
        ratio = f"{b / a:6.2f}x" if a > 0.05 else "      -"
        print(f"  {key:<26} {a:8.1f} {b:8.1f} {ratio:>7} {(b - a) / (len(FLEET) - 1):9.2f}")


def synthetic_image(work: Path, tree_mb: int) -> Path:
    """The test image plus tree_mb of file data, so copies and sysprep have real bytes to move."""
    path = work / "synthetic.qcow2"
    make_synthetic_image(path, size_mb=tree_mb + 512)
    with guest_root(path) as g:
        g.mkdir_p("/usr/share/tree")
        for i in range(0, tree_mb, 64):
            g.fill(0x5A + (i % 7), min(64, tree_mb - i) * 1024 * 1024, f"/usr/share/tree/blob{i // 64:03d}")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree-mb", type=int, default=2048, help="data in the synthetic image (no baked image)")
    p.add_argument("--usual-vms", type=int, default=1, help="VMs to really build the usual way (rest extrapolated)")
    p.add_argument("--rounds", type=int, default=1,
                   help="one agent, then eight, this many times (a busy host's noise; medians reported). Host keys "
                        "are kept in the state dir across rounds, so only round 1 generates them")
    p.add_argument("--images", type=Path, default=ROOT / "build/images",
                   help="published images dir whose newest agent image is used (default build/images)")
    p.add_argument("--synthetic", action="store_true", help="use the synthetic image even when one is published")
    args = p.parse_args()
    ensure_libvirtd()
    work = libvirt_workdir("bench-clone-")
    try:
        baked = bake_publish.newest(args.images, "agent") if args.images.is_dir() and not args.synthetic else None
        if baked:
            version, images, golden = baked.version, baked.qcow2.parent, baked.qcow2
            for d in (images, *images.parents):
                if d != Path("/"):
                    d.chmod(d.stat().st_mode | 0o711)
            print(f"image: baked {golden.name} ({golden.stat().st_size / 2**30:.2f} GiB)")
        else:
            print(f"image: synthetic, {args.tree_mb} MB tree (no baked image published)")
            golden = synthetic_image(work, args.tree_mb)
            version, images = "bench", work / "images"
            golden = publish(golden, images, version)
        print(f"accel: {'KVM' if accel.kvm_works() else 'TCG (KVM does not work here)'}")
        secrets = write_secrets(work / "secrets.yaml", FLEET)
        overlay = write_overlay(work / "overlay.yaml", work=work, images_dir=images, secrets_file=secrets,
                                collector_port=18998, ssh_port_base=22500, agents=FLEET, ram_gb=2)
        cli = [str(ROOT / ".venv/bin/python"), str(ROOT / "deploy/clone.py"), "--overlay", str(overlay),
               "--image", version]

        print("agentfleet clone (overlay + one guestfs launch + libvirt define/start):")
        ones, fleets = [], []
        for round_no in range(1, args.rounds + 1):
            one, one_log = run_cmd("one agent", cli + ["-v", FLEET[0]])
            timed("(destroy)", cli + [FLEET[0], "--destroy", "--purge-data"])
            fleet, fleet_log = run_cmd("eight agents, one run", cli + ["-v", *FLEET])
            timed("(destroy)", cli + list(FLEET) + ["--destroy", "--purge-data"])
            print(f"clone phases, round {round_no} (seconds; +s/agent: what each agent past the first adds):")
            phase_table(phases_of(one_log, one), phases_of(fleet_log, fleet))
            print(f"  round {round_no}: eight agents = {fleet / one:.2f}x one agent")
            ones.append(one)
            fleets.append(fleet)
        one, fleet = statistics.median(ones), statistics.median(fleets)

        print("usual way per VM (full copy, virt-sysprep, virt-customize):")
        env = accel.guestfs_env()
        per_vm = []
        for i in range(args.usual_vms):
            vm = work / f"usual-{i}.qcow2"
            # a chain (the layered default) is flattened into the VM's own file: the usual way has no layers
            copy = timed("copy", ["qemu-img", "convert", "-O", "qcow2", str(golden), str(vm)]
                         if bake_publish.backing_name(golden) else ["cp", "--sparse=always", str(golden), str(vm)])
            sysprep = timed("virt-sysprep", ["virt-sysprep", "-q", "-a", str(vm)], env)
            customize = timed("virt-customize", [
                "virt-customize", "-q", "-a", str(vm), "--hostname", f"usual-{i}",
                "--write", f"/etc/hosts:127.0.0.1 localhost usual-{i}",
                "--write", "/etc/agentfleet/identity.json:{}", "--write", "/etc/agentfleet/agentd.yaml:agent: x",
                "--mkdir", "/home/agent/.openclaw", "--write", "/home/agent/.openclaw/openclaw.json:{}"], env)
            per_vm.append(copy + sysprep + customize)
            vm.unlink()
        usual = sum(per_vm) / len(per_vm)
        usual_fleet = usual * len(FLEET)
        print("results:")
        each = f" (median of {len(ones)} rounds)" if len(ones) > 1 else ""
        print(f"  one agent                          {one:7.1f} s{each}")
        print(f"  eight agents                       {fleet:7.1f} s  = {fleet / one:.2f}x one agent (goal <= 1.5x)"
              + (f"; by round: {', '.join(f'{f / o:.2f}x' for o, f in zip(ones, fleets))}" if len(ones) > 1 else ""))
        print(f"  usual way, one VM                  {usual:7.1f} s  (mean of {len(per_vm)})")
        print(f"  usual way, eight VMs               {usual_fleet:7.1f} s  "
              f"({len(per_vm)} measured, rest x{usual:.1f} s)")
        print(f"  fleet speed-up over the usual way  {usual_fleet / fleet:7.1f}x (goal >= 15x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
