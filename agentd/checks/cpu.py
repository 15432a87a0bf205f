"""CPU busy percent since the previous report (from /proc/stat's aggregate line)."""
from __future__ import annotations

import time
from typing import Tuple

from . import CheckContext, Outcome, read_text


def parse_cpu_times(stat_text: str) -> Tuple[int, int]:
    """(busy, total) jiffies from the "cpu " line; idle and iowait count as not busy."""
    for line in stat_text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            total = sum(values[:8])  # guest time is already inside user/nice
            return total - idle, total
    raise ValueError("no aggregate cpu line in /proc/stat")


def busy_percent(before: Tuple[int, int], after: Tuple[int, int]) -> float:
    total = after[1] - before[1]
    return 0.0 if total <= 0 else 100.0 * (after[0] - before[0]) / total


def check(ctx: CheckContext) -> Outcome:
    now = parse_cpu_times(read_text(ctx, "/proc/stat"))
    before = ctx.scratch.get("cpu")
    if before is None:  # first run (or `agentd check`): sample a short window instead
        before = now
        time.sleep(0.1)
        now = parse_cpu_times(read_text(ctx, "/proc/stat"))
    ctx.scratch["cpu"] = now
    pct = round(busy_percent(before, now), 1)
    t = ctx.config.thresholds["cpu_percent"]
    return Outcome(t.status(pct), f"cpu {pct}% (warn at {t.warn:g}, fail at {t.fail:g})", pct)
