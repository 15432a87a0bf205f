"""One-minute load average per CPU (the CPU count read from the same /proc, so fixture trees are consistent)."""
from __future__ import annotations

import re

from . import CheckContext, Outcome, read_text


def parse_load1(loadavg_text: str) -> float:
    return float(loadavg_text.split()[0])


def count_cpus(stat_text: str) -> int:
    return max(1, len(re.findall(r"^cpu\d+ ", stat_text, re.MULTILINE)))


def check(ctx: CheckContext) -> Outcome:
    load1 = parse_load1(read_text(ctx, "/proc/loadavg"))
    cpus = count_cpus(read_text(ctx, "/proc/stat"))
    per_cpu = round(load1 / cpus, 2)
    t = ctx.config.thresholds["load_per_cpu"]
    return Outcome(t.status(per_cpu), f"load {load1:g} on {cpus} cpus = {per_cpu:g}/cpu (warn at {t.warn:g})", per_cpu)
