"""The audit endpoint: `clone.py AGENT --update` tells the collector that agent X's config changed at time T, by
whom, naming what changed (file paths, `.env` key names) and never a value.

Authentication reuses the collector secret, as reports do, but with a token of its own:
HMAC-SHA256(secret, "audit:" + agent) (`agentd.protocol.audit_token`). Every hypervisor already holds the secret (the
clone mints agentd's token from it), so no new credential has to be distributed, and an agent, which holds only
HMAC(secret, agent), cannot write or forge its own audit trail.
"""
from __future__ import annotations

import time

from fastapi import Request

from agentd.protocol import MAX_AUDIT_BYTES, AuditEvent, audit_token_matches

from .records import AuditRecord
from .signed_post import Rejected, bearer_json

AUDIT_SHOWN = 20      # events on the agent's page
AUDIT_LIMIT = 1000    # at most this many per JSON answer


async def parse_audit(request: Request, secret: bytes) -> AuditRecord:
    """Bearer token present, a bounded body, strict JSON (signed_post.py), a valid event, then the token for that
    event's agent. Rejected carries the 4xx."""
    token, data = await bearer_json(request, MAX_AUDIT_BYTES, "an audit event")
    try:
        event = AuditEvent.from_json(data)
    except ValueError as exc:
        raise Rejected(422, str(exc)[:500]) from None
    if not audit_token_matches(secret, event.agent, token):
        raise Rejected(401, f"token is not the audit token of agent {event.agent!r}")
    return AuditRecord(event.agent, event.at, event.who, event.changes, time.time())
