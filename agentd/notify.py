"""systemd integration: READY=1, WATCHDOG=1 and STATUS= through systemd-python, and journal logging.

Optional: without the module (or outside systemd, when NOTIFY_SOCKET is unset) every call is a no-op.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional

try:  # python3-systemd on the image; absent on dev machines is fine
    from systemd import daemon as _daemon
except ImportError:  # pragma: no cover - depends on the machine
    _daemon = None


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET")) and _daemon is not None
        usec = os.environ.get("WATCHDOG_USEC", "")
        # ping twice per watchdog period, as sd_watchdog_enabled(3) recommends
        self.watchdog_interval_s: Optional[float] = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
        self._last_status = ""

    def _send(self, message: str) -> None:
        if self.enabled:
            _daemon.notify(message)

    def ready(self, status: str) -> None:
        self._send("READY=1\nSTATUS=" + status)

    def status(self, status: str) -> None:
        if status != self._last_status:  # the loop calls this every turn; tell systemd only what changed
            self._last_status = status
            self._send("STATUS=" + status)

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")


def setup_logging(verbose: bool = False) -> None:
    """To the journal (with priorities) under systemd when python3-systemd is there, else to stderr."""
    level = logging.DEBUG if verbose else logging.INFO
    handler: logging.Handler
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        try:
            from systemd.journal import JournalHandler
            handler = JournalHandler(SYSLOG_IDENTIFIER="agentd")
        except ImportError:
            handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s agentd %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
