"""The audit trail of `clone.py AGENT --update`: after a successful update, the collector records that the agent's
config changed, when, by whom, and what by name only (".../.env: OPENAI_API_KEY changed"), never a value.

Which `.env` keys changed is known only by comparing with what the last injection wrote, whose values this host no
longer holds (the fleet sends secrets over SSH stdin). So every injection leaves, in the agent's state directory
(0700, the file 0600), one keyed fingerprint per key: HMAC-SHA256(a random per-agent salt, value). The salt keeps
equal values from showing as equal across agents and any value from being looked up in a table of known keys.

The event is signed with the audit token HMAC(collector secret, "audit:" + agent) (agentd.protocol.audit_token;
docs/contracts.md). A collector that is down or refuses must not fail an update that is done: the caller logs the
one line this returns.
"""
from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import secrets
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from agentd.protocol import AUDIT_PATH, AuditEvent, audit_token
from deploy.inject import Op, WriteFile
from deploy.state import write_atomic

FINGERPRINTS = "secret-keys.json"
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class KeyPrints:
    """The fingerprints of one injection: path of a KEY=VALUE secret file -> key -> HMAC(salt, value)."""
    salt: str
    files: Mapping[str, Mapping[str, str]]


def env_values(text: str) -> dict[str, str]:
    """KEY=VALUE lines (what openclaw_config.build_env writes); comments and blank lines skipped."""
    pairs = (line.partition("=") for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value for key, sep, value in pairs if sep and key.strip()}


def key_prints(ops: tuple[Op, ...], salt: str) -> KeyPrints:
    """Fingerprints of every secret file written as KEY=VALUE lines (today: OpenClaw's .env)."""
    files = {}
    for op in ops:
        if isinstance(op, WriteFile) and op.secret and op.path.endswith(".env"):
            files[op.path] = {key: hmac.new(salt.encode(), value.encode(), hashlib.sha256).hexdigest()
                              for key, value in env_values(op.data().decode(errors="replace")).items()}
    return KeyPrints(salt, files)


def load_prints(state_dir: Path) -> Optional[KeyPrints]:
    try:
        data = json.loads((state_dir / FINGERPRINTS).read_text())
        return KeyPrints(data["salt"], data["files"])
    except (OSError, ValueError, KeyError, TypeError):   # none yet (an agent cloned before this was recorded)
        return None


def record_prints(state_dir: Path, ops: tuple[Op, ...]) -> tuple[Optional[KeyPrints], KeyPrints]:
    """(the previous injection's fingerprints or None, this one's), this one's saved for the next update."""
    previous = load_prints(state_dir)
    current = key_prints(ops, previous.salt if previous else secrets.token_hex(16))
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(state_dir / FINGERPRINTS, json.dumps({"salt": current.salt, "files": current.files},
                                                      sort_keys=True).encode() + b"\n")
    return previous, current


def describe(changed_paths: tuple[str, ...], previous: Optional[KeyPrints], current: KeyPrints) -> tuple[str, ...]:
    """One line per changed file; a KEY=VALUE secret file as the keys that were added, changed or removed."""
    lines = []
    for path in changed_paths:
        now = current.files.get(path)
        before = previous.files.get(path) if previous else None
        if now is None:
            lines.append(f"{path} changed")
        elif before is None:
            lines.append(f"{path} changed (which keys is unknown: no earlier record)")
        else:
            keys = [f"{path}: {key} {_verb(before.get(key), now.get(key))}" for key in sorted(before.keys() | now)
                    if before.get(key) != now.get(key)]
            lines += keys or [f"{path} changed (mode or owner; no key)"]
    return tuple(lines)


def _verb(before: Optional[str], now: Optional[str]) -> str:
    return "added" if before is None else "removed" if now is None else "changed"


def operator() -> str:
    """Who ran the update: the user behind sudo when there is one, at this host."""
    return f"{os.environ.get('SUDO_USER') or getpass.getuser()}@{socket.gethostname()}"


def post_event(api_url: str, collector_secret: bytes, event: AuditEvent,
               timeout_s: float = TIMEOUT_S) -> Optional[str]:
    """Record the event at the collector; None when it did, else why not in a few words (never the token)."""
    request = urllib.request.Request(api_url.rstrip("/") + AUDIT_PATH, data=json.dumps(event.to_json()).encode(),
                                     method="POST", headers={
                                         "Content-Type": "application/json",
                                         "Authorization": f"Bearer {audit_token(collector_secret, event.agent)}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
        return None
    except urllib.error.HTTPError as exc:
        detail = ""
        try:
            detail = str(json.loads(exc.read()).get("detail", ""))[:200]
        except (ValueError, AttributeError, OSError):
            pass
        return f"HTTP {exc.code}" + (f": {detail}" if detail else "")
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))[:200]
