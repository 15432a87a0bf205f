"""Every external command of the bake goes through run(): argv lists, a small explicit environment, clear failures."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence, TextIO

from bake.errors import BakeError

# What a child inherits from us; everything else it needs is passed explicitly. The CA and proxy variables matter
# where a TLS-intercepting proxy sits between the build host and the registries.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "LIBGUESTFS_BACKEND", "LIBGUESTFS_BACKEND_SETTINGS",
              "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
              "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


class CommandFailed(BakeError):
    def __init__(self, argv: Sequence[str], returncode: int, tail: str):
        self.argv, self.returncode, self.tail = list(argv), returncode, tail
        if returncode == 127:
            why = "not found"
        elif returncode < 0:
            why = f"killed by {signal.Signals(-returncode).name}"
        else:
            why = f"exit code {returncode}"
        last = tail.strip().splitlines()[-1] if tail.strip() else ""
        super().__init__(f"{Path(argv[0]).name} failed ({why}){': ' + last if last else ''}")


@dataclass(frozen=True)
class Command:
    """A command as data: what --dry-run prints and what tests inspect."""
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    cwd: Optional[str] = None

    def shell_line(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env)
        return (env + " " if env else "") + shlex.join(self.argv)


def child_env(extra: Mapping[str, str] = ()) -> dict[str, str]:
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env.update(dict(extra))
    return env


def run(cmd: Command | Sequence[str], log: Optional[TextIO] = None, capture: bool = False,
        input_bytes: Optional[bytes] = None) -> str:
    """Run a command to completion. Output goes to `log` (or is captured and returned); failure raises CommandFailed
    with the last lines of output, so the one-line error says what went wrong without scrolling."""
    if not isinstance(cmd, Command):
        cmd = Command(tuple(cmd))
    if log:
        log.write(f"$ {cmd.shell_line()}\n")
        log.flush()
    try:
        proc = subprocess.Popen(
            cmd.argv, cwd=cmd.cwd, env=child_env(dict(cmd.env)),
            stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
    except FileNotFoundError:
        raise CommandFailed(cmd.argv, 127, "") from None
    tail: list[bytes] = []
    out: list[bytes] = []
    try:
        if input_bytes is not None:
            proc.stdin.write(input_bytes)
            proc.stdin.close()
        for line in proc.stdout:
            tail.append(line)
            del tail[:-40]
            if capture:
                out.append(line)
            if log:
                log.write(line.decode(errors="replace"))
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if log:
        log.flush()
    if proc.returncode != 0:
        raise CommandFailed(cmd.argv, proc.returncode, b"".join(tail).decode(errors="replace"))
    return b"".join(out).decode(errors="replace")
