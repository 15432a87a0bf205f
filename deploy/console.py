"""An early failure signal for a replace: agentd failing, as its unit says on the VM's serial console log.

A VM whose agentd cannot start never reports, so a replace would wait out its whole health deadline (15 minutes by
default) before rolling back. agentd's unit writes "agentfleet: agentd failed (<result>, ...)" to the console after
each failed run and retries every 5 s: a few failures in a row mean it is not coming up. (systemd's own "[FAILED]
Failed to start" line is also counted, but it does not come while Restart= keeps retrying.) The log is the file
libvirt appends the serial console to on the hypervisor; when it is not readable here there is no early signal and
the health deadline decides, as before.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# agentd.service's ExecStopPost line, or systemd's own (jammy's prints the Description, later ones the unit name)
AGENTD_FAILED = re.compile(r"agentfleet: agentd failed\b"
                           r"|\[FAILED\] Failed to start (?:agentfleet agentd\b|agentd\.service)")


def console_log(state_dir: Path) -> Path:
    """Where libvirt appends an agent's serial console on its hypervisor (the domain XML names it)."""
    return state_dir / "console.log"


class ConsoleWatch:
    """Counts agentd's failed starts in what the console log gains after this watch was made (the log is appended
    across boots, so earlier boots do not count)."""

    def __init__(self, log: Path, failures: int = 3):
        self.log, self.failures = log, failures
        self.offset = log.stat().st_size if log.exists() else 0
        self.seen = 0
        self._partial = ""

    def agentd_failed(self) -> Optional[str]:
        """A reason once agentd failed to start `failures` times, else None."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return None
        self.offset += len(chunk)
        lines = (self._partial + chunk.decode("utf-8", "replace")).split("\n")
        self._partial = lines.pop()
        self.seen += sum(1 for line in lines if AGENTD_FAILED.search(ANSI.sub("", line)))
        if self.seen >= self.failures:
            return f"agentd failed to start {self.seen} times (serial console {self.log})"
        return None
