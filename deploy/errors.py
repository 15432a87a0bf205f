"""The one exception type of the clone part: caught once by the CLI and printed as one line."""
from __future__ import annotations

from typing import Sequence


class CloneError(Exception):
    """A user-facing failure of the clone step; the message names the input at fault."""

    exit_code = 2


class RolledBack(CloneError):
    """A replace that could not prove the new image healthy and restored the previous one; `results` holds what the
    run did to every agent (the rolled-back ones and the others), so the CLI can still report all of them."""

    exit_code = 3  # distinct from every other failure so automation can tell "rolled back" apart

    def __init__(self, message: str, results: Sequence = ()):
        super().__init__(message)
        self.results = tuple(results)
