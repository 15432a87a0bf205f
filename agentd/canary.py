"""The canary: agentd touches a file of its own under a watched path and times how long until a report carries it.

A watcher that silently stopped working (a dead emitter thread, lost watches) shows up as a growing lag at the
collector instead of as no drift at all. While a touch is unseen, the reported lag is its age so far.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional

log = logging.getLogger(__name__)


class Canary:
    def __init__(self, host_path: str, interval_s: float, clock: Callable[[], float] = time.time):
        self.host_path = host_path
        self.interval_s = interval_s
        self.clock = clock
        self.touched_at: Optional[float] = None   # the pending, not yet seen touch
        self.seen_at: Optional[float] = None      # when the watcher saw it (the report after that closes it)
        self.last_lag_s: Optional[float] = None
        self._next_touch = 0.0

    def due(self) -> bool:
        """Time for a touch; an unseen one is touched again (its event may have been lost) but keeps its age."""
        return self.seen_at is None and self.clock() >= self._next_touch

    def seconds_to_next_touch(self) -> float:
        return max(0.0, self._next_touch - self.clock())

    def touch(self) -> None:
        now = self.clock()
        try:
            with open(self.host_path, "w") as f:
                f.write("%.6f\n" % now)
        except OSError as e:
            log.warning("cannot touch canary %s: %s", self.host_path, e)
            self._next_touch = now + self.interval_s
            return
        if self.touched_at is None:
            self.touched_at = now
        self._next_touch = now + self.interval_s

    def observed(self, host_paths) -> bool:
        """Called with the watcher's dirty paths; True when the pending touch was among them (report now)."""
        if self.touched_at is not None and self.seen_at is None and self.host_path in host_paths:
            self.seen_at = self.clock()
            return True
        return False

    def lag_for_report(self) -> Optional[float]:
        """The value for this report's canary_lag_s; a seen touch is closed by the report that carries it."""
        now = self.clock()
        if self.touched_at is not None:
            if self.seen_at is not None:
                self.last_lag_s = round(now - self.touched_at, 4)
                self.touched_at = self.seen_at = None
            else:
                pending = now - self.touched_at
                if self.last_lag_s is None or pending > self.last_lag_s:
                    return round(pending, 4)  # still unseen: at least this late
        return self.last_lag_s
