#!/usr/bin/env python3
"""Bake benchmark: a full bake by phase, a no-change rebake, and a one-pin bump as a ratio of the full bake.

Runs in a scratch build dir (downloads and the npm cache are shared with ./build, so the network is not measured;
DIB's and our base-tree caches start empty for the full bake, unless --reuse-base-tree). Prints figures; asserts
nothing.
Layered (the default, issue 17): the full bake and the bump are layered (the bump stacks its app layer on the first
version), and a flat bake of the first version is made too (its qcow2 is what a host without layers receives): the
bump's time is a ratio of the full layered bake in the same run, and the bump's new app layer, all a host with the
previous image needs, a ratio of the flat image's bytes. --flat: everything flat, as before layers.
--spec agent-small.yaml: the small image, whose bump is a file of the agentd element (it pins nothing).
Usage: .venv/bin/python bench/bake.py [--keep] [--flat] [--spec agent-small.yaml] [--reuse-base-tree]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bake import fetch, lock, pipeline  # noqa: E402
from bake.spec import load_spec  # noqa: E402

# the AWS CDK CLI one release back (OpenClaw cannot go back alone: its pinned Mattermost plugin needs >= 2026.9.2)
BUMP = ("version: 2.1148.1", "version: 2.1148.0")
# the small image pins nothing: its app-stage bump is a file the agentd element writes into the image
SMALL_BUMP = ("elements/agentd/install.d/40-agentd",
              ("# agentfleet: agentd's command line", "# agentfleet: agentd's command line, bumped"))


def timed(fn):
    t0 = time.monotonic()
    result = fn()
    return result, time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the scratch build dir")
    parser.add_argument("--flat", dest="layered", action="store_false", help="bake flat (one qcow2), as before layers")
    parser.add_argument("--spec", default="agent.yaml", help="the spec under images/ (agent.yaml, agent-small.yaml)")
    parser.add_argument("--reuse-base-tree", action="store_true",
                        help="link ./build's cached base trees in: the full bake skips the DIB base stage")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="agentfleet-bench-", dir=REPO / "build"))
    layout = pipeline.Layout(scratch)
    shared = pipeline.Layout(REPO / "build")
    layout.cache.mkdir(parents=True)
    for name in ("downloads", "tools", "npm"):
        if (shared.cache / name).exists():
            (layout.cache / name).symlink_to(shared.cache / name)
    if args.reuse_base_tree:
        layout.base_trees.mkdir()
        for tar in shared.base_trees.glob("*.tar"):
            os.link(tar, layout.base_trees / tar.name)
    images = scratch / "spec"
    shutil.copytree(REPO / "images", images)
    spec_path = images / args.spec
    try:
        full, t_full = timed(lambda: pipeline.bake(spec_path, layout, quiet=True, layered=args.layered))
        hit, t_hit = timed(lambda: pipeline.bake(spec_path, layout, quiet=True, layered=args.layered))
        hit_v, t_hit_v = timed(lambda: pipeline.bake(spec_path, layout, verify_checksum=True, quiet=True,
                                                     layered=args.layered))
        flat = t_flat = None
        if args.layered:
            flat_layout = pipeline.Layout(scratch, scratch / "flat-images")
            flat, t_flat = timed(lambda: pipeline.bake(spec_path, flat_layout, quiet=True, layered=False))
        if spec_path.name == "agent.yaml":
            spec_path.write_text(spec_path.read_text().replace(*BUMP))
            spec = load_spec(spec_path)
            lock.resolve(spec, fetch.host_npm(spec, layout.downloads, layout.tools))  # `make lock`: not the bake's
            bumped = f"aws-cdk {BUMP[0].split()[-1]} -> {BUMP[1].split()[-1]}"
        else:
            path, edit = SMALL_BUMP
            (images / path).write_text((images / path).read_text().replace(*edit))
            bumped = f"a line of {path}"
        bump, t_bump = timed(lambda: pipeline.bake(spec_path, layout, quiet=True, layered=args.layered))
        tree = full.image.manifest.tree_size
        qcow2 = full.image.manifest.qcow2.size
        print(f"full {'layered ' if args.layered else ''}bake of {args.spec}, by phase:")
        for phase, seconds in full.phases.items():
            print(f"  {seconds:7.1f} s  {phase}")
        print(f"  {t_full:7.1f} s  total")
        print(f"no-change rebake (cache hit, size check): {t_hit:.2f} s   = {t_hit / t_full:.4f} of a full bake")
        print(f"no-change rebake with --verify (sha256):   {t_hit_v:.2f} s   = {t_hit_v / t_full:.4f} of a full bake")
        print(f"one-pin bump ({bumped}), base tree {'reused' if bump.base_cache_hit else 'REBUILT'}"
              + (f", base layer {'reused' if bump.base_layer_hit else 'REBUILT'}" if args.layered else "")
              + f": {t_bump:.1f} s = {t_bump / t_full:.2f} of a full bake")
        for phase, seconds in bump.phases.items():
            print(f"  {seconds:7.1f} s  {phase}")
        figures = {"full_s": t_full, "hit_s": t_hit, "hit_verify_s": t_hit_v, "bump_s": t_bump,
                   "bump_ratio": t_bump / t_full}
        if args.layered:
            app_layer, flat_bytes = bump.image.manifest.qcow2.size, flat.image.manifest.qcow2.size
            base_layer = full.image.manifest.layers[0].size
            print(f"flat bake of the first version (base tree cached, what a bump cost before layers): "
                  f"{t_flat:.1f} s; the layered bump is {t_bump / t_flat:.2f} of it")
            print(f"bytes a bump sends a host that has the previous image (the new app layer): "
                  f"{app_layer / 1e6:.1f} MB = {app_layer / flat_bytes:.4f} of the flat image "
                  f"({flat_bytes / 1e6:.0f} MB); base layer {base_layer / 1e6:.0f} MB, sent once per base")
            figures |= {"flat_s": t_flat, "bump_over_flat_bake": t_bump / t_flat, "app_layer_bytes": app_layer,
                        "flat_bytes": flat_bytes, "base_layer_bytes": base_layer,
                        "app_layer_over_flat": app_layer / flat_bytes}
        else:
            print(f"qcow2 {qcow2 / 1e6:.0f} MB vs tree {tree / 1e6:.0f} MB: {qcow2 / tree:.2f} of the tree")
            figures["qcow2_over_tree"] = qcow2 / tree
        print(json.dumps(figures))
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
