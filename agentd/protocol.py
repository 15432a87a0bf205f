"""The report agentd sends and the collector accepts: one definition both sides import.

Stdlib only and Python 3.10-compatible, because this module runs inside the image (Ubuntu 22.04's python3).
The JSON shape is documented in docs/contracts.md; bump SCHEMA_VERSION when it changes incompatibly.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

SCHEMA_VERSION = 1
REPORTS_PATH = "/api/v1/reports"
AUDIT_PATH = "/api/v1/audit"       # an operator's change to an agent's config (clone.py --update), docs/contracts.md
ROLLOUTS_PATH = "/api/v1/rollouts"  # a fleet rollout's progress (deploy/rollout/feed.py), docs/contracts.md
MAX_AUDIT_BYTES = 64 * 1024
MAX_AUDIT_CHANGES = 200            # lines of "what changed" per event
MAX_AUDIT_TEXT = 200               # characters per line (and of `who`)
MAX_REPORT_BYTES = 256 * 1024
MAX_INT = 2**63 - 1                # seq and counts must fit a signed 64-bit SQL column
MAX_JSON_DEPTH = 8                 # a report is 3 levels deep (report > checks > check); room to grow, not to attack
# \A...\Z, not ^...$: `$` also matches before a trailing newline, which made "athena\n" a second agent.
# Check names with valid_agent_name() (or AGENT_NAME.fullmatch); agentd's config and deploy's inventory import it.
AGENT_NAME = re.compile(r"\A[a-z][a-z0-9-]{0,62}\Z")
AGENT_NAME_RULE = "a lowercase letter, then up to 62 of a-z, 0-9 and -"
STATUSES = ("ok", "warn", "fail")
DRIFT_KINDS = ("modified", "missing", "added", "mode", "owner", "package")
# Who explains a drift entry (agentd/drift_class.py): dpkg installed it after the bake, an admin changed a conffile,
# or nothing we know of. Only "unexplained" alerts by default; a report without the field (an older agentd) is that.
PACKAGE, CONFFILE, UNEXPLAINED = DRIFT_CLASSES = ("package", "conffile", "unexplained")
ACCEPTED_KEY = "accepted"          # the collector's answer to a report: drift an operator accepted (AcceptedDrift)


def valid_agent_name(name: object) -> bool:
    """True for a name agentd, the clone and the collector all accept: the whole string, no trailing newline."""
    return isinstance(name, str) and AGENT_NAME.fullmatch(name) is not None


def json_depth_within(data: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when no list or object in `data` is nested deeper than `limit` (iterative: deep input cannot recurse).

    Unknown top-level keys are ignored by the parser, so without this bound one agent could store a document that
    every later reader would have to parse again at a depth its stack might not have."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > limit:
                return False
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return True


def agent_token(collector_secret: bytes, agent: str) -> str:
    """token = HMAC-SHA256(collector secret, agent name): the clone mints it offline, one agent cannot pose as
    another."""
    return hmac.new(collector_secret, agent.encode(), hashlib.sha256).hexdigest()


def token_matches(collector_secret: bytes, agent: str, presented: str) -> bool:
    if not isinstance(presented, str) or not presented.isascii():  # compare_digest raises on non-ASCII str
        return False
    return hmac.compare_digest(agent_token(collector_secret, agent), presented)


def audit_token(collector_secret: bytes, agent: str) -> str:
    """token = HMAC-SHA256(collector secret, "audit:" + agent name): what `clone.py --update` presents to record a
    change to that agent. Derived from the secret every hypervisor already holds, and distinct from the agent's own
    token (":" is never in an agent name), so an agent cannot write its own audit trail."""
    return hmac.new(collector_secret, ("audit:" + agent).encode(), hashlib.sha256).hexdigest()


def audit_token_matches(collector_secret: bytes, agent: str, presented: str) -> bool:
    if not isinstance(presented, str) or not presented.isascii():
        return False
    return hmac.compare_digest(audit_token(collector_secret, agent), presented)


def rollout_token(collector_secret: bytes, fleet: str) -> str:
    """token = HMAC-SHA256(collector secret, "rollout:" + fleet id): what `fleet rollout` presents to show its
    progress on the collector's fleet page. The workstation reads the secret from the inventory's secrets source, as
    the clone does; an agent, holding only HMAC(secret, agent), cannot forge a rollout."""
    return hmac.new(collector_secret, ("rollout:" + fleet).encode(), hashlib.sha256).hexdigest()


def rollout_token_matches(collector_secret: bytes, fleet: str, presented: str) -> bool:
    if not isinstance(presented, str) or not presented.isascii():
        return False
    return hmac.compare_digest(rollout_token(collector_secret, fleet), presented)


@dataclass(frozen=True)
class AuditEvent:
    """Agent X's config changed at time `at`, by `who`: the names of what changed, never a value."""
    agent: str
    at: float                      # unix time of the change (the update's end)
    who: str                       # "user@host" of the operator who ran it
    changes: tuple[str, ...] = ()  # one line each, e.g. "/home/agent/.openclaw/.env: OPENAI_API_KEY changed"

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent, "at": self.at, "who": self.who, "changes": list(self.changes)}

    @classmethod
    def from_json(cls, data: Any) -> "AuditEvent":
        """Strict parse, ValueError naming the first bad field; every text one short line (it is shown on a page)."""
        data = _fields(data, frozenset(cls.__dataclass_fields__), "audit event")
        agent = data.get("agent")
        if not valid_agent_name(agent):
            raise ValueError("agent: must be " + AGENT_NAME_RULE)
        changes = _list(data, "changes")
        if len(changes) > MAX_AUDIT_CHANGES:
            raise ValueError(f"changes: at most {MAX_AUDIT_CHANGES} lines")
        return cls(agent=agent, at=_number(_required(data, "at"), "at"),
                   who=_line(_required(data, "who"), "who"),
                   changes=tuple(_line(c, f"changes[{i}]") for i, c in enumerate(changes)))


def _line(value: Any, where: str) -> str:
    text = _text(value, where)
    if not text.strip() or len(text) > MAX_AUDIT_TEXT or any(ch in text for ch in "\r\n"):
        raise ValueError(f"{where}: must be one non-empty line of at most {MAX_AUDIT_TEXT} characters")
    return text


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
    class_: str = UNEXPLAINED      # JSON "class" (a Python keyword): one of DRIFT_CLASSES

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "expected": self.expected, "actual": self.actual,
                "class": self.class_}


_DRIFT_FIELDS = frozenset(("path", "kind", "expected", "actual", "class"))


@dataclass(frozen=True)
class AcceptedDrift:
    """An operator accepted this drift entry at the collector (`collector accept-drift`, the agent page); the
    collector's answer to a report that still shows it carries it back, and agentd adopts `actual` into its baseline,
    but only while its own drift holds exactly this entry (a file changed again since is not accepted)."""
    path: str
    kind: str
    expected: Optional[str]
    actual: Optional[str]
    accepted_at: float
    by: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def matches(self, entry: DriftEntry) -> bool:
        return (self.path, self.kind, self.actual) == (entry.path, entry.kind, entry.actual)

    @classmethod
    def from_json(cls, item: Any, where: str = "accepted") -> "AcceptedDrift":
        item = _fields(item, frozenset(cls.__dataclass_fields__), where)
        kind = _required(item, "kind", where)
        if kind not in DRIFT_KINDS:
            raise ValueError(f"{where}.kind: must be one of {DRIFT_KINDS}")
        return cls(path=_text(_required(item, "path", where), where + ".path"), kind=kind,
                   expected=_text(item.get("expected"), where + ".expected", optional=True),
                   actual=_text(item.get("actual"), where + ".actual", optional=True),
                   accepted_at=_number(_required(item, "accepted_at", where), where + ".accepted_at"),
                   by=_text(_required(item, "by", where), where + ".by"))


def accepted_in_answer(answer: dict[str, Any]) -> list[AcceptedDrift]:
    """The accepted drift an answer to a report carries (none from an older collector); ValueError when malformed."""
    items = answer.get(ACCEPTED_KEY, [])
    if not isinstance(items, list):
        raise ValueError(f"{ACCEPTED_KEY}: must be a list")
    return [AcceptedDrift.from_json(item, f"{ACCEPTED_KEY}[{i}]") for i, item in enumerate(items)]


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
        data = asdict(self)
        data["drift"] = [d.to_json() for d in self.drift]  # "class", not the attribute's name
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Report":
        """Strict parse: raises ValueError (only) naming the first bad field, so a malformed report is a 4xx, never
        a 500.

        Numbers must be finite and in range, strings valid UTF-8 without NUL (SQL text columns refuse both), counts
        non-negative integers that fit a 64-bit column.
        """
        if not isinstance(data, dict):
            raise ValueError("report must be a JSON object")
        # Known fields are checked value by value below (no list or object where a scalar belongs); a key this
        # version does not know is ignored, so only its nesting needs a bound.
        for key in data.keys() - _REPORT_FIELDS:
            if not json_depth_within(data[key], MAX_JSON_DEPTH - 1):
                raise ValueError(f"report: nested deeper than {MAX_JSON_DEPTH} levels (under {str(key)[:40]!r})")
        agent = data.get("agent")
        if not valid_agent_name(agent):
            raise ValueError("agent: must be " + AGENT_NAME_RULE)
        seq = data.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= MAX_INT:
            raise ValueError(f"seq: must be an integer from 1 to {MAX_INT}")
        metrics = data.get("metrics", {})
        if not isinstance(metrics, dict):
            raise ValueError("metrics: must map names to numbers")
        schema = data.get("schema", SCHEMA_VERSION)
        if not isinstance(schema, int) or isinstance(schema, bool) or not 1 <= schema <= MAX_INT:
            raise ValueError("schema: must be a positive integer")
        return cls(
            agent=agent,
            seq=seq,
            sent_at=_number(_required(data, "sent_at"), "sent_at"),
            image_version=_text(_required(data, "image_version"), "image_version"),
            host=_text(data.get("host", ""), "host"),
            role=_text(data.get("role", ""), "role"),
            checks=[_check(c, i) for i, c in enumerate(_list(data, "checks"))],
            metrics={_text(k, "metrics key"): _number(v, f"metrics[{k}]") for k, v in metrics.items()},
            drift=[_drift(d, i) for i, d in enumerate(_list(data, "drift"))],
            spool=_spool(data.get("spool", {})),
            canary_lag_s=_number(data.get("canary_lag_s"), "canary_lag_s", optional=True),
            schema=schema,
        )


_REPORT_FIELDS = frozenset(Report.__dataclass_fields__)


def _check(item: Any, index: int) -> CheckResult:
    where = f"checks[{index}]"
    item = _fields(item, frozenset(CheckResult.__dataclass_fields__), where)
    name = _text(_required(item, "name", where), where + ".name")
    status = _required(item, "status", where)
    if status not in STATUSES:
        raise ValueError(f"checks[{name}].status: must be one of {STATUSES}")
    return CheckResult(
        name=name,
        status=status,
        detail=_text(item.get("detail", ""), where + ".detail"),
        value=_number(item.get("value"), where + ".value", optional=True),
        duration_ms=_number(item.get("duration_ms", 0.0), where + ".duration_ms"),
    )


def _drift(item: Any, index: int) -> DriftEntry:
    where = f"drift[{index}]"
    item = _fields(item, _DRIFT_FIELDS, where)
    path = _text(_required(item, "path", where), where + ".path")
    kind = _required(item, "kind", where)
    if kind not in DRIFT_KINDS:
        raise ValueError(f"drift[{path}].kind: must be one of {DRIFT_KINDS}")
    drift_class = item.get("class", UNEXPLAINED)  # an agentd older than the classes: nothing explains it
    if drift_class not in DRIFT_CLASSES:
        raise ValueError(f"drift[{path}].class: must be one of {DRIFT_CLASSES}")
    return DriftEntry(
        path=path,
        kind=kind,
        expected=_text(item.get("expected"), where + ".expected", optional=True),
        actual=_text(item.get("actual"), where + ".actual", optional=True),
        class_=drift_class,
    )


def _spool(item: Any) -> SpoolState:
    item = _fields(item, frozenset(SpoolState.__dataclass_fields__), "spool")
    return SpoolState(
        depth=_count(item.get("depth", 0), "spool.depth"),
        oldest_age_s=_number(item.get("oldest_age_s", 0.0), "spool.oldest_age_s"),
        dropped=_count(item.get("dropped", 0), "spool.dropped"),
    )


def _required(data: dict, key: str, where: str = "") -> Any:
    if key not in data:
        raise ValueError(f"{where + '.' if where else ''}{key}: missing")
    return data[key]


def _number(value: Any, where: str, optional: bool = False) -> Optional[float]:
    """A finite float from a JSON number (bool is not a number; 10**400 is out of range, not an OverflowError)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{where}: out of range") from None
    if not math.isfinite(number):
        raise ValueError(f"{where}: must be finite")
    return number


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise ValueError(f"{where}: must be an integer from 0 to {MAX_INT}")
    return value


def _text(value: Any, where: str, optional: bool = False) -> Optional[str]:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where}: must be a string")
    if "\x00" in value:
        raise ValueError(f"{where}: must not contain NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where}: must be valid UTF-8 (no lone surrogates)") from None
    return value


def _list(data: dict, key: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key}: must be a list")
    return value


def _fields(item: Any, known: frozenset, where: str) -> dict:
    """Reject non-objects and keys not in `known` (the JSON names); the per-field helpers above check types."""
    if not isinstance(item, dict):
        raise ValueError(f"{where}: must be an object")
    unknown = set(item) - known
    if unknown:
        raise ValueError(f"{where}: unknown field {sorted(map(str, unknown))[0]}")
    return item
