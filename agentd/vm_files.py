"""The files agentfleet puts in a VM, defined once: their paths, the identity, the baseline entry, agentd's config.

The bake writes image.json (with the image's baseline), the clone writes identity.json, injected.json (with its own
baseline), agentd.yaml and agentd.token; agentd reads them all. bake, deploy and agentd import this module, so it
ships in the image and stays standard-library-only Python 3.10. docs/contracts.md describes the formats.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

ETC = "/etc/agentfleet"
IMAGE_JSON = f"{ETC}/image.json"        # the bake: name, version, pins, packages, the image's baseline
IDENTITY_JSON = f"{ETC}/identity.json"  # the clone: who this VM is (Identity)
INJECTED_JSON = f"{ETC}/injected.json"  # the clone: the baseline of what it injected
AGENTD_YAML = f"{ETC}/agentd.yaml"      # the clone: agentd's Config
AGENTD_TOKEN = f"{ETC}/agentd.token"    # the clone: agentd's bearer token (0600)
CLONE_OWNED = (IDENTITY_JSON, INJECTED_JSON, AGENTD_YAML, AGENTD_TOKEN)  # per VM: never in the golden image
# the bake: one entry per baked OpenClaw plugin, named by its plugin id (the clone's `plugins.load.paths`)
OPENCLAW_PLUGINS_DIR = "/opt/openclaw/plugins"

AGENT_API_PATH = "/api/v1/agents/"  # + agent name: the collector's record of one agent (GET)


def agent_api_url(collector_url: str, agent: str) -> str:
    """The collector's record of one agent: {image_version, healthy, last_seen, last_seq, ...}."""
    return collector_url.rstrip("/") + AGENT_API_PATH + agent


# ------------------------------------------------------------------------------------------------------ identity
@dataclass(frozen=True)
class Identity:
    """identity.json: which agent this VM is, where it runs and which image the clone meant it to boot."""
    agent: str = ""
    host: str = ""
    role: str = ""
    ip: str = ""
    image_version: str = ""
    cloned_at: int = 0

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, Any], where: str = "identity.json") -> "Identity":
        """Missing keys are empty (an identity-free image, a test tree), unknown keys are ignored; a field of another
        type than a string is a ValueError naming it, never str()-coerced."""
        cloned_at = data.get("cloned_at", 0)
        texts = {f.name: text_field(data, f.name, where) for f in dataclasses.fields(cls) if f.name != "cloned_at"}
        whole_number = isinstance(cloned_at, int) and not isinstance(cloned_at, bool)
        return cls(**texts, cloned_at=cloned_at if whole_number else 0)


# ------------------------------------------------------------------------------------------------------ baseline
@dataclass(frozen=True)
class FileState:
    """One baseline entry, and what drift reads from disk: content hash, octal mode ("0644"), "user:group"."""
    sha256: Optional[str]
    mode: str
    owner: str

    @classmethod
    def of(cls, sha256: str, mode: int, owner: str) -> "FileState":
        """The one way a writer (the bake's scan, the clone's injection) makes an entry: mode from its bits."""
        return cls(sha256, f"{mode & 0o7777:04o}", owner)

    def to_json(self) -> Dict[str, Any]:
        return {"sha256": self.sha256, "mode": self.mode, "owner": self.owner}


def symlink_sha256(target: str) -> str:
    """A symlink's content is its target: hashed the same way by the bake's scan and agentd's drift."""
    return hashlib.sha256(("symlink:" + target).encode()).hexdigest()


def baseline_to_json(files: Dict[str, FileState]) -> Dict[str, Dict[str, Any]]:
    return {path: state.to_json() for path, state in sorted(files.items())}


def baseline_from_json(data: Any, where: str) -> Dict[str, FileState]:
    """The one reader of a baseline mapping (image.json's, injected.json's); ValueError names the entry at fault."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: baseline must map absolute paths to {{sha256, mode, owner}}")
    files = {}
    for path, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"{where}: {path!r}: must map an absolute path to {{sha256, mode, owner}}")
        files[path] = FileState(text_field(entry, "sha256", f"{where}: {path}") or None,
                                text_field(entry, "mode", f"{where}: {path}"),
                                text_field(entry, "owner", f"{where}: {path}"))
    return files


def text_field(data: Dict[str, Any], key: str, where: str) -> str:
    """A string field, "" when absent or null. Never str() of another type: a mode written as the number 644 or 420
    would be drift on every report, a null role would be reported as "None". ValueError names the field."""
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where}: {key} must be a string, not {type(value).__name__}")
    return value


# ------------------------------------------------------------------------------------------------ agentd's config
@dataclass(frozen=True)
class Threshold:
    """Higher is worse: value >= fail is "fail", >= warn is "warn"."""
    warn: float
    fail: float

    def status(self, value: float) -> str:
        if value >= self.fail:
            return "fail"
        if value >= self.warn:
            return "warn"
        return "ok"


DEFAULT_THRESHOLDS: Dict[str, Threshold] = {
    "disk_percent": Threshold(80, 95),
    "memory_percent": Threshold(90, 97),
    "load_per_cpu": Threshold(2.0, 4.0),
    # a busy CPU alone only warns (fail above 100 % never trips): agents compile and test; the load check fails a
    # starved VM
    "cpu_percent": Threshold(90, 101),
}

DEFAULT_DRIFT_IGNORE = (
    # files the running system rewrites by itself, or that bake/manifest.py leaves unmanaged: not drift
    "/etc/mtab", "/etc/resolv.conf", "/etc/ld.so.cache", "/etc/adjtime", "/etc/machine-id", "/etc/.pwd.lock",
    "/etc/udev/rules.d/70-persistent*",
    "*/__pycache__/*", "*.pyc", "*~", "*.swp", "*.dpkg-new", "*.dpkg-old",
)


@dataclass(frozen=True)
class Config:
    """agentd.yaml: every setting declared once here (type and default). agentd parses it (agentd/config.py); the
    clone builds one and writes its CLONE_WRITTEN keys (to_yaml_data), so the defaults are never typed twice."""
    agent: str
    collector_url: str
    token_file: str = AGENTD_TOKEN
    interval_s: float = 30.0
    scan_interval_s: float = 300.0
    watched_paths: Tuple[str, ...] = ("/etc", "/usr/local/bin", "/opt/agentd")
    spool_dir: str = "/var/lib/agentd/spool"
    spool_max: int = 10000
    mattermost_url: str = ""
    openclaw_url: str = "http://127.0.0.1:18789"
    # what the image runs (its manifest's `services`): OpenClaw's checks only where OpenClaw is baked in, so an
    # image without it (the small test image) is healthy on the same terms; configs from before default to both
    services: Tuple[str, ...] = ("agentd", "openclaw")
    thresholds: Dict[str, Threshold] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    # keys added by agentd (documented in docs/contracts.md), all optional
    state_dir: str = "/var/lib/agentd"               # holds the sequence counter
    image_json: str = IMAGE_JSON
    injected_json: str = INJECTED_JSON
    identity_json: str = IDENTITY_JSON
    dpkg_status: str = "/var/lib/dpkg/status"
    disk_path: str = "/"
    openclaw_unit: str = "openclaw-gateway.service"
    agentd_unit: str = "agentd.service"
    canary_file: str = ""                            # default: <first watched path>/.agentd-canary
    canary_interval_s: float = 60.0
    drift_ignore: Tuple[str, ...] = DEFAULT_DRIFT_IGNORE
    http_timeout_s: float = 5.0                      # per request, connect and read
    check_timeout_s: float = 2.0                     # per HTTP health probe
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    debounce_s: float = 0.05                         # coalesce a burst of file events into one report

    @property
    def reports_url(self) -> str:
        from .protocol import REPORTS_PATH
        return self.collector_url.rstrip("/") + REPORTS_PATH

    @property
    def agent_url(self) -> str:
        """The collector's record of this agent (its latest state, with `last_seq`)."""
        return agent_api_url(self.collector_url, self.agent)

    @property
    def canary_path(self) -> str:
        return self.canary_file or (self.watched_paths[0].rstrip("/") + "/.agentd-canary")

    def to_yaml_data(self) -> Dict[str, Any]:
        """The mapping the clone writes as agentd.yaml (plain types, contract order): the CLONE_WRITTEN keys."""
        data: Dict[str, Any] = {}
        for key in CLONE_WRITTEN:
            value = getattr(self, key)
            if key == "thresholds":
                value = {name: {"warn": t.warn, "fail": t.fail} for name, t in value.items()}
            elif isinstance(value, tuple):
                value = list(value)
            data[key] = value
        return data


# What the clone writes into agentd.yaml (docs/contracts.md's first block); the other keys keep agentd's defaults.
CLONE_WRITTEN = ("agent", "collector_url", "token_file", "interval_s", "scan_interval_s", "watched_paths", "spool_dir",
                 "spool_max", "mattermost_url", "openclaw_url", "services", "thresholds")
