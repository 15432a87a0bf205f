"""Memory in use, as the kernel sees it: MemTotal minus MemAvailable (not minus MemFree: caches are reclaimable)."""
from __future__ import annotations

from . import CheckContext, Outcome, read_text


def parse_meminfo(text: str) -> float:
    """Percent of memory in use."""
    kb = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if rest.split():
            kb[key] = int(rest.split()[0])
    total, available = kb["MemTotal"], kb.get("MemAvailable", kb.get("MemFree", 0))
    return 100.0 * (total - available) / total


def check(ctx: CheckContext) -> Outcome:
    pct = round(parse_meminfo(read_text(ctx, "/proc/meminfo")), 1)
    t = ctx.config.thresholds["memory_percent"]
    return Outcome(t.status(pct), f"memory {pct}% used (warn at {t.warn:g}, fail at {t.fail:g})", pct)
