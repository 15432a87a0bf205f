"""The audit endpoint: `clone.py AGENT --update` tells the collector that agent X's config changed at time T, by
whom, naming what changed (file paths, `.env` key names) and never a value.

Authentication reuses the collector secret, as reports do, but with a token of its own:
HMAC-SHA256(secret, "audit:" + agent) (`agentd.protocol.audit_token`). Every hypervisor already holds the secret (the
clone mints agentd's token from it), so no new credential has to be distributed, and an agent, which holds only
HMAC(secret, agent), cannot write or forge its own audit trail.
"""
from __future__ import annotations

import json
import time

from fastapi import Request

from agentd.protocol import MAX_AUDIT_BYTES, AuditEvent, audit_token_matches

from .records import AuditRecord

AUDIT_SHOWN = 20      # events on the agent's page
AUDIT_LIMIT = 1000    # at most this many per JSON answer


class AuditRejected(Exception):
    """A 4xx for an audit POST: `status` and a one-line `detail`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


async def parse_audit(request: Request, secret: bytes) -> AuditRecord:
    """Bearer token present, a bounded body, strict JSON, a valid event, then the token for that event's agent."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuditRejected(401, "missing bearer token")
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        raise AuditRejected(411, "an audit event needs a Content-Length")
    if int(declared) > MAX_AUDIT_BYTES:
        raise AuditRejected(413, f"audit event larger than {MAX_AUDIT_BYTES} bytes")
    raw = await request.body()
    if len(raw) > MAX_AUDIT_BYTES:
        raise AuditRejected(413, f"audit event larger than {MAX_AUDIT_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise AuditRejected(400, f"not a JSON document: {str(exc)[:200]}") from None
    try:
        event = AuditEvent.from_json(data)
    except ValueError as exc:
        raise AuditRejected(422, str(exc)[:500]) from None
    if not audit_token_matches(secret, event.agent, token.strip()):
        raise AuditRejected(401, f"token is not the audit token of agent {event.agent!r}")
    return AuditRecord(event.agent, event.at, event.who, event.changes, time.time())


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not JSON")
