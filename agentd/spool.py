"""The durable, bounded, ordered on-disk spool of reports, and the sequence counter that goes with it.

Every report is written here before it is sent, and removed only after the collector stored it, so a report made
while the collector is down, misconfigured (a wrong secret) or while agentd is killed is sent later, in seq order.
A report the collector can never accept is moved to `quarantine/`, never deleted on the spot. One file per report,
`<seq>.json`, written atomically: a SIGKILL leaves either the whole file or none (the torn temp is discarded).

Sequence numbers: the next seq is max(counter file, highest spooled seq) + 1. The counter file is written only
when a report file is about to leave the spool (sent, set aside or dropped), and before that: whatever seq may have
reached the collector is always covered by the counter or by a file still in the spool. So a crash never skips a seq
(the collector would see a gap that never closes) and never hands the same seq to two different reports, and making a
report costs one atomic write, not two (the drift-to-collector latency is mostly fsync).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Callable, List, Optional, Tuple

from .errors import AgentdError
from .fsutil import atomic_write, fsync_dir, read_int
from .protocol import SpoolState

log = logging.getLogger(__name__)

SUFFIX = ".json"
QUARANTINE = "quarantine"  # reports the collector can never accept (sender.py), kept for an operator


class Spool:
    def __init__(self, spool_dir: str, state_dir: str, max_reports: int, clock: Callable[[], float] = time.time):
        self.dir = spool_dir
        self.quarantine_dir = os.path.join(spool_dir, QUARANTINE)
        self.max = max_reports
        self.clock = clock
        self._seq_path = os.path.join(state_dir, "seq")
        self._dropped_path = os.path.join(state_dir, "dropped")
        self._lock = threading.Lock()
        try:
            os.makedirs(spool_dir, mode=0o700, exist_ok=True)
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            self._entries: "OrderedDict[int, float]" = self._load()  # seq -> made_at, oldest first
            self._persisted_seq = read_int(self._seq_path)
            self._last_seq = max([self._persisted_seq] + list(self._entries))
            self._dropped = read_int(self._dropped_path)
        except (OSError, ValueError) as e:
            raise AgentdError(f"cannot open spool {spool_dir}: {e}") from None

    def _load(self) -> "OrderedDict[int, float]":
        found: List[Tuple[int, float]] = []
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            if name.startswith("."):  # a temp file torn by a crash mid-write: that report was never made
                os.unlink(path)
                continue
            if not name.endswith(SUFFIX) or not name[: -len(SUFFIX)].isdigit():
                continue
            found.append((int(name[: -len(SUFFIX)]), os.stat(path).st_mtime))
        return OrderedDict(sorted(found))

    def _path(self, seq: int) -> str:
        return os.path.join(self.dir, "%020d%s" % (seq, SUFFIX))

    # --- writing ------------------------------------------------------------------------------------
    def append(self, make: Callable[[int, SpoolState], dict]) -> dict:
        """Allocate the next seq, build the report with it (given the spool state it should carry), store it."""
        with self._lock:
            seq = self._last_seq + 1
            report = make(seq, self._state_locked())
            atomic_write(self._path(seq), json.dumps(report, separators=(",", ":")).encode())
            self._last_seq = seq
            self._entries[seq] = self.clock()
            self._enforce_bound_locked()
            return report

    def _enforce_bound_locked(self) -> None:
        dropped = 0
        while len(self._entries) > self.max:
            seq, _ = self._entries.popitem(last=False)
            self._unlink(seq)
            dropped += 1
        if dropped:
            log.warning("spool full (%d reports): dropped the %d oldest", self.max, dropped)
            self._count_dropped_locked(dropped)

    def _count_dropped_locked(self, n: int) -> None:
        self._dropped += n
        atomic_write(self._dropped_path, b"%d\n" % self._dropped)

    def _persist_counter_before_losing(self, seq: int) -> None:
        if seq > self._persisted_seq:  # the spool file is the seq's only record: persist the counter first
            atomic_write(self._seq_path, b"%d\n" % self._last_seq)
            self._persisted_seq = self._last_seq

    def _unlink(self, seq: int) -> None:
        self._persist_counter_before_losing(seq)
        try:
            os.unlink(self._path(seq))
        except FileNotFoundError:
            pass

    # --- reading ------------------------------------------------------------------------------------
    def oldest(self) -> Optional[Tuple[int, bytes]]:
        """The oldest unsent report as (seq, JSON bytes), or None when the spool is empty."""
        with self._lock:
            while self._entries:
                seq = next(iter(self._entries))
                try:
                    with open(self._path(seq), "rb") as f:
                        return seq, f.read()
                except FileNotFoundError:  # removed behind our back: forget it
                    del self._entries[seq]
            return None

    def remove(self, seq: int) -> None:
        """After the collector stored it."""
        with self._lock:
            if self._entries.pop(seq, None) is None:
                return
            self._unlink(seq)
        if not self._entries:
            fsync_dir(self.dir)

    def set_aside(self, seq: int, reason: str) -> str:
        """Move a report the collector can never accept to `<spool_dir>/quarantine/` (byte for byte, with a
        `.reason` file beside it, so an operator can read and resend it), and count it as dropped. Returns its path.
        The quarantine is bounded like the spool: beyond `max_reports` files, the oldest are deleted."""
        with self._lock:
            target = os.path.join(self.quarantine_dir, os.path.basename(self._path(seq)))
            if self._entries.pop(seq, None) is None:
                return target
            os.makedirs(self.quarantine_dir, mode=0o700, exist_ok=True)
            self._persist_counter_before_losing(seq)
            atomic_write(target[: -len(SUFFIX)] + ".reason", reason.encode() + b"\n")
            try:
                os.replace(self._path(seq), target)
            except FileNotFoundError:
                pass
            fsync_dir(self.quarantine_dir)
            fsync_dir(self.dir)
            self._count_dropped_locked(1)
            self._bound_quarantine_locked()
            return target

    def _bound_quarantine_locked(self) -> None:
        held = sorted(n for n in os.listdir(self.quarantine_dir) if n.endswith(SUFFIX))
        for name in held[: max(0, len(held) - self.max)]:
            for path in (name, name[: -len(SUFFIX)] + ".reason"):
                try:
                    os.unlink(os.path.join(self.quarantine_dir, path))
                except FileNotFoundError:
                    pass

    def state(self) -> SpoolState:
        with self._lock:
            return self._state_locked()

    def _state_locked(self) -> SpoolState:
        oldest = next(iter(self._entries.values()), None)
        age = max(0.0, self.clock() - oldest) if oldest is not None else 0.0
        return SpoolState(depth=len(self._entries), oldest_age_s=round(age, 3), dropped=self._dropped)

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def raise_floor(self, seq: int) -> bool:
        """Continue numbering above `seq` (what the collector already holds from this agent), durably. Needed when
        this state is younger than the agent: a replaced or rolled-back VM must not reuse seqs, which the collector
        would answer as duplicates and ignore. Returns True when the counter moved."""
        with self._lock:
            if seq <= self._last_seq:
                return False
            atomic_write(self._seq_path, b"%d\n" % seq)
            self._last_seq = self._persisted_seq = seq
            return True

    def __len__(self) -> int:
        return len(self._entries)
