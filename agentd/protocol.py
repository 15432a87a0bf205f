"""The report agentd sends and the collector accepts: one definition both sides import.

Stdlib only and Python 3.10-compatible, because this module runs inside the image (Ubuntu 22.04's python3).
The JSON shape is documented in docs/contracts.md; bump SCHEMA_VERSION when it changes incompatibly.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

SCHEMA_VERSION = 1
REPORTS_PATH = "/api/v1/reports"
MAX_REPORT_BYTES = 256 * 1024
AGENT_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
STATUSES = ("ok", "warn", "fail")
DRIFT_KINDS = ("modified", "missing", "added", "mode", "owner", "package")


def agent_token(collector_secret: bytes, agent: str) -> str:
    """token = HMAC-SHA256(collector secret, agent name): the clone mints it offline, one agent cannot pose as another."""
    return hmac.new(collector_secret, agent.encode(), hashlib.sha256).hexdigest()


def token_matches(collector_secret: bytes, agent: str, presented: str) -> bool:
    return hmac.compare_digest(agent_token(collector_secret, agent), presented)


@dataclass(frozen=True)
class CheckResult:
    name: str                      # "cpu", "memory", "openclaw_gateway", ...
    status: str                    # one of STATUSES
    detail: str = ""               # one human line: "load 0.42 (warn at 4.0)"
    value: Optional[float] = None  # the measured number, when there is one
    duration_ms: float = 0.0


@dataclass(frozen=True)
class DriftEntry:
    path: str                      # file path, or "pkg:<name>" for package drift
    kind: str                      # one of DRIFT_KINDS
    expected: Optional[str] = None # baseline value (sha256, "0644", "root:root", package version)
    actual: Optional[str] = None   # what is there now (None when missing)


@dataclass(frozen=True)
class SpoolState:
    depth: int = 0                 # reports waiting on disk, this one excluded
    oldest_age_s: float = 0.0      # age of the oldest unsent report
    dropped: int = 0               # reports the bounded spool had to drop, ever


@dataclass(frozen=True)
class Report:
    agent: str
    seq: int                       # per-agent, strictly increasing from 1, never reused (persisted by agentd)
    sent_at: float                 # unix time the report was made
    image_version: str
    host: str = ""                 # hypervisor, from /etc/agentfleet/identity.json
    role: str = ""
    checks: list[CheckResult] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    drift: list[DriftEntry] = field(default_factory=list)
    spool: SpoolState = field(default_factory=SpoolState)
    canary_lag_s: Optional[float] = None  # last measured watch-to-report lag of the canary file
    schema: int = SCHEMA_VERSION

    @property
    def healthy(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Report":
        """Strict parse: raises ValueError naming the first bad field."""
        if not isinstance(data, dict):
            raise ValueError("report must be a JSON object")
        agent = data.get("agent")
        if not isinstance(agent, str) or not AGENT_NAME.match(agent):
            raise ValueError("agent: must match " + AGENT_NAME.pattern)
        seq = data.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError("seq: must be an integer >= 1")
        checks = [CheckResult(**_fields(c, CheckResult, "checks")) for c in _list(data, "checks")]
        for c in checks:
            if c.status not in STATUSES:
                raise ValueError(f"checks[{c.name}].status: must be one of {STATUSES}")
        drift = [DriftEntry(**_fields(d, DriftEntry, "drift")) for d in _list(data, "drift")]
        for d in drift:
            if d.kind not in DRIFT_KINDS:
                raise ValueError(f"drift[{d.path}].kind: must be one of {DRIFT_KINDS}")
        metrics = data.get("metrics", {})
        if not isinstance(metrics, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in metrics.items()
        ):
            raise ValueError("metrics: must map names to numbers")
        return cls(
            agent=agent,
            seq=seq,
            sent_at=float(_typed(data, "sent_at", (int, float))),
            image_version=_typed(data, "image_version", str),
            host=_typed(data, "host", str, ""),
            role=_typed(data, "role", str, ""),
            checks=checks,
            metrics={k: float(v) for k, v in metrics.items()},
            drift=drift,
            spool=SpoolState(**_fields(data.get("spool", {}), SpoolState, "spool")),
            canary_lag_s=_typed(data, "canary_lag_s", (int, float, type(None)), None),
            schema=_typed(data, "schema", int, SCHEMA_VERSION),
        )


def _typed(data: dict, key: str, types, default: Any = ...) -> Any:
    if key not in data:
        if default is ...:
            raise ValueError(f"{key}: missing")
        return default
    value = data[key]
    if not isinstance(value, types) or isinstance(value, bool):
        raise ValueError(f"{key}: wrong type {type(value).__name__}")
    return value


def _list(data: dict, key: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key}: must be a list")
    return value


def _fields(item: Any, cls: type, where: str) -> dict:
    """Reject unknown keys and wrong scalar types so a malformed report is a clear 4xx, not a 500."""
    if not isinstance(item, dict):
        raise ValueError(f"{where}: entries must be objects")
    known = cls.__dataclass_fields__
    unknown = set(item) - set(known)
    if unknown:
        raise ValueError(f"{where}: unknown field {sorted(unknown)[0]}")
    for key, value in item.items():
        if isinstance(value, (dict, list)):
            raise ValueError(f"{where}.{key}: must be a scalar")
    return dict(item)
