"""`python -m bake bake|lock|verify|list|diff|gc`: the bake's command line (also `python -m bake.cli`). Errors are one
line and a non-zero exit."""
from __future__ import annotations

import argparse
import calendar
import functools
import json
import sys
import time
from pathlib import Path

from bake.errors import BakeError, input_errors
from host import exit_codes
from host.errors import HostError

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bake", description="Bake the golden agent image from a pinned spec.")
    parser.add_argument("--build-dir", type=Path, default=REPO / "build", help="build dir (default: ./build)")
    parser.add_argument("--images-dir", type=Path, help="publish here instead of <build dir>/images (a variant such "
                        "as images/agent-small.yaml; the caches stay shared)")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bake", help="bake (or find in cache) the image of a spec")
    b.add_argument("spec", type=Path)
    b.add_argument("--verify", action="store_true", help="on a cache hit, also check the image's full sha256")
    b.add_argument("--dry-run", action="store_true", help="print what would be done, touch nothing")
    b.add_argument("--force", action="store_true", help="bake even if the version is already published")
    b.add_argument("--quiet", action="store_true", help="no progress lines (the log still has everything)")
    b.add_argument("--json", action="store_true", help="print the result as JSON")
    b.add_argument("--keep-work", action="store_true", help="keep a failed bake's work dir (build/work/<version>)")
    form = b.add_mutually_exclusive_group()
    form.add_argument("--layered", dest="layered", action="store_true", default=True,
                      help="publish a chain: a base layer baked once per base stage and thin app layers (the default; "
                           "docs/bake.md)")
    form.add_argument("--flat", dest="layered", action="store_false",
                      help="publish one self-contained qcow2 (for users who want a single file)")
    lk = sub.add_parser("lock", help="re-resolve the lock and OpenClaw's package-lock from the registry")
    lk.add_argument("spec", type=Path)
    v = sub.add_parser("verify", help="verify a published image offline (OS, pins, identity-free)")
    v.add_argument("image", type=Path)
    ls = sub.add_parser("list", help="list published images, newest last, with their base stage's age")
    ls.add_argument("--name", default="agent")
    ls.add_argument("--json", action="store_true", help="print the list as JSON")
    df = sub.add_parser("diff", help="package versions that differ between two published images")
    df.add_argument("a", metavar="A", help="a published version (or a .qcow2 with its manifest beside it)")
    df.add_argument("b", metavar="B", help="another one")
    df.add_argument("--name", default="agent")
    df.add_argument("--json", action="store_true", help="print the changes as JSON")
    gc = sub.add_parser("gc", help="remove old images no agent uses, base layers no kept image needs, leftovers",
                        description="Remove published images beyond the newest --keep that no agent disk's backing "
                        "chain uses and no agent's state names, then base layers no kept image needs, stale "
                        "leftovers and cached base layers beyond the cache's own limit (docs/bake.md).")
    gc.add_argument("--keep", type=_keep_count, default=3, metavar="N",
                    help="published images kept besides those in use (default 3)")
    gc.add_argument("--dry-run", action="store_true", help="print what would be removed; remove nothing")
    gc.add_argument("--json", action="store_true", help="print the plan and what was removed as JSON")
    gc.add_argument("--storage-dir", type=Path, action="append", default=[], metavar="DIR",
                    help="agents' disks here (every qcow2 in it) keep the images they back onto (repeatable; "
                    "required on a hypervisor, with --state-dir)")
    gc.add_argument("--state-dir", type=Path, action="append", default=[], metavar="DIR",
                    help="agents' states here (<DIR>/<agent>/state.json) keep the disks and images they name "
                    "(repeatable)")
    gc.add_argument("--name", default="agent", help="image name (default agent)")
    args = parser.parse_args(argv)
    from bake.pipeline import Layout
    layout = Layout(args.build_dir.resolve(), args.images_dir.resolve() if args.images_dir else None)
    try:
        return _COMMANDS[args.command](args, layout)
    except (BakeError, HostError) as e:  # a host tool's failure is the bake's at this edge (lock, verify)
        print(f"bake: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", exit_codes.FAILED)
    except KeyboardInterrupt:
        print("bake: interrupted; nothing was published", file=sys.stderr)
        return exit_codes.INTERRUPTED


def _bake(args, layout) -> int:
    from bake import pipeline
    if args.dry_run:
        print("\n".join(pipeline.dry_run(args.spec, layout, layered=args.layered)))
        return exit_codes.OK
    outcome = pipeline.bake(args.spec, layout, verify_checksum=args.verify, force=args.force, quiet=args.quiet,
                             keep_work=args.keep_work, layered=args.layered)
    if args.json:
        print(json.dumps({"image": str(outcome.image.qcow2), "version": outcome.image.version,
                          "cache_hit": outcome.cache_hit, "base_cache_hit": outcome.base_cache_hit,
                          "base_layer_hit": outcome.base_layer_hit,
                          "layers": [str(path) for path, _ in outcome.image.chain] if outcome.image.manifest.layers
                          else [], "changed": outcome.changed, "phases": outcome.phases}))
    elif outcome.cache_hit:
        print(f"cache hit: {outcome.image.qcow2} (version {outcome.image.version}, "
              f"{'sha256 verified' if args.verify else 'size checked'}); nothing to bake")
    else:
        print(f"baked: {outcome.image.qcow2}")
    return exit_codes.OK


def _lock(args, layout) -> int:
    from bake import fetch
    from bake.lock import resolve
    from bake.spec import load_spec
    with input_errors():
        spec = load_spec(args.spec)
    if not spec.npm_trees:
        raise BakeError(f"{spec.path}: pins no OpenClaw nor npm CLI, so there is no npm tree to lock",
                        exit_codes.USAGE)
    npm_cmd = fetch.host_npm(spec, layout.downloads, layout.tools)
    lock = resolve(spec, npm_cmd, log=sys.stderr)
    for tree in spec.npm_trees:
        entry = lock[tree.name]
        print(f"locked {tree.name} {entry['version']} ({entry['packages']} packages, "
              f"engines.node {entry['engines_node']!r}) -> {spec.lock_path}")
    return exit_codes.OK


def _verify(args, layout) -> int:
    from bake import publish
    from bake.verify import verify_image
    image = publish.beside(args.image)
    if image is None:
        raise BakeError(f"{args.image}: no manifest beside it; not a published image", exit_codes.USAGE)
    publish.check_published(image, full=True)   # every layer of a layered image, and their chain
    layout.build.mkdir(parents=True, exist_ok=True)
    problems = verify_image(args.image, image.manifest.pins, layout.build, toolchains=image.manifest.toolchains,
                            baseline=image.manifest.baseline if image.manifest.layers else None)
    for p in problems:
        print(f"problem: {p}")
    print("ok" if not problems else f"{len(problems)} problems")
    return exit_codes.FAILED if problems else exit_codes.OK


def _list(args, layout) -> int:
    from bake import publish
    now = time.time()
    rows = []
    for image in publish.published(layout.images, args.name):
        m = image.manifest
        age = _age_days(m.base.get("built_at", ""), now)
        rows.append({"version": m.version, "built_at": m.built_at, "base_refresh": m.base.get("refresh", ""),
                     "base_built_at": m.base.get("built_at", ""), "base_age_days": age, "pins": m.pins,
                     "services": list(m.services), "size": m.qcow2.size, "qcow2": str(image.qcow2),
                     "layers": [f.file for f in m.layers]})
    if args.json:
        print(json.dumps(rows))
        return exit_codes.OK
    for r in rows:
        base = (f"base {r['base_refresh'] or '(no refresh token)'}, "
                + (f"{r['base_age_days']:.0f} d old" if r["base_age_days"] is not None else "age unknown"))
        pins = "  ".join(f"{k} {v}" for k, v in r["pins"].items() if k in ("node", "openclaw")) or "no pins"
        on = f" on {r['layers'][0]}" if r["layers"] else ""
        print(f"{r['version']}  {r['built_at']}  {base}  {pins}  {r['size'] / 1e6:.0f} MB{on}  {r['qcow2']}")
    return exit_codes.OK


def _age_days(stamp: str, now: float) -> float | None:
    try:
        return (now - calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))) / 86400
    except ValueError:
        return None                      # images baked before the manifest recorded the base stage's time


def _diff(args, layout) -> int:
    from bake import publish
    from bake.diff import package_changes
    images = []
    for wanted in (args.a, args.b):
        found = publish.beside(Path(wanted)) if wanted.endswith(".qcow2") else \
            publish.find(layout.images, args.name, wanted)
        if found is None:
            raise BakeError(f"{wanted}: not a published image in {layout.images}", exit_codes.USAGE)
        images.append(found)
    changes = package_changes(images[0].manifest, images[1].manifest)
    if args.json:
        print(json.dumps({"a": images[0].version, "b": images[1].version,
                          "changes": [c.to_json() for c in changes]}))
    else:
        print(f"{images[0].version} -> {images[1].version}: {len(changes)} package(s) differ")
        for c in changes:
            print(f"  {c.line()}")
    return exit_codes.OK


def _keep_count(text: str) -> int:
    from bake.gc import keep_count
    return keep_count(text)


def _gc(args, layout) -> int:
    from bake import gc, gc_report, layers
    from bake.pipeline import exclusive
    agents = _agent_dirs(args.storage_dir, args.state_dir)
    planned = functools.partial(gc.plan, layout.images, agents, keep=args.keep, name=args.name,
                                cache_dir=layout.base_layers, cache_keep=layers.KEEP_CACHED)
    if args.dry_run:                                 # reads only: no lock, nothing written, not even bake.lock
        plan, collected = planned(), gc.Collected(())
    else:
        with exclusive(layout.build, quiet=args.json):   # a bake's files are in place a moment before its manifest
            plan = planned()
            if not args.json:
                for k in gc_report.notable(plan):
                    print(gc_report.kept_line(k, plan.images_dir))
            collected = gc.collect(plan, removed=lambda r: args.json or print(
                gc_report.removed_line(r, False, plan.images_dir), flush=True))
    if args.json:
        print(json.dumps(gc_report.to_json(plan, collected, args.dry_run)))
    elif args.dry_run:
        print("\n".join(gc_report.lines(plan, collected, dry_run=True)))
    else:
        print(gc_report.total(plan, collected, dry_run=False))
    if collected.error:
        print(f"bake: error: {collected.error}", file=sys.stderr)
        return exit_codes.FAILED
    return exit_codes.OK


def _agent_dirs(storage: list[Path], state: list[Path]):
    """The dirs given. The bake knows no inventory (docs/architecture.md), so on a hypervisor, whose agents' disks
    back onto images, running without them is refused rather than guessed: `fleet gc` sends a host its own dirs."""
    from bake.gc_usage import AgentDirs
    from host.identity import host_file
    hypervisor = host_file()
    if (not storage or not state) and hypervisor.is_file():
        raise BakeError(f"this machine is hypervisor {hypervisor.read_text().strip()!r} ({hypervisor}): pass its "
                        f"--storage-dir and --state-dir (its agents' disks use images), or run `python -m "
                        f"deploy.fleet gc --host NAME` from the workstation", exit_codes.USAGE)
    return AgentDirs(tuple(dict.fromkeys(p.resolve() for p in storage)),
                     tuple(dict.fromkeys(p.resolve() for p in state)))


_COMMANDS = {"gc": _gc, "bake": _bake, "lock": _lock, "verify": _verify, "list": _list, "diff": _diff}

if __name__ == "__main__":
    sys.exit(main())
