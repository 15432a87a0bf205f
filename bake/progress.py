"""Phase-by-phase progress on the terminal with elapsed time, and the full log in a file."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO


class Progress:
    def __init__(self, log_path: Path, quiet: bool = False, out: TextIO = sys.stderr):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self.log = open(log_path, "a", buffering=1)
        self.quiet, self.out = quiet, out
        self.started = time.monotonic()
        self.phases: dict[str, float] = {}

    def say(self, message: str) -> None:
        self.log.write(f"== {message}\n")
        if not self.quiet:
            print(f"[{self._clock()}] {message}", file=self.out, flush=True)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time one step; on failure the message says which step failed and where the log is."""
        t0 = time.monotonic()
        self.say(f"{name} ...")
        try:
            yield
        except BaseException:
            self.say(f"{name} FAILED after {time.monotonic() - t0:.1f}s (log: {self.log_path})")
            raise
        self.phases[name] = time.monotonic() - t0
        self.say(f"{name} done in {self.phases[name]:.1f}s")

    def _clock(self) -> str:
        s = int(time.monotonic() - self.started)
        return f"{s // 60:02d}:{s % 60:02d}"

    def close(self) -> None:
        self.log.close()
