"""The one exception type of the clone part: caught once by the CLI and printed as one line."""
from __future__ import annotations


class CloneError(Exception):
    """A user-facing failure of the clone step; the message names the input at fault."""

    exit_code = 2


class RolledBack(CloneError):
    """A replace that could not prove the new image healthy and restored the previous one."""

    exit_code = 3  # distinct from every other failure so automation can tell "rolled back" apart
