"""Per-agent SSH host keys, generated once on the hypervisor and kept in the agent's state dir, so a replaced VM
presents the same host identity (admins' known_hosts stay valid)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from host.run import run

KEY_TYPES = ("ed25519", "ecdsa", "rsa")


@dataclass(frozen=True)
class HostKey:
    type: str
    private: Path
    public: Path

    def public_line(self) -> str:
        return self.public.read_text().split("\n")[0].strip()


def ensure_host_keys(state_dir: Path, agent: str) -> list[HostKey]:
    """Generate the missing keys under <state_dir>/ssh/ (0700), keep existing ones."""
    ssh_dir = state_dir / "ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ssh_dir.chmod(0o700)
    keys = []
    for kind in KEY_TYPES:
        private = ssh_dir / f"ssh_host_{kind}_key"
        public = ssh_dir / f"ssh_host_{kind}_key.pub"
        if not (private.exists() and public.exists()):
            for stale in (private, public):
                stale.unlink(missing_ok=True)
            bits = ["-b", "3072"] if kind == "rsa" else []
            run(["ssh-keygen", "-q", "-t", kind, *bits, "-N", "", "-C", f"root@{agent}", "-f", str(private)],
                capture=True, timeout=60)
        keys.append(HostKey(kind, private, public))
    return keys


def known_hosts_lines(keys: list[HostKey], names: list[str]) -> list[str]:
    """Lines for an admin's ~/.ssh/known_hosts: `name,ip keytype base64`."""
    host = ",".join(names)
    return [f"{host} {' '.join(k.public_line().split()[:2])}" for k in keys]
