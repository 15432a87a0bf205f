"""The baseline drift is measured against: the image manifest plus what the clone injected, plus the VM's identity.

Read from /etc/agentfleet/{image.json, injected.json, identity.json} under the configured root.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, Optional

from .config import Config
from .errors import AgentdError
from .fsutil import rooted


@dataclass(frozen=True)
class FileState:
    """What drift compares for one file: content hash, octal mode ("0644") and "user:group"."""
    sha256: Optional[str]
    mode: str
    owner: str


@dataclass(frozen=True)
class Identity:
    agent: str = ""
    host: str = ""
    role: str = ""
    ip: str = ""
    image_version: str = ""


@dataclass(frozen=True)
class Baseline:
    image_version: str
    files: Dict[str, FileState] = field(default_factory=dict)      # in-VM absolute path -> expected state
    packages: Dict[str, str] = field(default_factory=dict)         # dpkg name -> version
    identity: Identity = field(default_factory=Identity)


def _read_json(path: str, required: bool) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        if required:
            raise AgentdError(f"baseline {path} is missing") from None
        return {}
    except (OSError, ValueError) as e:
        raise AgentdError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise AgentdError(f"{path}: must be a JSON object")
    return data


def parse_files(data: dict, where: str) -> Dict[str, FileState]:
    if not isinstance(data, dict):
        raise AgentdError(f"{where}: baseline must map absolute paths to {{sha256, mode, owner}}")
    files = {}
    for path, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(path, str) or not path.startswith("/"):
            raise AgentdError(f"{where}: {path!r}: must map an absolute path to {{sha256, mode, owner}}")
        files[path] = FileState(_optional_text(entry, "sha256", f"{where}: {path}") or None,
                                _optional_text(entry, "mode", f"{where}: {path}"),
                                _optional_text(entry, "owner", f"{where}: {path}"))
    return files


def _optional_text(data: dict, key: str, where: str) -> str:
    """A string field, "" when absent or null. Never str() of another type: a mode written as the number 644 or 420
    would be drift on every report, a null role would be reported as "None"."""
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise AgentdError(f"{where}: {key} must be a string, not {type(value).__name__}")
    return value


def load_baseline(config: Config, root: str) -> Baseline:
    """image.json is required (it names the image version); injected.json and identity.json may be absent."""
    image_path = rooted(root, config.image_json)
    image = _read_json(image_path, required=True)
    injected_path = rooted(root, config.injected_json)
    injected = _read_json(injected_path, required=False)
    identity_path = rooted(root, config.identity_json)
    ident = _read_json(identity_path, required=False)
    files = parse_files(image.get("baseline", {}), image_path)
    # the clone's files override the image's for the same path (e.g. /etc/hostname)
    files.update(parse_files(injected.get("baseline", injected), injected_path))
    packages = image.get("packages") or {}
    packages = (packages.get("dpkg") or {}) if isinstance(packages, dict) else None
    if not isinstance(packages, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in packages.items()):
        raise AgentdError(f"{image_path}: packages.dpkg must map names to version strings")
    identity = Identity(**{k: _optional_text(ident, k, identity_path) for k in Identity.__dataclass_fields__})
    version = _optional_text(image, "version", image_path)
    if not version:
        raise AgentdError(f"{image_path}: version is missing")
    return Baseline(version, files, dict(packages), identity)
