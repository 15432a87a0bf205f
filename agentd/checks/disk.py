"""Disk use of the root file system (config `disk_path`), computed as df does (reserved blocks count as used)."""
from __future__ import annotations

import os

from ..fsutil import rooted
from . import CheckContext, Outcome


def used_percent(blocks: int, bfree: int, bavail: int) -> float:
    used = blocks - bfree
    usable = used + bavail
    return 0.0 if usable <= 0 else 100.0 * used / usable


def check(ctx: CheckContext) -> Outcome:
    path = ctx.config.disk_path
    st = os.statvfs(rooted(ctx.root, path))
    pct = round(used_percent(st.f_blocks, st.f_bfree, st.f_bavail), 1)
    t = ctx.config.thresholds["disk_percent"]
    return Outcome(t.status(pct), f"{path} {pct}% used (warn at {t.warn:g}, fail at {t.fail:g})", pct)
