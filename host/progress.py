"""Timed phases with deadlines, shared by the bake and the clone: one line per phase start and end on the terminal,
the same lines in a log file when there is one, and a generous deadline on every phase.

Why deadlines: a hung appliance, DIB step or libvirt call must fail the phase that hung, with one line naming it,
instead of sitting at 100 % CPU until someone kills it. At the deadline the children the phase started (commands,
the libguestfs appliance's qemu) are killed, which makes the blocked call return and the phase fail with
`PhaseTimedOut`. A call that stays blocked with no child to kill (a libvirt RPC) gets a grace period, then the process
exits with that one line:
the callers' state is written step by step, so an exit is as safe as a kill and a rerun converges.

Deadlines scale with `AGENTFLEET_DEADLINE_SCALE` (e.g. `3` on a slow machine, `0.5` to fail sooner), and one phase's
can be set in seconds with `AGENTFLEET_DEADLINES=inject=900,base=7200` (keys: the callers' DEADLINES_S tables).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Optional, TextIO

from host.errors import HostError

CANCEL_GRACE_S = 60.0
EXIT_PHASE_TIMED_OUT = 1  # host.exit_codes' "operation failed"


class PhaseError(HostError):
    """A phase could not run to its end (a deadline, a bad deadline setting); callers wrap it in their part's error."""


class PhaseTimedOut(PhaseError):
    """A phase passed its deadline; the children it started were killed."""

    def __init__(self, phase: str, deadline_s: float):
        super().__init__(f"{phase}: no end after {deadline_s:.3g} s (deadline; AGENTFLEET_DEADLINE_SCALE "
                         f"raises it); stopped")
        self.phase, self.deadline_s = phase, deadline_s


def deadline_scale() -> float:
    raw = os.environ.get("AGENTFLEET_DEADLINE_SCALE", "")
    try:
        scale = float(raw) if raw else 1.0
    except ValueError:
        raise PhaseError(f"AGENTFLEET_DEADLINE_SCALE={raw!r} is not a number") from None
    if scale <= 0:
        raise PhaseError(f"AGENTFLEET_DEADLINE_SCALE={raw!r} must be above 0")
    return scale


def deadline_for(key: str, defaults: Mapping[str, float]) -> float:
    """The deadline of phase `key` in seconds before scaling: AGENTFLEET_DEADLINES's value, else the default."""
    raw = os.environ.get("AGENTFLEET_DEADLINES", "")
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, value = item.partition("=")
        try:
            seconds = float(value) if sep else -1.0
        except ValueError:
            seconds = -1.0
        if seconds <= 0:
            raise PhaseError(f"AGENTFLEET_DEADLINES: {item!r} is not KEY=SECONDS")
        if name.strip() == key:
            return seconds
    return defaults[key]


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children first-found order), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not a process we can read
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def kill_children(spared: frozenset[int] = frozenset()) -> int:
    """SIGKILL every descendant of this process but `spared` (commands, a libguestfs appliance's qemu); how many."""
    killed = 0
    for pid in descendants(os.getpid()):
        if pid in spared:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


class Progress:
    """Phase-by-phase progress with elapsed times; `phases` holds each finished phase's duration."""

    def __init__(self, log_path: Optional[Path] = None, quiet: bool = False, out: TextIO = sys.stderr,
                 prefix: str = ""):
        self.log_path = log_path
        self.log: Optional[TextIO] = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log = open(log_path, "a", buffering=1)
        self.quiet, self.out, self.prefix = quiet, out, prefix
        self.started = time.monotonic()
        self.phases: dict[str, float] = {}

    def say(self, message: str) -> None:
        if self.log is not None:
            self.log.write(f"== {message}\n")
        if not self.quiet:
            print(f"{self.prefix}[{self._clock()}] {message}", file=self.out, flush=True)

    @contextmanager
    def phase(self, name: str, deadline_s: Optional[float] = None) -> Iterator[None]:
        """Time one step; past `deadline_s` (times AGENTFLEET_DEADLINE_SCALE) its children are killed and it fails."""
        t0 = time.monotonic()
        self.say(f"{name} ...")
        limit = deadline_s * deadline_scale() if deadline_s else None
        expired, finished = threading.Event(), threading.Event()
        older = frozenset(descendants(os.getpid())) if limit else frozenset()  # not this phase's to kill

        def expire() -> None:
            expired.set()
            self.say(f"{name}: deadline of {limit:.3g} s passed; stopping it ({kill_children(older)} processes killed)")
            if not finished.wait(CANCEL_GRACE_S):  # blocked with nothing to kill: exit, as a kill would
                print(f"{self.prefix}{PhaseTimedOut(name, limit)}; exiting", file=sys.stderr, flush=True)
                os._exit(EXIT_PHASE_TIMED_OUT)

        timer = threading.Timer(limit, expire) if limit else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        where = f" (log: {self.log_path})" if self.log_path else ""
        try:
            yield
        except BaseException:
            finished.set()
            self.say(f"{name} FAILED after {time.monotonic() - t0:.1f}s{where}")
            if expired.is_set():
                raise PhaseTimedOut(name, limit or 0) from None
            raise
        finally:
            finished.set()
            if timer is not None:
                timer.cancel()
        if expired.is_set():  # the body finished anyway, but after its deadline: its children were killed
            self.say(f"{name} FAILED after {time.monotonic() - t0:.1f}s{where}")
            raise PhaseTimedOut(name, limit or 0)
        self.phases[name] = time.monotonic() - t0
        self.say(f"{name} done in {self.phases[name]:.1f}s")

    def _clock(self) -> str:
        s = int(time.monotonic() - self.started)
        return f"{s // 60:02d}:{s % 60:02d}"

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
