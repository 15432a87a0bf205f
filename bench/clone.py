#!/usr/bin/env python3
"""Clone benchmark: time to clone one agent, and the eight-agent fleet in one run (one appliance launch), against
the usual way measured in the same run (full disk copy, then virt-sysprep and virt-customize per VM).

Goals: the fleet in at most 1.5x one agent's time; the fleet at least 10x faster than the usual way.
Uses the published baked image when there is one, else a synthetic image carrying --tree-mb of data. Domains are
started (that is part of a clone) and destroyed right after each measurement. Prints figures; not a test.

    .venv/bin/python bench/clone.py [--tree-mb 2048] [--usual-vms 1]
"""
from __future__ import annotations

import argparse
import os
import shutil
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


def timed(label: str, argv: list[str], env: dict | None = None) -> float:
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})})
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"bench: {label} failed: {proc.stderr.strip()[-500:]}")
    print(f"  {label:<34} {elapsed:7.1f} s", flush=True)
    return elapsed


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
    args = p.parse_args()
    ensure_libvirtd()
    work = libvirt_workdir("bench-clone-")
    try:
        baked = bake_publish.newest(ROOT / "build/images", "agent") if (ROOT / "build/images").is_dir() else None
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
        one = timed("one agent", cli + [FLEET[0]])
        timed("(destroy)", cli + [FLEET[0], "--destroy", "--purge-data"])
        fleet = timed("eight agents, one run", cli + list(FLEET))
        timed("(destroy)", cli + list(FLEET) + ["--destroy", "--purge-data"])

        print("usual way per VM (full copy, virt-sysprep, virt-customize):")
        env = accel.guestfs_env()
        per_vm = []
        for i in range(args.usual_vms):
            vm = work / f"usual-{i}.qcow2"
            copy = timed("copy", ["cp", "--sparse=always", str(golden), str(vm)])
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
        print(f"  one agent                          {one:7.1f} s")
        print(f"  eight agents                       {fleet:7.1f} s  = {fleet / one:.2f}x one agent (goal <= 1.5x)")
        print(f"  usual way, one VM                  {usual:7.1f} s  (mean of {len(per_vm)})")
        print(f"  usual way, eight VMs               {usual_fleet:7.1f} s  "
              f"({len(per_vm)} measured, rest x{usual:.1f} s)")
        print(f"  fleet speed-up over the usual way  {usual_fleet / fleet:7.1f}x (goal >= 10x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
