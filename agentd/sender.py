"""Delivery: POST spooled reports to the collector in seq order, with a bearer token, timeouts and backoff.

200 = stored or duplicate (the collector is idempotent on agent+seq), so resending after a crash is safe.
4xx other than 408/429 = rejected for good: counted as dropped, logged, never retried forever.
5xx, 408, 429 and connection errors = retry later with exponential backoff and full jitter.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, Optional

import requests

from .spool import Spool

log = logging.getLogger(__name__)

RETRYABLE_4XX = (408, 429)


class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog): sleep U(0, min(cap, base * 2**n))."""

    def __init__(self, initial_s: float, max_s: float, rng: Optional[random.Random] = None):
        self.initial_s, self.max_s = initial_s, max_s
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * (2 ** min(self.failures, 30)))
        self.failures += 1
        return self._rng.uniform(ceiling / 2, ceiling)  # half-jitter: never hammer right after a failure

    def reset(self) -> None:
        self.failures = 0


@dataclass
class FlushResult:
    sent: int = 0
    rejected: int = 0
    retry_after: Optional[float] = None  # seconds until the next attempt, when delivery failed
    error: str = ""


class Sender:
    def __init__(self, url: str, token: str, timeout_s: float, backoff: Backoff,
                 clock: Callable[[], float] = time.monotonic):
        self.url = url
        self._session = requests.Session()
        self._session.headers.update({"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                      "User-Agent": "agentd/1"})
        self.timeout_s = timeout_s
        self.backoff = backoff
        self.clock = clock
        self.not_before = 0.0  # monotonic time before which no attempt is made (backoff)
        self.sent_total = 0
        self.rejected_total = 0
        self.last_error = ""

    def ready(self) -> bool:
        return self.clock() >= self.not_before

    def collector_last_seq(self, agents_url: str) -> Optional[int]:
        """The highest seq the collector holds for this agent (0 for an agent it has never seen); None when it
        cannot say right now."""
        try:
            r = self._session.get(agents_url, timeout=self.timeout_s)
            if r.status_code == 404:
                return 0
            r.raise_for_status()
            return int(r.json()["last_seq"])
        except (requests.RequestException, ValueError, KeyError, TypeError) as e:
            log.info("could not ask the collector for the last seq yet (%s)", e)
            return None

    def flush(self, spool: Spool, limit: Optional[int] = None, force: bool = False) -> FlushResult:
        """Send the spool oldest first until it is empty, `limit` is reached or the collector fails."""
        result = FlushResult()
        if not force and not self.ready():
            result.retry_after = self.not_before - self.clock()
            return result
        while limit is None or result.sent + result.rejected < limit:
            item = spool.oldest()
            if item is None:
                break
            seq, body = item
            outcome = self._post(body)
            if outcome == "stored":
                spool.remove(seq)
                result.sent += 1
                self.sent_total += 1
                self.backoff.reset()
            elif outcome.startswith("rejected"):
                log.error("collector rejected report seq %d for good (%s): dropped", seq, outcome)
                spool.remove(seq, dropped=True)
                result.rejected += 1
                self.rejected_total += 1
            else:
                delay = self.backoff.next_delay()
                self.not_before = self.clock() + delay
                result.retry_after, result.error = delay, outcome
                if outcome != self.last_error:
                    log.warning("delivery failed (%s); %d reports spooled, retrying in %.1fs", outcome, len(spool), delay)
                self.last_error = outcome
                break
        if not result.error:
            self.last_error = ""
        return result

    def _post(self, body: bytes) -> str:
        try:
            r = self._session.post(self.url, data=body, timeout=(self.timeout_s, self.timeout_s))
        except requests.RequestException as e:
            return f"connection error: {type(e).__name__}"
        if r.status_code == 200:
            return "stored"
        if 400 <= r.status_code < 500 and r.status_code not in RETRYABLE_4XX:
            return f"rejected: HTTP {r.status_code} {r.text[:200]!r}"
        return f"HTTP {r.status_code}"

    def close(self) -> None:
        self._session.close()
