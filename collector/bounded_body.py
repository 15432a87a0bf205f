"""The one way the collector reads a request body: within a bound, whether its size is declared or streamed.

A body over the bound is refused, and what the client goes on sending is read and dropped, up to DRAIN_FACTOR times
the bound, before the refusal is sent. A server that closes a connection with bytes still unread makes its kernel
answer with a reset, which can reach the client before it reads the response: it then sees a broken connection
instead of the 413 (agentd's spool would retry, forever, a report it should set aside; a loaded machine makes it
likely). Beyond DRAIN_FACTOR times the bound nothing more is read: a hostile client gets the reset, not our time.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, AsyncIterator

if TYPE_CHECKING:                          # the store and the CLI import the callers without the web framework
    from fastapi import Request

DRAIN_FACTOR = 8


class TooLarge(Exception):
    """The body is over the bound (declared or sent); what the client sent of it has been drained."""


async def read_within(request: "Request", max_bytes: int) -> bytes:
    """The body, or TooLarge. Callers bound the time themselves where a slow client matters."""
    drain_up_to = DRAIN_FACTOR * max_bytes
    declared = request.headers.get("content-length")
    stream = request.stream()
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        if int(declared) <= drain_up_to:
            await _drop(stream, drain_up_to)
        raise TooLarge()
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > max_bytes:
            await _drop(stream, drain_up_to - size)
            raise TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


async def _drop(stream: AsyncIterator[bytes], up_to: int) -> None:
    dropped = 0
    async for chunk in stream:
        dropped += len(chunk)
        if dropped > up_to:
            return
