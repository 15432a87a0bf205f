"""systemd unit states (the OpenClaw gateway's and agentd's own) via `systemctl is-active`.

Outside systemd (a container, a dev box, a fixture root) the state is "unknown", a warning rather than a failure.
"""
from __future__ import annotations

import os
import shutil
import subprocess

from ..fsutil import rooted
from . import CheckContext, Outcome

STATUS_OF_STATE = {"active": "ok", "reloading": "warn", "activating": "warn", "deactivating": "warn",
                   "unknown": "warn"}


def unit_state(root: str, unit: str) -> str:
    """active, inactive, failed, activating, ... or "unknown" when systemd is not running here."""
    systemctl = shutil.which("systemctl")
    if systemctl is None or not os.path.isdir(rooted(root, "/run/systemd/system")) or root not in ("", "/"):
        return "unknown"
    try:
        proc = subprocess.run([systemctl, "is-active", unit], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=5, env={"PATH": "/usr/bin:/bin", "LANG": "C"})
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return proc.stdout.strip() or "unknown"


def _unit(ctx: CheckContext, unit: str) -> Outcome:
    state = unit_state(ctx.root, unit)
    return Outcome(STATUS_OF_STATE.get(state, "fail"), f"{unit} {state}")


def openclaw_unit(ctx: CheckContext) -> Outcome:
    return _unit(ctx, ctx.config.openclaw_unit)


def agentd_unit(ctx: CheckContext) -> Outcome:
    return _unit(ctx, ctx.config.agentd_unit)
