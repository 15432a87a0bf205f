"""The collector's HTTP routes: the report endpoint, the read API, the pages, /metrics and /healthz.

Every route is `async` and every store call is awaited on the store's own threads (store.py), so the event loop
never waits for the database: while the database is locked or slow, /healthz answers at once and says so, and a
store call that cannot finish in time is a 503 with Retry-After. The alert state and the counters are only ever
touched from the event loop thread.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import AsyncIterator, Awaitable, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.requests import ClientDisconnect

from agentd.protocol import (
    ACCEPTED_KEY,
    AUDIT_PATH,
    MAX_REPORT_BYTES,
    REPORTS_PATH,
    ROLLOUTS_PATH,
    Report,
    token_matches,
    valid_agent_name,
)

from . import acceptance, pages
from .acceptance import AcceptanceBook
from .alerts import Alerts, Changes
from .audit import AUDIT_LIMIT, AUDIT_SHOWN, parse_audit
from .batching import GroupCommitter
from .bounded_body import TooLarge, read_within
from .config import CollectorConfig, CollectorError
from .gaps import GapExplanation, explain_gap
from .metrics import CONTENT_TYPE, Counters, render_metrics
from .notifier import Notifier
from .records import AgentState, GapAcknowledgement
from .rollouts import FINAL, parse_rollout
from .rollouts import summary as rollout_summary
from .siblings import drifts_alone
from .signed_post import Rejected
from .store import Store, StoreUnavailable

log = logging.getLogger("collector")

PRUNE_EVERY_S = 300.0
NO_OPERATOR_TOKEN = "this collector cannot accept drift from the page: start it with --operator-token-file"
HISTORY_LIMIT = 60


class _Rejected(Exception):
    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


def create_app(config: CollectorConfig, store: Store) -> FastAPI:
    counters = Counters()
    committer = GroupCommitter(store)
    notifier = Notifier(config.webhook_url)
    alerts = Alerts(config.stale_after_s, config.gap_grace_s, config.drift_alert_classes)
    book = AcceptanceBook()
    refresh_s = int(min(max(config.interval_s, 2), 30))
    retry_after = {"Retry-After": str(config.retry_after_s)}

    async def settle(changes: Changes) -> None:
        """Store what the alerts changed, then (and only then) announce it."""
        if changes.opened or changes.closed:
            try:
                await store.record_incidents(changes.opened, changes.closed)
            except StoreUnavailable:
                alerts.revert(changes)  # the next report or sweep evaluates again
                raise
        for message in changes.messages:
            notifier.send(message)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        alerts.load(await store.incidents())
        book.load(await store.drift_acceptances())
        task = asyncio.create_task(_sweeper(config, store, alerts, settle, book))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.to_thread(notifier.close)
            await asyncio.to_thread(store.close)

    app = FastAPI(title="agentfleet collector", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.alerts, app.state.counters = store, alerts, counters

    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected) -> Response:
        """An operator POST refused (signed_post.py): its status and one line; 401 says how to authenticate."""
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        return JSONResponse({"detail": exc.detail}, exc.status, headers=headers)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> Response:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "storage unavailable, retry later"}, 503, headers=retry_after)

    @app.post(REPORTS_PATH)
    async def post_report(request: Request) -> Response:
        counters.received += 1
        try:
            report = await _parse(request, config.secret, config.body_timeout_s)
        except _Rejected as rejected:
            counters.reject(rejected.reason)
            headers = {"WWW-Authenticate": "Bearer"} if rejected.status == 401 else {}
            if rejected.status == 408:  # a slow client's socket is closed, not kept waiting for the rest of its body
                headers["Connection"] = "close"
            return JSONResponse({"detail": rejected.detail}, rejected.status, headers=headers)
        except ClientDisconnect:  # the client went away mid-body: nothing to answer, nothing to log loudly
            counters.reject("disconnected")
            log.debug("client disconnected while sending a report")
            return Response(status_code=400)
        now = time.time()
        try:
            ingested = await committer.ingest(report, now)
        except StoreUnavailable as exc:
            log.error("report %s/%d not stored: %s", report.agent, report.seq, exc)
            return JSONResponse({"detail": "storage unavailable, retry later"}, 503, headers=retry_after)
        # drift an operator accepted that this report still shows goes back with the answer (acceptance.py)
        pending = book.pending(report.agent, report.image_version, report.drift) if report.drift else []
        accepted = {ACCEPTED_KEY: [a.to_json() for a in pending]} if pending else {}
        if not ingested.stored:
            counters.duplicates += 1
            return JSONResponse({"status": "duplicate", **accepted})
        counters.stored += 1
        changes = alerts.on_latest_report(report, now) if ingested.latest else Changes()
        delivery = alerts.on_delivery(report.agent, ingested.contiguous_seq, ingested.last_seq)
        try:
            await settle(changes + delivery)
        except StoreUnavailable as exc:  # the report is stored; alert bookkeeping retries on the next report/sweep
            log.error("alert bookkeeping for %s failed: %s", report.agent, exc)
        return JSONResponse({"status": "stored", **accepted})

    @app.post(ROLLOUTS_PATH)
    async def post_rollout(request: Request) -> Response:
        """A fleet rollout's progress (collector/rollouts.py): kept for the fleet page; its end said once in
        Mattermost."""
        rollout = await parse_rollout(request, config.secret)          # a Rejected becomes its 4xx (below)
        before = await store.record_rollout(rollout)
        if rollout.final and before not in FINAL:
            notifier.send(rollout_summary(rollout))
        return JSONResponse({"status": "recorded"})

    @app.get(ROLLOUTS_PATH)
    async def get_rollouts() -> list[dict]:
        return [r.to_json() for r in await store.rollouts()]

    @app.post(AUDIT_PATH)
    async def post_audit(request: Request) -> Response:
        """An operator's change to an agent's config (collector/audit.py); stored in both backends, never alerted."""
        record = await parse_audit(request, config.secret)          # a Rejected becomes its 4xx (below)
        stored = await store.record_audit(record)
        if stored:
            log.info("audit: %s changed by %s: %s", record.agent, record.who, "; ".join(record.changes) or "nothing")
        return JSONResponse({"status": "recorded" if stored else "duplicate"})

    @app.get("/api/v1/agents/{name}/audit")
    async def get_audit(name: str, limit: int = AUDIT_LIMIT) -> Response:
        """Newest first; an agent that never reported can still have been updated, so only a bad name is a 404."""
        if not valid_agent_name(name):
            return JSONResponse({"detail": f"unknown agent {name!r}"}, 404)
        return JSONResponse([r.to_json() for r in await store.audit_events(name, max(1, min(limit, AUDIT_LIMIT)))])

    @app.get("/api/v1/agents")
    async def list_agents() -> list[dict]:
        return [state.to_json() for state in await store.agents()]

    @app.get("/api/v1/agents/{name}")
    async def get_agent(name: str) -> Response:
        state = await store.agent(name) if valid_agent_name(name) else None
        if state is None:
            return JSONResponse({"detail": f"unknown agent {name!r}"}, 404)
        gap, acks = await _gap_facts(store, state)
        accepted = await store.drift_acceptances(name)
        return JSONResponse({**state.to_json(), "gap": gap and gap.to_json(),
                             "gap_acknowledgements": [vars(a) for a in acks],
                             "drift_acceptances": [{**vars(a), "status": acceptance.status(a, state)}
                                                   for a in accepted],
                             "alerts": [{"kind": i.kind, "key": i.key, "opened_at": i.opened_at, "detail": i.detail}
                                        for i in alerts.agent_incidents(name)]})

    @app.get("/api/v1/agents/{name}/history")
    async def get_history(name: str, limit: int = HISTORY_LIMIT) -> Response:
        if not valid_agent_name(name) or await store.agent(name) is None:
            return JSONResponse({"detail": f"unknown agent {name!r}"}, 404)
        return JSONResponse([vars(p) for p in await store.history(name, max(1, min(limit, 1000)))])

    @app.get("/", response_class=HTMLResponse)
    async def fleet() -> HTMLResponse:
        agents, rollouts = await asyncio.gather(store.agents(), store.rollouts())
        return HTMLResponse(pages.fleet_page(agents, config.stale_after_s, refresh_s, alerts.open_counts(),
                                             alone=drifts_alone(agents), rollout=rollouts[0] if rollouts else None))

    @app.get("/agents/{name}", response_class=HTMLResponse)
    async def agent(name: str) -> HTMLResponse:
        state = await store.agent(name) if valid_agent_name(name) else None
        if state is None:
            return HTMLResponse(pages.unknown_agent_page(name, refresh_s), 404)
        (gap, acks), history, audit, accepted = await asyncio.gather(
            _gap_facts(store, state), store.history(name, HISTORY_LIMIT), store.audit_events(name, AUDIT_SHOWN),
            store.drift_acceptances(name))
        return HTMLResponse(pages.agent_page(state, history, alerts.agent_incidents(name), gap, acks,
                                             config.stale_after_s, refresh_s, audit=audit, accepted=accepted,
                                             can_accept=config.operator_token is not None))

    @app.get("/agents/{name}/accept-drift", response_class=HTMLResponse)
    async def accept_drift_form(name: str) -> HTMLResponse:
        if config.operator_token is None:
            return HTMLResponse(pages.accept_refused_page(name, NO_OPERATOR_TOKEN), 403)
        state = await store.agent(name) if valid_agent_name(name) else None
        if state is None:
            return HTMLResponse(pages.unknown_agent_page(name, refresh_s), 404)
        return HTMLResponse(pages.accept_page(state))

    @app.post("/agents/{name}/accept-drift", response_class=HTMLResponse)
    async def accept_drift(name: str, request: Request) -> Response:
        """The agent page's form. The operator's token comes in the POST body, typed by the operator: no cookie or
        other ambient credential exists for another site's form to ride on. A foreign Origin is refused as well."""
        def refuse(status: int, why: str) -> HTMLResponse:
            return HTMLResponse(pages.accept_refused_page(name, why), status)
        origin = request.headers.get("origin")
        if origin not in (None, "null") and origin.split("://", 1)[-1] != request.headers.get("host"):
            return refuse(403, "the form was posted from another site")
        if config.operator_token is None:
            return refuse(403, NO_OPERATOR_TOKEN)
        try:
            body = await read_within(request, acceptance.MAX_FORM_BYTES)
        except TooLarge:
            return refuse(413, "the form is too large")
        try:
            form = acceptance.parse_form(body)
            if not acceptance.operator_token_matches(config.operator_token, form.token):
                return refuse(403, "wrong operator token")
            by, reason = acceptance.operator_name(form.by), acceptance.reason_text(form.reason)
            state = await store.agent(name) if valid_agent_name(name) else None
            if state is None:
                return refuse(404, f"unknown agent {name!r}")
            chosen = acceptance.acceptances(state, acceptance.chosen_by_form(state, form), by, reason, time.time())
        except CollectorError as exc:
            return refuse(400, str(exc))
        await store.accept_drift(chosen)
        book.add(chosen)
        log.info("%s accepted %d drift entries of %s from the page", by, len(chosen), name)
        return RedirectResponse(f"/agents/{name}#drift-acceptances", 303)

    @app.get("/metrics")
    async def metrics() -> Response:
        text = render_metrics(await store.agents(), counters, alerts.open_counts(), notifier.stats.sent,
                              notifier.stats.failed, config.stale_after_s, time.time(), store.health().ok)
        return Response(text, media_type=CONTENT_TYPE)

    @app.get("/healthz")
    async def healthz() -> Response:
        """Whether the collector can store reports now, from the store's last calls: never waits for the database."""
        health = store.health()
        if health.ok:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable", "store": health.detail}, 503, headers=retry_after)

    return app


async def _gap_facts(store: Store, state: AgentState) -> tuple[Optional[GapExplanation], list[GapAcknowledgement]]:
    """The open gap explained (None when there is none) and the gaps acknowledged so far."""
    acks = await store.gap_acknowledgements(state.agent)
    if state.contiguous_seq >= state.last_seq:
        return None, acks
    return explain_gap(state, await store.stored_above(state.agent, state.contiguous_seq)), acks


async def _parse(request: Request, secret: bytes, body_timeout_s: float) -> Report:
    """Bounded read in bounded time, strict JSON, strict report, then the token for that report's agent; each
    failure a 4xx."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _Rejected(401, "unauthenticated", "missing bearer token")
    try:
        async with asyncio.timeout(body_timeout_s):  # not wait_for: no extra task per report (Python >= 3.11)
            raw = await read_within(request, MAX_REPORT_BYTES)
    except TimeoutError:
        raise _Rejected(408, "slow_body", f"report body not received within {body_timeout_s:g} s") from None
    except TooLarge:
        raise _Rejected(413, "oversized", f"report larger than {MAX_REPORT_BYTES} bytes") from None
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _Rejected(400, "malformed", f"not a JSON document: {str(exc)[:200]}") from None
    try:
        report = Report.from_json(data)
    except ValueError as exc:
        raise _Rejected(422, "invalid", str(exc)[:500]) from None
    if not token_matches(secret, report.agent, token.strip()):
        raise _Rejected(401, "bad_token", f"token does not match agent {report.agent!r}")
    return report


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


async def _sweeper(config: CollectorConfig, store: Store, alerts: Alerts,
                   settle: Callable[[Changes], Awaitable[None]], book: AcceptanceBook) -> None:
    """Periodic, time-based work: stale agents and open gaps (alerts), retention, and drift accepted by the CLI."""
    last_prune = 0.0
    while True:
        await asyncio.sleep(config.sweep_every_s)
        now = time.time()
        try:
            await settle(alerts.sweep(await store.agents(), now))
            book.load(await store.drift_acceptances())
            if now - last_prune >= min(PRUNE_EVERY_S, config.retention_days * 86400 / 4):
                pruned = await store.prune(now - config.retention_days * 86400)
                last_prune = now
                if pruned:
                    log.info("retention: pruned %d reports older than %g days", pruned, config.retention_days)
        except StoreUnavailable as exc:
            log.warning("sweep skipped: %s", exc)
        except Exception:  # the sweeper must outlive any one bad evaluation
            log.exception("sweep failed")
