#!/usr/bin/env python3
"""Bake benchmark: a full bake by phase, a no-change rebake, and a one-pin bump as a ratio of the full bake.

Runs in a scratch build dir (downloads and the npm cache are shared with ./build, so the network is not measured;
DIB's and our base-tree caches start empty for the full bake). Prints figures; asserts nothing.
Usage: .venv/bin/python bench/bake.py [--keep]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bake import fetch, lock, pipeline  # noqa: E402
from bake.spec import load_spec  # noqa: E402

BUMP = ("version: 2026.9.2", "version: 2026.9.1")  # OpenClaw one release back: still accepts Node 22


def timed(fn):
    t0 = time.monotonic()
    result = fn()
    return result, time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the scratch build dir")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="agentfleet-bench-", dir=REPO / "build"))
    layout = pipeline.Layout(scratch)
    shared = pipeline.Layout(REPO / "build")
    layout.cache.mkdir(parents=True)
    for name in ("downloads", "tools", "npm"):
        if (shared.cache / name).exists():
            (layout.cache / name).symlink_to(shared.cache / name)
    images = scratch / "spec"
    shutil.copytree(REPO / "images", images)
    try:
        full, t_full = timed(lambda: pipeline.bake(images / "agent.yaml", layout, quiet=True))
        hit, t_hit = timed(lambda: pipeline.bake(images / "agent.yaml", layout, quiet=True))
        hit_v, t_hit_v = timed(lambda: pipeline.bake(images / "agent.yaml", layout, verify_checksum=True, quiet=True))
        spec_path = images / "agent.yaml"
        spec_path.write_text(spec_path.read_text().replace(*BUMP))
        spec = load_spec(spec_path)
        lock.resolve(spec, fetch.host_npm(spec, layout.downloads, layout.tools))  # `make lock`: not part of the bake
        bump, t_bump = timed(lambda: pipeline.bake(spec_path, layout, quiet=True))
        tree = full.image.manifest.tree_size
        qcow2 = full.image.manifest.qcow2.size
        print("full bake, by phase:")
        for phase, seconds in full.phases.items():
            print(f"  {seconds:7.1f} s  {phase}")
        print(f"  {t_full:7.1f} s  total")
        print(f"no-change rebake (cache hit, size check): {t_hit:.2f} s   = {t_hit / t_full:.4f} of a full bake")
        print(f"no-change rebake with --verify (sha256):   {t_hit_v:.2f} s   = {t_hit_v / t_full:.4f} of a full bake")
        print(f"one-pin bump (OpenClaw {BUMP[0].split()[-1]} -> {BUMP[1].split()[-1]}), base tree "
              f"{'reused' if bump.base_cache_hit else 'REBUILT'}: {t_bump:.1f} s = {t_bump / t_full:.2f} "
              f"of a full bake")
        for phase, seconds in bump.phases.items():
            print(f"  {seconds:7.1f} s  {phase}")
        print(f"qcow2 {qcow2 / 1e6:.0f} MB vs tree {tree / 1e6:.0f} MB: {qcow2 / tree:.2f} of the tree")
        print(json.dumps({"full_s": t_full, "hit_s": t_hit, "hit_verify_s": t_hit_v, "bump_s": t_bump,
                          "bump_ratio": t_bump / t_full, "qcow2_over_tree": qcow2 / tree}))
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
