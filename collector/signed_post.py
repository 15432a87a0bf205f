"""The operator-side POSTs (an --update's audit event, a rollout's progress): a bearer token derived from the
collector secret, a Content-Length within a bound, and strict JSON. One reader, so both refuse the same way; each
caller then validates its own document and checks the token for what the document names."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .bounded_body import TooLarge, read_within

if TYPE_CHECKING:                          # the store and the CLI import the callers without the web framework
    from fastapi import Request


class Rejected(Exception):
    """A 4xx for an operator POST: `status` and a one-line `detail`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


async def bearer_json(request: "Request", max_bytes: int, what: str) -> tuple[str, Any]:
    """The presented token and the parsed body; Rejected 401 (no token), 411, 413 (over max_bytes, declared or
    sent) or 400 (not JSON; NaN and Infinity are not JSON either)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Rejected(401, "missing bearer token")
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        raise Rejected(411, f"{what} needs a Content-Length")
    try:
        raw = await read_within(request, max_bytes)
    except TooLarge:
        raise Rejected(413, f"{what} larger than {max_bytes} bytes") from None
    try:
        return token.strip(), json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Rejected(400, f"not a JSON document: {str(exc)[:200]}") from None


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not JSON")
