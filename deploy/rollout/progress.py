"""Live progress of a rollout: one event per phase change (wave, agent, host, phase, elapsed), printed as a text
line or, with --json, as one JSON object per line (JSON Lines; the final report is the last line)."""
from __future__ import annotations

import json
import sys
import threading
from dataclasses import asdict, dataclass
from typing import Optional, Protocol, TextIO


@dataclass(frozen=True)
class ProgressEvent:
    elapsed_s: float
    phase: str                    # gate, replacing, replaced, rolled-back, error, healthy, passed, wave-passed, ...
    wave: Optional[int] = None
    agent: Optional[str] = None
    host: Optional[str] = None
    detail: str = ""


class Reporter(Protocol):
    def event(self, event: ProgressEvent) -> None: ...

    def text(self, text: str) -> None: ...

    def report(self, report: dict) -> None: ...


class TextReporter:
    """Human lines on a stream: `[  12.3s] wave 1 apollo@r710 replacing: ...`."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream, self._lock = stream, threading.Lock()

    def event(self, e: ProgressEvent) -> None:
        where = " ".join(filter(None, [f"wave {e.wave}" if e.wave is not None else "",
                                       f"{e.agent}@{e.host}" if e.agent else (e.host or "")]))
        line = f"[{e.elapsed_s:7.1f}s] {where + ' ' if where else ''}{e.phase}{': ' + e.detail if e.detail else ''}"
        self._write(line)

    def text(self, text: str) -> None:
        self._write(text)

    def report(self, report: dict) -> None:
        pass  # the caller prints render(report) through text()

    def _write(self, line: str) -> None:
        with self._lock:
            print(line, file=self.stream, flush=True)


class JsonReporter:
    """JSON Lines: {"event": "progress", ...} per event, {"event": "report", ...} last."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream, self._lock = stream, threading.Lock()

    def event(self, e: ProgressEvent) -> None:
        self._write({"event": "progress", **asdict(e)})

    def text(self, text: str) -> None:
        pass

    def report(self, report: dict) -> None:
        self._write({"event": "report", **report})

    def _write(self, obj: dict) -> None:
        with self._lock:
            print(json.dumps(obj, sort_keys=True), file=self.stream, flush=True)


class SilentReporter:
    def event(self, event: ProgressEvent) -> None:
        pass

    def text(self, text: str) -> None:
        pass

    def report(self, report: dict) -> None:
        pass
