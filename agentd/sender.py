"""Delivery: POST spooled reports to the collector in seq order, with a bearer token, timeouts and backoff.

What an answer means (docs/contracts.md, "Delivery"); the rule is that a report leaves the spool only when the
collector stored it, or when the collector itself judged *that report* unacceptable:
- 200 with the collector's `{"status": "stored"|"duplicate"}`: stored (the collector is idempotent on agent+seq, so
  resending after a crash is safe). A 200 without that answer is some other web server: keep and retry. The answer
  may carry `accepted`: drift an operator accepted (agentd/accepted.py adopts it).
- 401/403: the collector refuses our token. Far more often its secret is wrong than our report, so nothing is lost:
  keep the spool, back off, say so in the journal and in systemd's STATUS, and recover once the collector is fixed.
- 400/413/422 carrying the collector's JSON `{"detail": ...}`: this report can never be accepted. It is set aside to
  the spool's quarantine (kept, not deleted), counted as dropped, and the next one is sent.
- Anything else (5xx, 408, 429, 404 from a wrong URL, a proxy's HTML error page, connection errors): keep and retry
  with exponential backoff and jitter.
Before sending, a report is checked against the protocol here: one that could never be accepted is set aside
without asking the collector, so a collector's 400/413/422 for a report we found valid is rare.
"""
from __future__ import annotations

import enum
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

import requests

from .protocol import MAX_REPORT_BYTES, AcceptedDrift, Report, accepted_in_answer
from .spool import Spool

log = logging.getLogger(__name__)

REMIND_S = 3600.0  # a lasting delivery problem is written to the journal again this often
AUTH_REFUSED = (401, 403)
REPORT_REFUSED = (400, 413, 422)


class Backoff:
    """Exponential backoff with jitter: sleep U(c/2, c), c = min(cap, initial * 2**n) after n failures in a row."""

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


class Verdict(enum.Enum):
    STORED = "stored"              # remove from the spool
    SET_ASIDE = "set aside"        # this report can never be accepted: quarantine it, count it as dropped
    AUTH_REFUSED = "auth refused"  # the collector refuses our token: keep everything, back off, say so
    RETRY = "retry"                # the collector, or the way to it, is down or misconfigured: keep, back off


@dataclass(frozen=True)
class Answer:
    verdict: Verdict
    detail: str  # one line for the journal and STATUS; never the token
    accepted: Tuple[AcceptedDrift, ...] = ()  # drift an operator accepted, carried by a 200


def judge(status: int, text: str) -> Answer:
    """What one HTTP answer to a report POST means (pure: tested on literals)."""
    answer = _json_object(text)
    if status == 200:
        if answer.get("status") in ("stored", "duplicate"):
            try:
                return Answer(Verdict.STORED, answer["status"], tuple(accepted_in_answer(answer)))
            except ValueError as e:  # the report is stored all the same; the acceptance comes again next time
                return Answer(Verdict.STORED, f"{answer['status']}, its accepted drift unreadable: {str(e)[:200]}")
        return Answer(Verdict.RETRY, "HTTP 200 without the collector's answer (is collector_url the collector?)")
    said = f": {' '.join(str(answer['detail']).split())[:200]}" if "detail" in answer else ""  # one line
    if status in AUTH_REFUSED:
        return Answer(Verdict.AUTH_REFUSED, f"the collector refuses this agent's token (HTTP {status}{said}); "
                                            f"is its secret the one the token was minted from?")
    if status in REPORT_REFUSED and "detail" in answer:
        return Answer(Verdict.SET_ASIDE, f"HTTP {status}{said}")
    if 400 <= status < 500 and not answer:
        return Answer(Verdict.RETRY, f"HTTP {status}, not from the collector (is collector_url right?)")
    return Answer(Verdict.RETRY, f"HTTP {status}{said}")


def why_unacceptable(body: bytes) -> Optional[str]:
    """Why the collector could never accept these spooled bytes (None when it can): checked before sending."""
    if len(body) > MAX_REPORT_BYTES:
        return f"{len(body)} bytes, over the protocol's {MAX_REPORT_BYTES}"
    try:
        Report.from_json(json.loads(body, parse_constant=_refuse_constant))
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return f"not a valid report: {str(e)[:200]}"
    return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(text: str) -> dict:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class FlushResult:
    sent: int = 0
    set_aside: int = 0
    retry_after: Optional[float] = None  # seconds until the next attempt, when delivery failed
    error: str = ""                      # why delivery failed, when it did
    auth_refused: bool = False           # ... because the collector refuses our token
    accepted: List[AcceptedDrift] = field(default_factory=list)  # drift an operator accepted (the answers')


class Sender:
    def __init__(self, url: str, token: str, timeout_s: float, backoff: Backoff,
                 clock: Callable[[], float] = time.monotonic):
        self.url = url
        self._token = token
        self._session = requests.Session()
        self._session.headers.update({"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                      "User-Agent": "agentd/1"})
        self.timeout_s = timeout_s
        self.backoff = backoff
        self.clock = clock
        self.not_before = 0.0  # monotonic time before which no attempt is made (backoff)
        self.sent_total = 0
        self.set_aside_total = 0
        self.last_error = ""   # the current delivery problem ("" while delivery works): journal and STATUS
        self._logged_at = 0.0  # when last_error was last written to the journal

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
        while limit is None or result.sent + result.set_aside < limit:
            item = spool.oldest()
            if item is None:
                break
            seq, body = item
            unacceptable = why_unacceptable(body)
            answer = Answer(Verdict.SET_ASIDE, unacceptable) if unacceptable else self._post(body)
            if answer.verdict is Verdict.STORED:
                spool.remove(seq)
                if answer.detail not in ("stored", "duplicate"):
                    log.warning("report seq %d: %s", seq, answer.detail)
                result.accepted.extend(answer.accepted)
                result.sent += 1
                self.sent_total += 1
                self._recovered(len(spool))
            elif answer.verdict is Verdict.SET_ASIDE:
                where = spool.set_aside(seq, answer.detail)
                log.error("report seq %d can never be accepted (%s): set aside to %s, counted as dropped",
                          seq, answer.detail, where)
                result.set_aside += 1
                self.set_aside_total += 1
            else:
                delay = self.backoff.next_delay()
                self.not_before = self.clock() + delay
                result.retry_after, result.error = delay, answer.detail
                result.auth_refused = answer.verdict is Verdict.AUTH_REFUSED
                self._failing(answer, len(spool), delay)
                break
        return result

    def _failing(self, answer: Answer, backlog: int, delay: float) -> None:
        """Journal a delivery problem once when it starts, then once per REMIND_S while it lasts (not per retry)."""
        now = self.clock()
        if answer.detail == self.last_error and now - self._logged_at < REMIND_S:
            return
        still = f"still, after {self.backoff.failures} attempts: " if answer.detail == self.last_error else ""
        log.log(logging.ERROR if answer.verdict is Verdict.AUTH_REFUSED else logging.WARNING,
                "delivery failing: %s%s; %d report(s) kept in the spool, retrying with backoff "
                "(next in %.1fs, at most every %gs)", still, answer.detail, backlog, delay, self.backoff.max_s)
        self.last_error, self._logged_at = answer.detail, now

    def _recovered(self, backlog: int) -> None:
        if self.last_error:
            log.warning("delivery works again after %d failed attempt(s) (%s); sending the %d report(s) left",
                        self.backoff.failures, self.last_error, backlog)
            self.last_error = ""
        self.backoff.reset()

    def _post(self, body: bytes) -> Answer:
        try:
            r = self._session.post(self.url, data=body, timeout=(self.timeout_s, self.timeout_s))
        except requests.RequestException as e:
            return Answer(Verdict.RETRY, f"connection error: {type(e).__name__}")
        return judge(r.status_code, r.text.replace(self._token, "<token>"))  # never journal it, even echoed back

    def close(self) -> None:
        self._session.close()
