"""`python -m deploy.fleet.hostside gc`: fleet gc's step on a hypervisor. The workstation sends the host's images,
storage and state dirs (the host keeps no inventory); the decision is bake/gc.py's, the same policy `bake gc` applies
on the workstation, so a host keeps exactly what its agents' disks and states need and the newest --keep images.
Answers bake/gc_report.py's JSON: the plan, what was removed, and the error that stopped the removal if one did."""
from __future__ import annotations

from pathlib import Path


def gc(args, fail) -> dict:
    """`fail` is hostside's HostStepError: a plan that cannot be made (an unreadable manifest, state or disk) is
    one line on stderr and exit 2, nothing removed."""
    from bake import gc as policy
    from bake import gc_report
    from bake.errors import BakeError
    from bake.gc_usage import AgentDirs
    try:
        plan = policy.plan(Path(args.images), AgentDirs((Path(args.storage),), (Path(args.state_dir),)),
                           keep=args.keep)
    except BakeError as e:
        raise fail(str(e)) from None
    collected = policy.Collected(()) if args.dry_run else policy.collect(plan)
    return gc_report.to_json(plan, collected, args.dry_run)
