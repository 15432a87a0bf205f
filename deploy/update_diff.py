"""`clone.py AGENT --update --dry-run`: what an update would change, against what was injected last.

Each file's new content is compared with the sha256 (and mode, owner) the guest's drift baseline
(/etc/agentfleet/injected.json) recorded at the last injection. A changed file that is not secret is shown as a
unified diff against the guest's copy; a secret file (.env, agentd's token, SSH host keys) only as changed or
unchanged: its value is never read from the guest nor printed."""
from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass

from deploy.inject import Op, WriteFile

NOT_REWRITTEN = ("/etc/fstab",)   # in the baseline, but an update leaves it (and its baseline entry) as it is


@dataclass(frozen=True)
class FileChange:
    path: str
    status: str                  # "new", "changed", "unchanged", "kept" (in the baseline, no longer injected)
    secret: bool = False
    note: str = ""               # a mode or owner change; a guest copy that drifted from the baseline
    diff: tuple[str, ...] = ()   # unified diff lines, non-secret files only

    @property
    def changes(self) -> bool:
        return self.status in ("new", "changed")


def compare(ops: tuple[Op, ...], baseline: dict[str, dict], guest: dict[str, bytes]) -> list[FileChange]:
    """`guest` holds the guest's current copies of the non-secret files (secret ones are never read)."""
    out = []
    for op in ops:
        if not isinstance(op, WriteFile):
            continue
        data = op.data()
        old = baseline.get(op.path)
        if old is None:
            out.append(FileChange(op.path, "new", op.secret, diff=() if op.secret else _diff(op.path, b"", data)))
            continue
        notes = [f"mode {old.get('mode')} -> {op.mode:04o}"] if old.get("mode") != f"{op.mode:04o}" else []
        notes += [f"owner {old.get('owner')} -> {op.owner}"] if old.get("owner") != op.owner else []
        same = old.get("sha256") == hashlib.sha256(data).hexdigest()
        diff: tuple[str, ...] = ()
        if not same and not op.secret:
            current = guest.get(op.path, b"")
            if hashlib.sha256(current).hexdigest() != old.get("sha256"):
                notes.append("the guest's copy differs from what was injected (drift); diff against the guest's copy")
            diff = _diff(op.path, current, data)
        out.append(FileChange(op.path, "unchanged" if same and not notes else "changed", op.secret, "; ".join(notes),
                              diff))
    written = {op.path for op in ops}
    out += [FileChange(path, "kept") for path in sorted(baseline) if path not in written and path not in NOT_REWRITTEN]
    return out


def render(changes: list[FileChange]) -> list[str]:
    lines = []
    for c in changes:
        what = "secret, value not shown" if c.secret else ""
        if c.status == "kept":
            what = "no longer injected; left in the guest and in the baseline"
        extra = "; ".join(x for x in (what, c.note) if x)
        lines.append(f"{c.status:<9} {c.path}" + (f" ({extra})" if extra else ""))
        lines += ["    " + ln for ln in c.diff]
    changed = [c for c in changes if c.changes]
    lines.append(f"{len(changed)} of {sum(c.status != 'kept' for c in changes)} injected files would change")
    return lines


def _diff(path: str, old: bytes, new: bytes) -> tuple[str, ...]:
    return tuple(ln.rstrip("\n") for ln in difflib.unified_diff(
        old.decode(errors="replace").splitlines(keepends=True), new.decode(errors="replace").splitlines(keepends=True),
        f"{path} (in the guest)", f"{path} (after --update)"))
