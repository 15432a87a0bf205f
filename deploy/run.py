"""One helper for every external command of the clone (qemu-img, ssh-keygen): argv lists, a minimal environment,
stdin from /dev/null, and a failure message that tells a signal from "not found" from an exit code."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
from typing import Mapping, Optional, Sequence

from deploy.errors import CloneError

_ENV_ALLOW = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "LIBGUESTFS_BACKEND", "LIBGUESTFS_BACKEND_SETTINGS")


class CommandFailed(CloneError):
    def __init__(self, argv: Sequence[str], rc: int, stderr_tail: str):
        self.argv, self.rc, self.stderr_tail = list(argv), rc, stderr_tail
        if rc == 127:
            why = "not found"
        elif rc < 0:
            why = f"killed by {signal.Signals(-rc).name}"
        else:
            why = f"exit code {rc}"
        super().__init__(f"{shlex.join(self.argv[:3])}{' ...' if len(argv) > 3 else ''} failed ({why}): {stderr_tail}")


def minimal_env(extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in _ENV_ALLOW if k in os.environ}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env.update(extra or {})
    return env


def run(argv: Sequence[str], *, env: Optional[Mapping[str, str]] = None, timeout: float = 600,
        capture: bool = True) -> subprocess.CompletedProcess:
    """Run argv (never a shell); raise CommandFailed with the stderr tail on failure."""
    try:
        proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=capture, text=True,
                              env=minimal_env(env), timeout=timeout)
    except FileNotFoundError:
        raise CommandFailed(argv, 127, "") from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(argv, -signal.SIGKILL, f"timed out after {timeout:.0f}s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        raise CommandFailed(argv, proc.returncode, " | ".join(tail))
    return proc
