"""The collector as the rollout's health source: one GET /api/v1/agents per look at the whole fleet.

The collector's clock comes from the answer's Date header, so staleness (collector now - last_seen) is measured on
one clock even when the workstation's drifts."""
from __future__ import annotations

import email.utils
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from deploy.rollout.errors import RolloutError
from deploy.rollout.interfaces import AgentHealth, FleetHealth

AGENTS_PATH = "/api/v1/agents"
HISTORY_MAX = 1000  # the collector's cap on /history?limit


class CollectorHealth:
    """HealthSource over urllib. `api_url` is the collector as the workstation reaches it."""

    def __init__(self, api_url: str, timeout_s: float = 5.0) -> None:
        self.api_url, self.timeout_s = api_url.rstrip("/"), timeout_s

    def snapshot(self) -> FleetHealth:
        url = self.api_url + AGENTS_PATH
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                body, date = resp.read(), resp.headers.get("Date")
        except (urllib.error.URLError, OSError) as e:
            raise RolloutError(f"collector {url}: {getattr(e, 'reason', e)}") from None
        try:
            rows = json.loads(body)
        except ValueError:
            raise RolloutError(f"collector {url}: answer is not JSON") from None
        return parse_agents(rows, collector_now(date))


    def failing_between(self, agent: str, after_seq: int, upto_seq: int) -> list[int]:
        limit = max(1, min(HISTORY_MAX, upto_seq - after_seq + 50))  # + reports newer than the look
        url = f"{self.api_url}{AGENTS_PATH}/{urllib.parse.quote(agent)}/history?limit={limit}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                points = json.loads(resp.read())
            return [int(p["seq"]) for p in points if after_seq < int(p["seq"]) <= upto_seq and p.get("failing")]
        except (urllib.error.URLError, OSError) as e:
            raise RolloutError(f"collector {url}: {getattr(e, 'reason', e)}") from None
        except (ValueError, KeyError, TypeError):
            raise RolloutError(f"collector {url}: history is not the expected JSON list") from None


def collector_now(date_header: str | None) -> float:
    """The collector's time: ours when it agrees with the Date header within that header's one-second resolution
    (sub-second staleness stays measurable), else the header's (the middle of its second); ours without one."""
    local = time.time()
    if date_header:
        try:
            stamped = email.utils.parsedate_to_datetime(date_header).timestamp()
        except (TypeError, ValueError):
            return local
        return local if stamped - 1 <= local <= stamped + 2 else stamped + 0.5
    return local


def parse_agents(rows: Any, now: float) -> FleetHealth:
    """GET /api/v1/agents's list (docs/contracts.md) into FleetHealth; refuses a shape it does not know."""
    if not isinstance(rows, list):
        raise RolloutError("collector: /api/v1/agents did not answer a list")
    agents = {}
    for row in rows:
        try:
            failing = tuple(c["name"] for c in row.get("checks", []) if c.get("status") == "fail")
            agents[row["agent"]] = AgentHealth(agent=row["agent"], image_version=str(row["image_version"]),
                                               healthy=row["healthy"] is True, last_seen=float(row["last_seen"]),
                                               last_seq=int(row["last_seq"]), failing=failing)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise RolloutError(f"collector: an agent entry lacks or mistypes {e}") from None
    return FleetHealth(now=now, agents=agents)
