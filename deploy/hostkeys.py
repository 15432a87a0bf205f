"""Per-agent SSH host keys, generated once on the hypervisor and kept in the agent's state dir, so a replaced VM
presents the same host identity (admins' known_hosts stay valid)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from host.run import concurrently, run

KEY_TYPES = ("ed25519", "ecdsa", "rsa")


@dataclass(frozen=True)
class HostKey:
    type: str
    private: Path
    public: Path

    def public_line(self) -> str:
        return self.public.read_text().split("\n")[0].strip()


def ensure_host_keys(state_dir: Path, agent: str) -> list[HostKey]:
    """Generate the missing keys under <state_dir>/ssh/ (0700), keep existing ones. The types are generated side by
    side: RSA's prime search is most of a new agent's prepare time, the others need not wait for it."""
    ssh_dir = state_dir / "ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ssh_dir.chmod(0o700)
    keys = [HostKey(kind, ssh_dir / f"ssh_host_{kind}_key", ssh_dir / f"ssh_host_{kind}_key.pub")
            for kind in KEY_TYPES]
    concurrently(lambda key: _generate(key, agent), [k for k in keys if not (k.private.exists() and k.public.exists())])
    return keys


def _generate(key: HostKey, agent: str) -> None:
    for stale in (key.private, key.public):
        stale.unlink(missing_ok=True)
    bits = ["-b", "3072"] if key.type == "rsa" else []
    run(["ssh-keygen", "-q", "-t", key.type, *bits, "-N", "", "-C", f"root@{agent}", "-f", str(key.private)],
        capture=True, timeout=60)


def known_hosts_lines(keys: list[HostKey], names: list[str]) -> list[str]:
    """Lines for an admin's ~/.ssh/known_hosts: `name,ip keytype base64`."""
    host = ",".join(names)
    return [f"{host} {' '.join(k.public_line().split()[:2])}" for k in keys]
