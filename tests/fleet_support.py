"""Real hypervisors for the fleet tests: one OpenSSH server per simulated host, on its own loopback address
(127.0.0.0/8) and port, with its own host key, storage, state and images dirs and its own identity file
(`/etc/agentfleet/host` is AGENTFLEET_HOST_FILE, set for its sessions by sshd's SetEnv). Root logs in with a key the
test generated; the host side runs this same checkout (every host's `agentfleet` path is the repo)."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import yaml

from host.progress import descendants

REPO = Path(__file__).resolve().parent.parent
SSHD = "/usr/sbin/sshd"
PYTHON = sys.executable


@dataclass
class SimHost:
    name: str
    address: str
    port: int
    root: Path                         # this host's private tree
    process: Optional[subprocess.Popen] = None

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def images(self) -> Path:
        return self.storage / "golden"

    @property
    def host_file(self) -> Path:
        return self.root / "etc" / "host"

    @property
    def log(self) -> Path:
        return self.root / "sshd.log"

    def stop(self) -> None:
        """Down like a powered-off machine: the listener and every open connection (masters included)."""
        if self.process and self.process.poll() is None:
            doomed = descendants(self.process.pid)
            self.process.kill()
            self.process.wait(10)
            for pid in doomed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def start(self) -> None:
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.root / "sshd_config"), "-E", str(self.log)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.address, self.port), 0.2):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd for {self.name} exited: {self.log.read_text()[-500:]}")
            time.sleep(0.05)
        raise RuntimeError(f"sshd for {self.name} did not listen on {self.address}:{self.port}")

    def inventory_entry(self, *, uri: str = "test:///default", python: str = PYTHON) -> dict:
        return {"ssh": {"to": f"root@{self.address}", "port": self.port, "agentfleet": str(REPO), "python": python},
                "uri": uri, "storage_dir": str(self.storage), "state_dir": str(self.state), "ram_gb": 64,
                "disk_gb": 100}


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def short_dir() -> str:
    """A control dir short enough for SSH master sockets (pytest's tmp paths are not)."""
    return tempfile.mkdtemp(prefix="afc-", dir="/tmp")


def keygen(path: Path, comment: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path


@dataclass
class Lab:
    """N simulated hypervisors and the workstation's side: its key, fleet dir (known_hosts) and control dir."""
    work: Path
    hosts: dict[str, SimHost]
    client_key: Path
    fleet_dir: Path
    control_dir: Path
    env: dict = field(default_factory=dict)

    def overlay(self, agents: dict | None = None, **extra) -> Path:
        """Write the lab's whole inventory (deploy/fleet.yaml's settings, the lab's hosts and the agents given, then
        `extra` merged over) and make it the default: the seed's 10.220.1.x hosts are not in it, so no test can
        reach for them."""
        from deploy.inventory import deep_merge
        data = yaml.safe_load((REPO / "deploy" / "fleet.yaml").read_text())
        data["network"]["mode"] = "user"
        data["hosts"] = {n: h.inventory_entry() for n, h in self.hosts.items()}
        data["agents"] = agents or {}
        data = deep_merge(data, extra)
        path = self.work / "inventory.yaml"
        path.write_text(yaml.safe_dump(data))
        self.env["AGENTFLEET_INVENTORY"] = str(path)
        return path

    def fleet(self, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """`python -m deploy.fleet ...` as a real process, as a user runs it."""
        return subprocess.run([PYTHON, "-m", "deploy.fleet", *args], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, **self.env, **(env or {})}, timeout=timeout)


def start_lab(work: Path, names: tuple[str, ...], first_address: int = 2, log_level: str = "VERBOSE") -> Lab:
    Path("/run/sshd").mkdir(exist_ok=True)              # sshd's privilege separation dir
    work.mkdir(parents=True, exist_ok=True)
    client_key = keygen(work / "workstation_key", "fleet-tests")
    hosts = {}
    for i, name in enumerate(names):
        address = f"127.0.{(first_address + i) // 250}.{(first_address + i) % 250 + 2}"
        root = work / name
        (root / "etc").mkdir(parents=True)
        for d in ("storage/golden", "state"):
            (root / d).mkdir(parents=True)
        host = SimHost(name, address, free_port(address), root)
        host.host_file.write_text(name + "\n")
        keygen(root / "ssh_host_ed25519_key", name)
        shutil.copy(client_key.with_suffix(".pub"), root / "authorized_keys")
        (root / "sshd_config").write_text("\n".join([
            f"ListenAddress {address}:{host.port}",
            f"HostKey {root / 'ssh_host_ed25519_key'}",
            f"PidFile {root / 'sshd.pid'}",
            f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "MaxSessions 64", "MaxStartups 64", f"LogLevel {log_level}",
            f"SetEnv AGENTFLEET_HOST_FILE={host.host_file}",
            "Subsystem sftp internal-sftp", ""]))
        host.start()
        hosts[name] = host
    fleet_dir = work / "fleet"
    control = Path(short_dir())
    lab = Lab(work, hosts, client_key, fleet_dir, control)
    lab.env = {"AGENTFLEET_FLEET_DIR": str(fleet_dir), "AGENTFLEET_SSH_CONTROL_DIR": str(control),
               "AGENTFLEET_SSH_IDENTITY": str(client_key), "AGENTFLEET_INVENTORY": "/nonexistent/call-lab.overlay"}
    return lab


@contextlib.contextmanager
def running_lab(work: Path, names: tuple[str, ...], first_address: int = 2,
                log_level: str = "VERBOSE") -> Iterator[Lab]:
    lab = start_lab(work, names, first_address, log_level)
    try:
        yield lab
    finally:
        for host in lab.hosts.values():
            host.stop()
        shutil.rmtree(lab.control_dir, ignore_errors=True)


class ProcessWatch:
    """Scans every process's argv and environment while a test runs: a secret must never show in either."""

    def __init__(self, needle: bytes):
        import threading
        self.needle, self.seen, self.scans = needle, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").glob("[0-9]*"):
                for name in ("cmdline", "environ"):
                    with contextlib.suppress(OSError):
                        if self.needle in (proc / name).read_bytes():
                            self.seen.append(f"{proc.name}/{name}")
            self.scans += 1

    def __enter__(self) -> "ProcessWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def files_holding(root: Path, needle: bytes, skip=lambda p: False) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and not p.is_socket() and not skip(p)
            and needle in p.read_bytes()]


def write_vault(work: Path, values: dict) -> tuple[Path, Path]:
    """The seed's Ansible Vault as its user keeps it: one flat mapping, encrypted with a password file."""
    password = work / "vault-password"
    password.write_text("correct horse battery staple\n")
    password.chmod(0o600)
    vault = work / "passwd.yml"
    vault.write_text(yaml.safe_dump(values))
    subprocess.run([str(Path(PYTHON).parent / "ansible-vault"), "encrypt", "--vault-password-file", str(password),
                    str(vault)], check=True, capture_output=True)
    return vault, password
