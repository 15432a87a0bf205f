"""The Mattermost server is reachable from this VM (the agent's chat channel): GET /api/v4/system/ping."""
from __future__ import annotations

import requests

from . import CheckContext, Outcome


def check(ctx: CheckContext) -> Outcome:
    base = ctx.config.mattermost_url
    if not base:
        return Outcome("warn", "mattermost_url not configured")
    url = base.rstrip("/") + "/api/v4/system/ping"
    try:
        r = requests.get(url, timeout=ctx.config.check_timeout_s)
    except requests.RequestException as e:
        return Outcome("fail", f"{base} unreachable: {type(e).__name__}")
    if r.status_code == 200:
        return Outcome("ok", f"{base} answers", round(r.elapsed.total_seconds() * 1000, 1))
    return Outcome("warn", f"{base} answers HTTP {r.status_code}")
