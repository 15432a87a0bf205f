"""Wait for the collector to see a healthy report from the new image version (what --replace needs to keep it).

GET <collector_api_url>/api/v1/agents/{name} -> {image_version, healthy, last_seen, last_seq}."""
from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Optional

from agentd import vm_files

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str      # "healthy", "health deadline", "failed report", "domain crash", "agentd failed"
    detail: str = ""


def fetch_agent(api_url: str, agent: str, timeout: float = 5) -> Optional[dict]:
    """The collector's view of one agent, or None when it has none (404) or is unreachable."""
    url = vm_files.agent_api_url(api_url, agent)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as e:
        log.debug("collector %s: %s", url, e)
        return None


def wait_healthy(api_url: str, agent: str, version: str, since: float, *, deadline_s: float,
                 unhealthy_grace_s: float, domain_alive: Callable[[], bool],
                 early_failure: Callable[[], Optional[str]] = lambda: None, poll_s: float = 2.0) -> Verdict:
    """Healthy = a report of `version` seen after `since` with healthy true. Unhealthy reports of the new version
    are tolerated for unhealthy_grace_s (services still starting), then the replace fails. `early_failure` says why
    no report can ever come (agentd failing on the console), so the replace need not wait out the deadline."""
    end = time.monotonic() + deadline_s
    first_unhealthy: Optional[float] = None
    last = None
    while True:
        if not domain_alive():
            return Verdict(False, "domain crash", f"{agent}'s domain stopped while waiting for its first report")
        failed = early_failure()
        if failed:
            return Verdict(False, "agentd failed", failed)
        info = fetch_agent(api_url, agent)
        last = info or last
        if info and info.get("image_version") == version and float(info.get("last_seen") or 0) >= since:
            if info.get("healthy") is True:
                return Verdict(True, "healthy", f"seq {info.get('last_seq')}")
            first_unhealthy = first_unhealthy or time.monotonic()
            if time.monotonic() - first_unhealthy >= unhealthy_grace_s:
                return Verdict(False, "failed report",
                               f"{agent} on {version} reported unhealthy for {unhealthy_grace_s:.0f}s")
        if time.monotonic() >= end:
            seen = (f"last seen {last.get('image_version')}, healthy={last.get('healthy')}" if last
                    else "no report at all")
            return Verdict(False, "health deadline", f"{agent}: no healthy report within {deadline_s:.0f}s ({seen})")
        time.sleep(poll_s)
