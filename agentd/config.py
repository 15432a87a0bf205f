"""agentd's configuration: /etc/agentfleet/agentd.yaml parsed once, at the edge, into frozen dataclasses.

Every setting is declared once in `Config` (agentd/vm_files.py: type and default, shared with the clone that writes
the file); docs/contracts.md documents the keys.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Dict

import yaml

from .errors import AgentdError
from .fsutil import rooted
from .protocol import AGENT_NAME
from .vm_files import AGENTD_YAML, DEFAULT_DRIFT_IGNORE, DEFAULT_THRESHOLDS, Config, Threshold

__all__ = ["DEFAULT_CONFIG", "DEFAULT_DRIFT_IGNORE", "DEFAULT_THRESHOLDS", "Config", "Threshold", "load_config",
           "parse_config", "read_token"]

log = logging.getLogger(__name__)

DEFAULT_CONFIG = AGENTD_YAML


_FLOATS = {f.name for f in dataclasses.fields(Config) if f.type in ("float",)}
_INTS = {"spool_max"}
_TUPLES = {"watched_paths", "drift_ignore", "services"}


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
