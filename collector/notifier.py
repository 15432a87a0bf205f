"""Posts alert messages to a Mattermost incoming webhook from one background thread: a slow or unreachable
webhook never slows a report. Messages arrive here already rendered inert (alerts.py, inert.py)."""
from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.request
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger("collector.alerts")


@dataclass
class NotifierStats:
    sent: int = 0
    failed: int = 0


class Notifier:
    """Posts `{"text": ...}` to the webhook from one thread, retrying a few times with backoff, never blocking
    callers."""

    def __init__(self, webhook_url: Optional[str], timeout_s: float = 5.0, retries: int = 3) -> None:
        self.url, self.timeout_s, self.retries = webhook_url, timeout_s, retries
        self.stats = NotifierStats()
        self._queue: "queue.Queue[Optional[str]]" = queue.Queue(maxsize=10000)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-notifier", daemon=True)
        self._thread.start()

    def send(self, text: str) -> None:
        log.warning("alert: %s", text)
        if self.url:
            try:
                self._queue.put_nowait(text)
            except queue.Full:
                self.stats.failed += 1

    def close(self, timeout_s: float = 5.0) -> None:
        """Try what is still queued once more each (no backoff, within the timeout), then stop."""
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while (text := self._queue.get()) is not None:
            self._post(text)

    def _post(self, text: str) -> None:
        body = json.dumps({"username": "agentfleet", "text": text}).encode()
        for attempt in range(1 if self._stopping.is_set() else self.retries):
            try:
                request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    response.read()
                self.stats.sent += 1
                return
            except OSError as exc:  # URLError, HTTPError and timeouts are all OSErrors; the URL is never logged
                log.warning("webhook post failed (attempt %d/%d): %s", attempt + 1, self.retries,
                            getattr(exc, "reason", None) or type(exc).__name__)
                if self._stopping.wait(0.5 * 2 ** attempt):
                    break
        self.stats.failed += 1
