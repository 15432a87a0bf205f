"""Every external command of the bake and the clone goes through run(): argv lists only, one environment allow-list,
stdin from /dev/null, the child killed on any exception or timeout, and one error type whose message tells a signal
kill from "not found" from an exit code. bake and deploy wrap CommandFailed in their own error at their edges.

concurrently() is the one way to run independent steps side by side (each agent's host keys, disks, libvirt start):
the work is in child processes and libvirt calls, which release the GIL, so threads are enough."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, TextIO, TypeVar

from host.errors import HostError

# What a child inherits from us; everything else it needs is passed explicitly. The CA and proxy variables matter
# where a TLS-intercepting proxy sits between the build host and the registries (npm, DIB's apt, downloads).
ENV_ALLOW = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "LIBGUESTFS_BACKEND", "LIBGUESTFS_BACKEND_SETTINGS",
             "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
             "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
             "SSH_AUTH_SOCK")  # the fleet tool's ssh uses the operator's agent
DEFAULT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
NOT_FOUND = 127  # the shell's convention, used for an executable that does not exist
TAIL_LINES = 40  # output lines kept for the error (the message shows the last one)
MAX_WORKERS = 8  # concurrent steps: enough for a host's agents; the 2-core hosts queue CPU-bound ones anyway

T = TypeVar("T")
R = TypeVar("R")


class CommandFailed(HostError):
    """An external command failed: `rc` is its exit code, -N for a kill by signal N, 127 when it was not found."""

    def __init__(self, argv: Sequence[str], rc: int, stderr_tail: str, timeout_s: Optional[float] = None):
        self.argv, self.rc, self.stderr_tail, self.timeout_s = list(argv), rc, stderr_tail, timeout_s
        last = stderr_tail.strip().splitlines()[-1].strip() if stderr_tail.strip() else ""
        shown = shlex.join(self.argv[:3]) + (" ..." if len(self.argv) > 3 else "")
        super().__init__(f"{shown} failed ({self.why}){': ' + last if last else ''}")

    @property
    def why(self) -> str:
        if self.timeout_s is not None:
            return f"timed out after {self.timeout_s:g} s, killed"
        if self.rc == NOT_FOUND:
            return f"not found: {Path(self.argv[0]).name}" if self.argv else "not found"
        if self.rc < 0:
            try:
                return f"killed by {signal.Signals(-self.rc).name}"
            except ValueError:
                return f"killed by signal {-self.rc}"
        return f"exit code {self.rc}"


@dataclass(frozen=True)
class Command:
    """A command as data: what --dry-run prints and what tests inspect."""
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    cwd: Optional[str] = None

    def shell_line(self) -> str:
        """Copy-pasteable into a shell (environment first)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env)
        return (env + " " if env else "") + shlex.join(self.argv)


def child_env(extra: Mapping[str, str] = ()) -> dict[str, str]:
    """The allow-listed part of our environment, a PATH in every case, then `extra` on top."""
    env = {k: os.environ[k] for k in ENV_ALLOW if k in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(dict(extra))
    return env


def run(cmd: Command | Sequence[str], *, log: Optional[TextIO] = None, capture: bool = False,
        input_bytes: Optional[bytes] = None, timeout: Optional[float] = None) -> str:
    """Run a command to completion and return its stdout when `capture` (else "").

    Without `capture`, stdout and stderr are streamed together into `log` line by line (a bake's log shows DIB as it
    runs). With `capture`, stdout is returned and stderr kept for the error (and copied to `log` afterwards). The
    last lines of output go into CommandFailed, so the one-line error says what went wrong without scrolling."""
    if isinstance(cmd, str) or (isinstance(cmd, Command) and isinstance(cmd.argv, str)):
        raise TypeError("run() takes an argv list, never a shell string")
    if not isinstance(cmd, Command):
        cmd = Command(tuple(cmd))
    if not cmd.argv:
        raise TypeError("run() needs a command: the argv list is empty")
    if log:
        log.write(f"$ {cmd.shell_line()}\n")
        log.flush()
    try:
        proc = subprocess.Popen(
            cmd.argv, cwd=cmd.cwd, env=child_env(dict(cmd.env)),
            stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE if capture else subprocess.STDOUT,
        )
    except FileNotFoundError:
        raise CommandFailed(cmd.argv, NOT_FOUND, "") from None
    timed_out = threading.Event()

    def kill_on_timeout() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, kill_on_timeout) if timeout is not None else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        if capture:
            out, err = proc.communicate(input_bytes)
            tail = err.decode(errors="replace")
            if log and tail:
                log.write(tail if tail.endswith("\n") else tail + "\n")
        else:
            out, tail = b"", _stream(proc, log, input_bytes)
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if timer:
            timer.cancel()
    if log:
        log.flush()
    if timed_out.is_set():
        raise CommandFailed(cmd.argv, proc.returncode, tail, timeout_s=timeout)
    if proc.returncode != 0:
        raise CommandFailed(cmd.argv, proc.returncode, tail)
    return out.decode(errors="replace")


def _stream(proc: subprocess.Popen, log: Optional[TextIO], input_bytes: Optional[bytes]) -> str:
    """Copy the child's merged output into `log` as it comes; return its last TAIL_LINES lines."""
    if input_bytes is not None:
        proc.stdin.write(input_bytes)
        proc.stdin.close()
    tail: list[bytes] = []
    for line in proc.stdout:
        tail.append(line)
        del tail[:-TAIL_LINES]
        if log:
            log.write(line.decode(errors="replace"))
    return b"".join(tail).decode(errors="replace")


def concurrently(step: Callable[[T], R], items: Sequence[T], workers: int = MAX_WORKERS) -> list[R]:
    """`step` for every item, side by side; the results in the items' order.

    The first item runs in the caller's thread (what must stay there, like a launch whose processes belong to it,
    goes first), the others in threads. Every step runs to its end before this returns or raises, so no step is left
    writing behind the caller's back (its clean-up sees everything the steps did). Then the first failure in the
    items' order is raised, as a loop over the items would have; the others are lost but for their effects."""
    if len(items) <= 1:
        return [step(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items) - 1), thread_name_prefix="concurrently") as pool:
        futures = [pool.submit(step, item) for item in items[1:]]
        try:
            try:
                first = step(items[0])
                failed: Optional[BaseException] = None
            except Exception as e:          # raised below, after the others ended
                first, failed = None, e
            for future in futures:
                future.exception()          # waits; a failure is raised below, in the items' order
        except BaseException:               # interrupted: start nothing more, let the running ones end
            for future in futures:
                future.cancel()
            raise
    if failed is not None:
        raise failed
    return [first, *(future.result() for future in futures)]
