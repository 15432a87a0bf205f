"""Seconds since boot: reported as a metric (a reset reveals an unplanned reboot at the collector)."""
from __future__ import annotations

from . import CheckContext, Outcome, read_text


def parse_uptime(text: str) -> float:
    return float(text.split()[0])


def check(ctx: CheckContext) -> Outcome:
    seconds = parse_uptime(read_text(ctx, "/proc/uptime"))
    return Outcome("ok", f"up {seconds / 86400:.1f} days", round(seconds, 1))
