"""The collector's HTTP routes: the report endpoint, the read API, the pages, /metrics and /healthz.

The report endpoint reads the body itself (bounded while streaming), parses with the shared protocol module and
hands the report to the group committer (batching.py), the one place the store is used off the event loop. Every
route is `async`, so the alert state and the counters are only ever touched from the event loop thread.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from agentd.protocol import AGENT_NAME, MAX_REPORT_BYTES, REPORTS_PATH, Report, token_matches

from . import pages
from .alerts import Alerts, Notifier
from .batching import GroupCommitter
from .config import CollectorConfig
from .metrics import CONTENT_TYPE, Counters, render_metrics
from .store import Store, StoreUnavailable

log = logging.getLogger("collector")

PRUNE_EVERY_S = 300.0
HISTORY_LIMIT = 60


class _Rejected(Exception):
    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


def create_app(config: CollectorConfig, store: Store) -> FastAPI:
    counters = Counters()
    committer = GroupCommitter(store)
    notifier = Notifier(config.webhook_url)
    alerts = Alerts(store, notifier, config.stale_after_s, config.gap_grace_s)
    refresh_s = int(min(max(config.interval_s, 2), 30))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_sweeper(config, store, alerts))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.to_thread(notifier.close)
            store.close()

    app = FastAPI(title="agentfleet collector", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.alerts, app.state.counters = store, alerts, counters

    @app.post(REPORTS_PATH)
    async def post_report(request: Request) -> Response:
        counters.received += 1
        try:
            report, body = await _parse(request, config.secret)
        except _Rejected as rejected:
            counters.reject(rejected.reason)
            return JSONResponse({"detail": rejected.detail}, rejected.status,
                                headers={"WWW-Authenticate": "Bearer"} if rejected.status == 401 else None)
        now = time.time()
        try:
            ingested = await committer.ingest(report, body, now)
        except StoreUnavailable as exc:
            log.error("report %s/%d not stored: %s", report.agent, report.seq, exc)
            return JSONResponse({"detail": "storage unavailable, retry"}, 503)
        if not ingested.stored:
            counters.duplicates += 1
            return JSONResponse({"status": "duplicate"})
        counters.stored += 1
        try:
            if ingested.latest:
                alerts.on_latest_report(report, now)
            alerts.on_delivery(report.agent, ingested.contiguous_seq, ingested.last_seq)
        except StoreUnavailable as exc:  # the report is stored; alert bookkeeping retries on the next report/sweep
            log.error("alert bookkeeping for %s failed: %s", report.agent, exc)
        return JSONResponse({"status": "stored"})

    @app.get("/api/v1/agents")
    async def list_agents() -> list[dict]:
        return [state.to_json() for state in store.agents()]

    @app.get("/api/v1/agents/{name}")
    async def get_agent(name: str) -> Response:
        state = store.agent(name) if AGENT_NAME.match(name) else None
        if state is None:
            return JSONResponse({"detail": f"unknown agent {name!r}"}, 404)
        return JSONResponse({**state.to_json(), "alerts": [
            {"kind": i.kind, "key": i.key, "opened_at": i.opened_at, "detail": i.detail}
            for i in alerts.agent_incidents(name)]})

    @app.get("/api/v1/agents/{name}/history")
    async def get_history(name: str, limit: int = HISTORY_LIMIT) -> Response:
        if not AGENT_NAME.match(name) or store.agent(name) is None:
            return JSONResponse({"detail": f"unknown agent {name!r}"}, 404)
        return JSONResponse([vars(p) for p in store.history(name, max(1, min(limit, 1000)))])

    @app.get("/", response_class=HTMLResponse)
    async def fleet() -> HTMLResponse:
        return HTMLResponse(pages.fleet_page(store.agents(), config.stale_after_s, refresh_s, alerts.open_counts()))

    @app.get("/agents/{name}", response_class=HTMLResponse)
    async def agent(name: str) -> HTMLResponse:
        state = store.agent(name) if AGENT_NAME.match(name) else None
        if state is None:
            return HTMLResponse(pages.unknown_agent_page(name, refresh_s), 404)
        return HTMLResponse(pages.agent_page(state, store.history(name, HISTORY_LIMIT), alerts.agent_incidents(name),
                                             config.stale_after_s, refresh_s))

    @app.get("/metrics")
    async def metrics() -> Response:
        text = render_metrics(store.agents(), counters, alerts.open_counts(), notifier.stats.sent,
                              notifier.stats.failed, config.stale_after_s, time.time())
        return Response(text, media_type=CONTENT_TYPE)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return app


async def _parse(request: Request, secret: bytes) -> tuple[Report, str]:
    """Bounded read, strict JSON, strict report, then the token for that report's agent; each failure a 4xx."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _Rejected(401, "unauthenticated", "missing bearer token")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_REPORT_BYTES:
        raise _Rejected(413, "oversized", f"report larger than {MAX_REPORT_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REPORT_BYTES:
            raise _Rejected(413, "oversized", f"report larger than {MAX_REPORT_BYTES} bytes")
        chunks.append(chunk)
    try:
        body = b"".join(chunks).decode("utf-8")
        data = json.loads(body, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _Rejected(400, "malformed", f"not a JSON document: {str(exc)[:200]}") from None
    try:
        report = Report.from_json(data)
    except ValueError as exc:
        raise _Rejected(422, "invalid", str(exc)[:500]) from None
    if not token_matches(secret, report.agent, token.strip()):
        raise _Rejected(401, "bad_token", f"token does not match agent {report.agent!r}")
    return report, body


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


async def _sweeper(config: CollectorConfig, store: Store, alerts: Alerts) -> None:
    """Periodic, time-based work: stale agents and open gaps (alerts), and retention."""
    last_prune = 0.0
    while True:
        await asyncio.sleep(config.sweep_s)
        now = time.time()
        try:
            alerts.sweep(store.agents(), now)
            if now - last_prune >= min(PRUNE_EVERY_S, config.retention_days * 86400 / 4):
                pruned = store.prune(now - config.retention_days * 86400)
                last_prune = now
                if pruned:
                    log.info("retention: pruned %d reports older than %g days", pruned, config.retention_days)
        except StoreUnavailable as exc:
            log.warning("sweep skipped: %s", exc)
        except Exception:  # the sweeper must outlive any one bad evaluation
            log.exception("sweep failed")
