"""The one exception type of the clone part: caught once by the CLI and printed as one line."""
from __future__ import annotations

from typing import Optional, Sequence

from host import exit_codes


class CloneError(Exception):
    """A user-facing failure of the clone step; the message names the input at fault. Most are the input's fault
    (exit_codes.USAGE); a failed tool, libvirt or libguestfs says exit_codes.FAILED."""

    exit_code = exit_codes.USAGE

    def __init__(self, message: str, exit_code: Optional[int] = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class RolledBack(CloneError):
    """A replace that could not prove the new image healthy and restored the previous one; `results` holds what the
    run did to every agent (the rolled-back ones and the others), so the CLI can still report all of them."""

    exit_code = exit_codes.ROLLED_BACK  # distinct from every other failure so automation can tell it apart

    def __init__(self, message: str, results: Sequence = ()):
        super().__init__(message)
        self.results = tuple(results)
