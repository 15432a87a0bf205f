"""The one exception type of the bake: caught once in the CLI and printed as one line naming the input at fault."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from host import exit_codes


class BakeError(Exception):
    """A bake cannot go on; the message names the spec entry or the step. `exit_code` says whose fault it is:
    exit_codes.FAILED (the bake failed) or exit_codes.USAGE (the spec, the lock or an argument is wrong)."""

    def __init__(self, message: str, exit_code: int = exit_codes.FAILED):
        super().__init__(message)
        self.exit_code = exit_code


@contextmanager
def input_errors() -> Iterator[None]:
    """What fails inside is the user's input (spec, lock, arguments), not the bake: exit 2 instead of 1."""
    try:
        yield
    except BakeError as e:
        raise BakeError(str(e), exit_code=exit_codes.USAGE) from None
