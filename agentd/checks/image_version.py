"""The running image version (image.json) against the one the clone meant to boot (identity.json)."""
from __future__ import annotations

from . import CheckContext, Outcome


def check(ctx: CheckContext) -> Outcome:
    running = ctx.baseline.image_version
    expected = ctx.baseline.identity.image_version
    if not running:
        return Outcome("fail", "image.json names no version")
    if expected and expected != running:
        return Outcome("warn", f"running image {running}, clone expected {expected}")
    return Outcome("ok", f"image {running}")
