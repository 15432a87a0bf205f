"""How `bake gc` and `fleet gc` say what a collection did: one line per removed file, one per file kept for a reason
worth reading (in use, named by an agent's state, maybe being published), a total; or the same as JSON. One module
for both, so a host's report reads like the workstation's."""
from __future__ import annotations

from pathlib import Path

from bake.gc import Collected, Kept, Plan, Removal


def removed_line(r: Removal, dry_run: bool, where: Path) -> str:
    """`removed agent-v1.qcow2 (image file, 200.1 MB): image v1: older than the 3 newest, ...`."""
    size = _bytes(r.freed) if r.freed or not r.size else f"{_bytes(r.size)}, another link stays: nothing freed"
    return f"{'would remove' if dry_run else 'removed'} {_name(r.path, where)} ({r.kind}, {size}): {r.reason}"


def kept_line(k: Kept, where: Path) -> str:
    return f"kept {_name(k.path, where)} ({k.kind}): {k.reason}"


def notable(plan: Plan) -> list[Kept]:
    """What is kept for another reason than being among the newest or under a kept image: the newest are only
    counted in the total, the rest each get a line (they are why space was not freed)."""
    return [k for k in plan.kept if " newest" not in k.reason and not k.reason.startswith("under image ")]


def total(plan: Plan, collected: Collected, dry_run: bool) -> str:
    if dry_run:
        return (f"would remove {len(plan.removals)} file(s) from {plan.images_dir}, freeing "
                f"{_bytes(plan.bytes_freed)}; {plan.images_kept} image(s) kept")
    return (f"removed {len(collected.removed)} file(s) from {plan.images_dir}, {_bytes(collected.bytes_freed)} "
            f"freed; {plan.images_kept} image(s) kept")


def lines(plan: Plan, collected: Collected, dry_run: bool, prefix: str = "") -> list[str]:
    """Everything a run prints on stdout, each line prefixed (`r420: ` for a host); a dry run lists the whole plan."""
    where = plan.images_dir
    removed = plan.removals if dry_run else collected.removed
    out = [kept_line(k, where) for k in notable(plan)]
    out += [removed_line(r, dry_run, where) for r in removed]
    out.append(total(plan, collected, dry_run))
    return [prefix + line for line in out]


def to_json(plan: Plan, collected: Collected, dry_run: bool) -> dict:
    """The plan, what was removed (nothing on a dry run) and the error that stopped the removal, if any."""
    return {**plan.to_json(), "dry_run": dry_run, "removed": [r.to_json() for r in collected.removed],
            "freed": collected.bytes_freed, "error": collected.error}


def from_json(data: dict) -> tuple[Plan, Collected]:
    """What to_json wrote (a host's answer to fleet gc), as the types the workstation renders."""
    removed = tuple(Removal(Path(r["path"]), r["kind"], r["reason"], int(r["size"]), int(r["freed"]))
                    for r in data["removed"])
    return Plan.from_json(data), Collected(removed, str(data.get("error") or ""))


def _name(path: Path, where: Path) -> str:
    return path.name if path.parent == where else str(path)


def _bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"
