"""The one way the fleet tool talks to a hypervisor: the OpenSSH client, never a shell of ours.

Every call: BatchMode (no prompt can hang a run), host keys pinned under the inventory host's name in a known_hosts
file the tool keeps (first contact is explicit: `fleet trust HOST` or `--accept-new`), one master connection per
host reused by every call (ControlMaster in a private directory), a connect timeout, keep-alives, and a hard
timeout on the whole call. An SSH-level failure becomes one FleetError line naming the host."""
from __future__ import annotations

import os
import shlex
import signal
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, TypeVar

from deploy.fleet.errors import FleetError, SshFailed
from deploy.inventory import Host
from host.run import child_env

T = TypeVar("T")
SSH_FAILED = 255          # ssh's own exit code for "could not connect or authenticate"
AGENTFLEET_MISSING = 97   # the remote prelude's code: no agentfleet checkout or python at the inventory's path


def fleet_dir() -> Path:
    """Where the tool keeps what it learns about hosts (known_hosts): $AGENTFLEET_FLEET_DIR or ~/.config/agentfleet."""
    return Path(os.environ.get("AGENTFLEET_FLEET_DIR") or Path.home() / ".config" / "agentfleet")


def control_dir() -> Path:
    """Master sockets need a short path (sun_path is 108 bytes), so not under the fleet dir."""
    if os.environ.get("AGENTFLEET_SSH_CONTROL_DIR"):
        return Path(os.environ["AGENTFLEET_SSH_CONTROL_DIR"])
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return Path(base) / f"agentfleet-ssh-{os.getuid()}"


def private_dir(path: Path) -> Path:
    """Create (0700) or accept a directory only we can enter: a master socket there is a logged-in root shell."""
    if len(str(path)) > 40:   # + "/" + %C (40 hex) + ssh's temporary suffix (17) must fit in sun_path (108)
        raise FleetError(f"ssh control dir {path}: path too long for a socket; set AGENTFLEET_SSH_CONTROL_DIR "
                         f"to a shorter one (40 characters at most)")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise FleetError(f"ssh control dir {path}: must be owned by uid {os.getuid()} with mode 0700")
    return path


@dataclass(frozen=True)
class SshConfig:
    known_hosts: Path
    control_dir: Path
    identity: Optional[Path] = None       # default: the user's own keys and agent
    accept_new: bool = False              # pin an unknown host's key at first contact (never a changed one)
    connect_timeout_s: int = 5
    control_persist_s: int = 60

    @classmethod
    def default(cls, identity: Optional[Path] = None, accept_new: bool = False) -> "SshConfig":
        identity = identity or (Path(os.environ["AGENTFLEET_SSH_IDENTITY"])
                                if os.environ.get("AGENTFLEET_SSH_IDENTITY") else None)
        return cls(known_hosts=fleet_dir() / "known_hosts", control_dir=control_dir(), identity=identity,
                   accept_new=accept_new)


@dataclass(frozen=True)
class Completed:
    host: str
    rc: int
    stdout: bytes
    stderr: str


class Ssh:
    """Runs commands on inventory hosts. Remote argv is quoted with shlex (ssh hands the remote shell one string)."""

    def __init__(self, config: SshConfig):
        self.config = config

    def base_argv(self, host: Host) -> list[str]:
        if host.ssh is None:
            raise FleetError(f"{host.name}: no ssh entry in the inventory (hosts.{host.name}.ssh: root@ADDRESS)")
        c = self.config
        opts = {
            "BatchMode": "yes",
            "StrictHostKeyChecking": "accept-new" if c.accept_new else "yes",
            "UserKnownHostsFile": str(c.known_hosts),
            "GlobalKnownHostsFile": "/dev/null",
            "HostKeyAlias": host.name,              # pinned by inventory name: a new address keeps the identity
            "CheckHostIP": "no",
            "ConnectTimeout": str(c.connect_timeout_s),
            "ServerAliveInterval": "5",
            "ServerAliveCountMax": "3",
            "ControlMaster": "auto",
            "ControlPath": str(c.control_dir / "%C"),
            "ControlPersist": str(c.control_persist_s),
            "LogLevel": "ERROR",
        }
        if c.identity:
            opts.update(IdentityFile=str(c.identity), IdentitiesOnly="yes")
        argv = ["ssh"]
        for key, value in opts.items():
            argv += ["-o", f"{key}={value}"]
        return argv + ["-p", str(host.ssh.port), "-l", host.ssh.user, host.ssh.address]

    def argv(self, host: Host, remote: Sequence[str]) -> list[str]:
        return [*self.base_argv(host), "--", shlex.join(remote)]

    def _prepare(self) -> None:
        private_dir(self.config.control_dir)
        self.config.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        self.config.known_hosts.touch(mode=0o600, exist_ok=True)

    def run(self, host: Host, remote: Sequence[str], *, stdin: bytes = b"", timeout: float = 60) -> Completed:
        """Run `remote` on the host; raise FleetError for an SSH failure or the timeout, return anything else."""
        self._prepare()
        argv = self.argv(host, remote)
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, env=child_env())
        except subprocess.TimeoutExpired:
            raise SshFailed(f"{host.name}: no answer within {timeout:.0f} s (ssh {host.ssh.address})") from None
        stderr = proc.stderr.decode(errors="replace")
        if proc.returncode == SSH_FAILED:
            raise SshFailed(explain(host, stderr, self.config.known_hosts))
        return Completed(host.name, proc.returncode, proc.stdout, stderr)

    def popen(self, host: Host, remote: Sequence[str]) -> subprocess.Popen:
        """A streaming call (push): the caller writes stdin and waits; `explain()` turns rc 255 into a line."""
        self._prepare()
        return subprocess.Popen(self.argv(host, remote), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=child_env(), start_new_session=True)

    def close(self, host: Host) -> None:
        """Stop the host's master connection (tests, and `fleet trust` after a key change)."""
        if host.ssh is not None:
            base = self.base_argv(host)
            subprocess.run([*base[:-1], "-O", "exit", base[-1]], capture_output=True, timeout=10, env=child_env())


def explain(host: Host, stderr: str, known_hosts: Path) -> str:
    """ssh's stderr (exit 255) as one line that says what to do."""
    where = f"{host.ssh.user}@{host.ssh.address}:{host.ssh.port}" if host.ssh else host.name
    text = stderr.strip()
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "differs from the key for" in text:
        return (f"{host.name}: host key of {where} differs from the one pinned in {known_hosts}; if the host was "
                f"reinstalled, check its new key and run `python -m deploy.fleet trust {host.name} --replace`")
    if "No ED25519 host key is known" in text or "Host key verification failed" in text \
            or "No matching host key" in text or "is not known" in text:
        return (f"{host.name}: no pinned host key for {where}; run `python -m deploy.fleet trust {host.name}` "
                f"(or pass --accept-new)")
    if "Permission denied" in text:
        return f"{host.name}: login refused at {where} (no authorized key for {host.ssh.user} there?)"
    last = text.splitlines()[-1] if text else "ssh failed"
    return f"{host.name}: unreachable at {where} ({last.removeprefix('ssh: ')})"


@dataclass(frozen=True)
class Outcome:
    """One host's result of a parallel step: a value, or the one-line error that stopped that host."""
    host: str
    value: object = None
    error: str = ""
    ssh_failed: bool = False      # the connection failed, not a step on the host

    @property
    def ok(self) -> bool:
        return not self.error


def each_host(hosts: Sequence[Host], step: Callable[[Host], T]) -> dict[str, Outcome]:
    """Run step for every host at once; one host's failure never stops the others."""
    def guarded(host: Host) -> Outcome:
        try:
            return Outcome(host.name, value=step(host))
        except FleetError as e:
            return Outcome(host.name, error=str(e), ssh_failed=isinstance(e, SshFailed))
        except Exception as e:  # a bug on one host must not lose the other hosts' results
            return Outcome(host.name, error=f"{host.name}: {type(e).__name__}: {e}")
    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=min(32, len(hosts))) as pool:
        return {o.host: o for o in pool.map(guarded, hosts)}


def remote_python(host: Host, module_args: Sequence[str], site: bool = True,
                  env: Optional[dict[str, str]] = None) -> list[str]:
    """`cd <agentfleet> && <python> -m ...` as one argv for `sh -c`, exiting AGENTFLEET_MISSING when the checkout or
    its python is not where the inventory says. site=False (-S) for steps that need only the standard library: a
    venv's site set-up costs 0.3 s per call, and a push makes several calls per host."""
    af, py = host.ssh.agentfleet_dir, host.ssh.host_python
    flags = [] if site else ["-S"]
    assigns = [f"{k}={v}" for k, v in (env or {}).items()]   # never secrets: the remote argv is visible there
    command = shlex.join([*(["env", *assigns] if assigns else []), py, *flags, *module_args])
    script = (f"test -d {shlex.quote(af)}/deploy/fleet -a -x {shlex.quote(py)} || exit {AGENTFLEET_MISSING}; "
              f"cd {shlex.quote(af)} && exec {command}")
    return ["sh", "-c", script]


def check_remote(done: Completed, host: Host, what: str) -> Completed:
    """A remote step's own failure (not ssh's) as one line."""
    if done.rc == AGENTFLEET_MISSING:
        raise FleetError(f"{host.name}: agentfleet not found at {host.ssh.agentfleet_dir} (python "
                         f"{host.ssh.host_python}); `python -m deploy.fleet setup {host.name}` explains")
    if done.rc != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.rc}"]
        raise FleetError(f"{host.name}: {what} failed: {tail[0].removeprefix('clone: ')}")
    return done


def trusted_lines(alias: str, scanned: str) -> list[str]:
    """ssh-keyscan's lines with the host field replaced by the inventory name (what HostKeyAlias looks up)."""
    lines = []
    for line in scanned.splitlines():
        parts = line.split()
        if len(parts) >= 3 and not line.startswith("#"):
            lines.append(" ".join([alias, parts[1], parts[2]]))
    return sorted(set(lines))


def trust(config: SshConfig, host: Host, replace: bool = False) -> list[str]:
    """Pin the host's current keys under its inventory name; refuse to change pinned keys unless replace."""
    if host.ssh is None:
        raise FleetError(f"{host.name}: no ssh entry in the inventory")
    try:
        scan = subprocess.run(["ssh-keyscan", "-T", str(config.connect_timeout_s), "-p", str(host.ssh.port),
                               host.ssh.address], capture_output=True, text=True, timeout=30, env=child_env())
    except subprocess.TimeoutExpired:
        raise FleetError(f"{host.name}: no host key from {host.ssh.address} within 30 s") from None
    new = trusted_lines(host.name, scan.stdout)
    if not new:
        raise FleetError(f"{host.name}: no host key from {host.ssh.address}:{host.ssh.port} (unreachable?)")
    config.known_hosts.parent.mkdir(parents=True, exist_ok=True)
    old = config.known_hosts.read_text().splitlines() if config.known_hosts.exists() else []
    mine = sorted(line for line in old if line.split(" ", 1)[0] == host.name)
    if mine and mine != new and not replace:
        raise FleetError(f"{host.name}: keys already pinned in {config.known_hosts} differ from what "
                         f"{host.ssh.address} shows now; check them, then `trust {host.name} --replace`")
    kept = [line for line in old if line.split(" ", 1)[0] != host.name]
    tmp = config.known_hosts.with_name(config.known_hosts.name + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in [*kept, *new]))
    tmp.chmod(0o600)
    os.replace(tmp, config.known_hosts)
    return new


def kill_group(proc: subprocess.Popen) -> None:
    """Stop a streaming ssh and anything it started locally."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def fingerprints(lines: Sequence[str]) -> list[str]:
    proc = subprocess.run(["ssh-keygen", "-l", "-f", "-"], input="".join(f"{x}\n" for x in lines),
                          capture_output=True, text=True, env=child_env())
    return proc.stdout.strip().splitlines()
