"""The backup directory's format, defined once: its layout, its manifest, and the checks a restore makes before it
trusts one. Written by deploy/backup.py, read by deploy/restore.py (and the fleet tool, which verifies a pulled copy).

A backup of one agent is a directory `<agent>-<YYYYmmddTHHMMSSZ>/` (0700) holding

    manifest.json                    what follows, with the sha256 and size of every file
    data.qcow2                       the data disk (/home/agent), secrets injected from the inventory scrubbed out
    ssh/ssh_host_<type>_key[.pub]    the agent's SSH host keys (private keys: secret, 0600)

The manifest carries the identity the hypervisor keeps for the agent (domain UUID, MAC, machine-id, the first
clone's time and the host keys' public lines), so a restore on any host brings the same agent back."""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from deploy.errors import CloneError
from deploy.hostkeys import KEY_TYPES

FORMAT = "agentfleet-agent-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATA_DISK = "data.qcow2"
SSH_DIR = "ssh"
DIR_MODE = 0o700          # host keys are secret: the backup dir and its ssh/ are the owner's only
FILE_MODE = 0o600
PARTIAL_PREFIX = ".partial-"
NAME = re.compile(r"^(?P<agent>.+)-(?P<when>\d{8}T\d{6}Z)$")


def key_files() -> tuple[str, ...]:
    """Every host key file a backup holds, as paths relative to the backup dir."""
    return tuple(f"{SSH_DIR}/ssh_host_{kind}_key{suffix}" for kind in KEY_TYPES for suffix in ("", ".pub"))


def backup_name(agent: str, taken_at: float) -> str:
    """`athena-20261128T210600Z`: sorts by time, says whose it is."""
    return f"{agent}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(taken_at))}"


def partial_name(agent: str, taken_at: float) -> str:
    """Where a backup is written until it is whole; renamed to backup_name() at the end, removed on any failure."""
    return PARTIAL_PREFIX + backup_name(agent, taken_at)


@dataclass(frozen=True)
class BackupFile:
    path: str             # relative to the backup dir
    sha256: str
    size: int


@dataclass(frozen=True)
class Identity:
    """What makes the agent itself on a hypervisor, beside its data: the state.json subset a restore recreates."""
    uuid: str
    mac: str
    machine_id: str
    cloned_at: int
    host_keys: tuple[tuple[str, str], ...]     # (type, public line)

    def to_json(self) -> dict:
        return {"uuid": self.uuid, "mac": self.mac, "machine_id": self.machine_id, "cloned_at": self.cloned_at,
                "host_keys": dict(self.host_keys)}


@dataclass(frozen=True)
class Manifest:
    agent: str
    host: str                      # the inventory host it was taken on
    image_version: str             # the image the agent ran; a restore makes a fresh root overlay of it
    taken_at: float                # epoch seconds
    live: bool                     # taken while the VM ran (crash-consistent), or from a shut-off VM
    identity: Identity
    files: tuple[BackupFile, ...]
    scrubbed: tuple[str, ...] = ()  # paths in the guest removed from the copy (secrets; a restore injects them)

    def to_json(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "agent": self.agent, "host": self.host,
                "image_version": self.image_version, "taken_at": self.taken_at,
                "taken_at_utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.taken_at)),
                "live": self.live, "identity": self.identity.to_json(), "scrubbed": list(self.scrubbed),
                "files": {f.path: {"sha256": f.sha256, "size": f.size} for f in self.files}}

    @classmethod
    def from_json(cls, data: object, where: str) -> "Manifest":
        """Refuse, with one line naming the field, anything but this format's manifest."""
        def need(mapping: object, key: str, kind: type, at: str):
            if not isinstance(mapping, dict) or key not in mapping:
                raise CloneError(f"{where}: {at}{key}: missing")
            value = mapping[key]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise CloneError(f"{where}: {at}{key}: must be {kind.__name__}")
            return value

        if need(data, "format", str, "") != FORMAT:
            raise CloneError(f"{where}: not an agentfleet agent backup (format {data['format']!r})")
        if need(data, "format_version", int, "") != FORMAT_VERSION:
            raise CloneError(f"{where}: format_version {data['format_version']} is not {FORMAT_VERSION} "
                             f"(made by another agentfleet version)")
        ident = need(data, "identity", dict, "")
        keys = need(ident, "host_keys", dict, "identity.")
        files = need(data, "files", dict, "")
        parsed = []
        for path, entry in files.items():
            _safe_relative(path, where)
            parsed.append(BackupFile(path, need(entry, "sha256", str, f"files.{path}."),
                                     need(entry, "size", int, f"files.{path}.")))
        identity = Identity(need(ident, "uuid", str, "identity."), need(ident, "mac", str, "identity."),
                            need(ident, "machine_id", str, "identity."), need(ident, "cloned_at", int, "identity."),
                            tuple(sorted((str(k), str(v)) for k, v in keys.items())))
        return cls(agent=need(data, "agent", str, ""), host=need(data, "host", str, ""),
                   image_version=need(data, "image_version", str, ""), taken_at=need(data, "taken_at", float, ""),
                   live=need(data, "live", bool, ""), identity=identity, files=tuple(parsed),
                   scrubbed=tuple(str(p) for p in data.get("scrubbed", [])))


def _safe_relative(path: str, where: str) -> None:
    """A manifest names files inside its own dir only (a tampered one must not make a restore read /etc/shadow)."""
    parts = Path(path).parts
    if not path or Path(path).is_absolute() or ".." in parts or path not in (DATA_DISK, *key_files()):
        raise CloneError(f"{where}: files: {path!r} is not a file of an agent backup")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def describe_files(root: Path) -> tuple[BackupFile, ...]:
    """sha256 and size of every file a backup holds (what the manifest records), in a fixed order."""
    return tuple(BackupFile(rel, sha256_file(root / rel), (root / rel).stat().st_size)
                 for rel in (DATA_DISK, *key_files()))


def write_manifest(root: Path, manifest: Manifest) -> None:
    """The manifest last, fsync'd: a backup dir is whole once it has one (and only then renamed into place)."""
    data = (json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n").encode()
    fd = os.open(root / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(root: Path) -> Manifest:
    where = f"backup {root}"
    try:
        raw = (root / MANIFEST).read_text()
    except FileNotFoundError:
        raise CloneError(f"{where}: no {MANIFEST} (not a backup dir, or one never finished)") from None
    except OSError as e:
        raise CloneError(f"{where}: {MANIFEST}: unreadable ({e.strerror})") from None
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise CloneError(f"{where}: {MANIFEST}: not JSON ({e})") from None
    return Manifest.from_json(data, f"{where}: {MANIFEST}")


def verify(root: Path, agent: Optional[str] = None) -> Manifest:
    """The manifest, once every file it names is there with its size and sha256, and every file a restore needs is
    named: a truncated copy or a flipped bit is refused before anything is changed."""
    manifest = read_manifest(root)
    where = f"backup {root}"
    if agent is not None and manifest.agent != agent:
        raise CloneError(f"{where}: is a backup of {manifest.agent}, not {agent}")
    named = {f.path for f in manifest.files}
    missing = [p for p in (DATA_DISK, *key_files()) if p not in named]
    if missing:
        raise CloneError(f"{where}: {MANIFEST} names no {missing[0]}")
    for f in manifest.files:
        path = root / f.path
        if not path.is_file():
            raise CloneError(f"{where}: {f.path} is missing")
        size = path.stat().st_size
        if size != f.size:
            raise CloneError(f"{where}: {f.path} is {size} bytes, the manifest says {f.size} (truncated copy?)")
        if sha256_file(path) != f.sha256:
            raise CloneError(f"{where}: {f.path} does not match its sha256 in {MANIFEST} (corrupted copy)")
    return manifest


def backups_of(parent: Path, agent: str) -> list[Path]:
    """An agent's finished backups in `parent`, oldest first (partial ones are never listed)."""
    if not parent.is_dir():
        return []
    found = [p for p in parent.iterdir() if (m := NAME.match(p.name)) and m["agent"] == agent and p.is_dir()]
    return sorted(found, key=lambda p: p.name)


def backup_dir(path: Path, agent: str) -> Path:
    """`path` itself when it is a backup, else the newest backup of `agent` in it (what `--restore DIR` takes)."""
    if (path / MANIFEST).exists():
        return path
    found = backups_of(path, agent)
    if not found:
        raise CloneError(f"{path}: neither a backup ({MANIFEST}) nor a directory holding a backup of {agent}")
    return found[-1]
