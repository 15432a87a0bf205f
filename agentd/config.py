"""agentd's configuration: /etc/agentfleet/agentd.yaml parsed once, at the edge, into frozen dataclasses.

Every setting is declared once in `Config` (type and default); docs/contracts.md documents the keys.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

import yaml

from .errors import AgentdError
from .fsutil import rooted
from .protocol import AGENT_NAME

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "/etc/agentfleet/agentd.yaml"


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
    "cpu_percent": Threshold(90, 99),
}

DEFAULT_DRIFT_IGNORE = (
    # files the running system rewrites by itself, or that bake/manifest.py leaves unmanaged: not drift
    "/etc/mtab", "/etc/resolv.conf", "/etc/ld.so.cache", "/etc/adjtime", "/etc/machine-id", "/etc/.pwd.lock",
    "/etc/udev/rules.d/70-persistent*",
    "*/__pycache__/*", "*.pyc", "*~", "*.swp", "*.dpkg-new", "*.dpkg-old",
)


@dataclass(frozen=True)
class Config:
    agent: str
    collector_url: str
    token_file: str = "/etc/agentfleet/agentd.token"
    interval_s: float = 30.0
    scan_interval_s: float = 300.0
    watched_paths: Tuple[str, ...] = ("/etc", "/usr/local/bin", "/opt/agentd")
    spool_dir: str = "/var/lib/agentd/spool"
    spool_max: int = 10000
    mattermost_url: str = ""
    openclaw_url: str = "http://127.0.0.1:18789"
    thresholds: Dict[str, Threshold] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    # keys added by agentd (documented in docs/contracts.md), all optional
    state_dir: str = "/var/lib/agentd"               # holds the sequence counter
    image_json: str = "/etc/agentfleet/image.json"
    injected_json: str = "/etc/agentfleet/injected.json"
    identity_json: str = "/etc/agentfleet/identity.json"
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
        return self.collector_url.rstrip("/") + "/api/v1/agents/" + self.agent

    @property
    def canary_path(self) -> str:
        return self.canary_file or (self.watched_paths[0].rstrip("/") + "/.agentd-canary")


_FLOATS = {f.name for f in dataclasses.fields(Config) if f.type in ("float",)}
_INTS = {"spool_max"}
_TUPLES = {"watched_paths", "drift_ignore"}


def parse_config(data: Any, where: str = "agentd.yaml") -> Config:
    """Validate a parsed YAML mapping; errors name the key at fault."""
    if not isinstance(data, dict):
        raise AgentdError(f"{where}: must be a mapping")
    known = {f.name for f in dataclasses.fields(Config)}
    kwargs: Dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            log.warning("%s: ignoring unknown key %r", where, key)
            continue
        try:
            kwargs[key] = _coerce(key, value)
        except (TypeError, ValueError) as e:
            raise AgentdError(f"{where}: {key}: {e}") from None
    for required in ("agent", "collector_url"):
        if not kwargs.get(required):
            raise AgentdError(f"{where}: {required}: missing")
    if not AGENT_NAME.fullmatch(kwargs["agent"]):  # not .match: "$" also matches before a trailing newline
        raise AgentdError(f"{where}: agent: must match {AGENT_NAME.pattern}")
    if not kwargs["collector_url"].startswith(("http://", "https://")):
        raise AgentdError(f"{where}: collector_url: must start with http:// or https://")
    config = Config(**kwargs)
    for key in ("interval_s", "scan_interval_s", "canary_interval_s", "http_timeout_s", "backoff_initial_s"):
        if getattr(config, key) <= 0:
            raise AgentdError(f"{where}: {key}: must be > 0")
    if config.spool_max < 1:
        raise AgentdError(f"{where}: spool_max: must be >= 1")
    if not config.watched_paths:
        raise AgentdError(f"{where}: watched_paths: must not be empty")
    return config


def _coerce(key: str, value: Any) -> Any:
    if key == "thresholds":
        if not isinstance(value, dict):
            raise TypeError("must map check names to {warn, fail}")
        merged = dict(DEFAULT_THRESHOLDS)
        for name, levels in value.items():
            if not isinstance(levels, dict) or set(levels) != {"warn", "fail"}:
                raise TypeError(f"{name}: must be {{warn: N, fail: N}}")
            numbers = [levels[k] for k in ("warn", "fail")]
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers):  # not float("80"), True
                raise TypeError(f"{name}: warn and fail must be numbers")
            merged[name] = Threshold(float(numbers[0]), float(numbers[1]))
        return merged
    if key in _TUPLES:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError("must be a list of strings")
        if key == "watched_paths" and not all(v.startswith("/") for v in value):
            raise ValueError("paths must be absolute")
        return tuple(value)
    if key in _INTS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("must be an integer")
        return value
    if key in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError("must be a number")
        return float(value)
    if not isinstance(value, str):
        raise TypeError("must be a string")
    return value


def load_config(path: str) -> Config:
    try:
        with open(path, "rb") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise AgentdError(f"cannot read config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise AgentdError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    return parse_config(data, where=path)


def read_token(config: Config, root: str) -> str:
    """The bearer token; never logged. Empty or unreadable is an operator error."""
    path = rooted(root, config.token_file)
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as e:
        raise AgentdError(f"cannot read token file {path}: {e.strerror}") from None
    if not token:
        raise AgentdError(f"token file {path} is empty")
    if os.stat(path).st_mode & 0o077:
        log.warning("token file %s is readable by group or others", path)
    return token
