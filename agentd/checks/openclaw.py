"""The OpenClaw gateway's readiness (GET /readyz, see OPENCLAW.md) and its dashboard answering on port 18789."""
from __future__ import annotations

import requests

from . import CheckContext, Outcome


def judge_readyz(status_code: int, body: object) -> Outcome:
    """Pure: 200 + ready -> ok (warn if the event loop is degraded); not ready -> fail naming what is failing."""
    if not isinstance(body, dict):
        return Outcome("fail", f"/readyz HTTP {status_code}, not JSON")
    failing = body.get("failing") or []
    if status_code != 200 or not body.get("ready"):
        return Outcome("fail", f"not ready (HTTP {status_code}), failing: {', '.join(map(str, failing)) or '?'}")
    loop = body.get("eventLoop") or {}
    if isinstance(loop, dict) and loop.get("degraded"):
        return Outcome("warn", "ready, event loop degraded")
    uptime_ms = body.get("uptimeMs")
    value = round(uptime_ms / 1000.0, 1) if isinstance(uptime_ms, (int, float)) else None
    return Outcome("ok", "ready", value)


def ready(ctx: CheckContext) -> Outcome:
    url = ctx.config.openclaw_url.rstrip("/") + "/readyz"
    try:
        r = requests.get(url, timeout=ctx.config.check_timeout_s)
    except requests.RequestException as e:
        return Outcome("fail", f"{url}: {type(e).__name__}")
    try:
        body = r.json()
    except ValueError:
        body = None
    return judge_readyz(r.status_code, body)


def dashboard(ctx: CheckContext) -> Outcome:
    url = ctx.config.openclaw_url.rstrip("/") + "/"
    try:
        r = requests.get(url, timeout=ctx.config.check_timeout_s)
    except requests.RequestException as e:
        return Outcome("fail", f"{url}: {type(e).__name__}")
    if r.status_code == 200:
        return Outcome("ok", f"{url} HTTP 200", r.elapsed.total_seconds() * 1000)
    return Outcome("fail", f"{url} HTTP {r.status_code}")
