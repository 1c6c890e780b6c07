"""The coordinator's dashboard: FastAPI, server-rendered pages plus a small JSON API.

Pages: ``/flows`` (live message flows, refreshed every 2 s from ``/api/flows``),
``/exceptions`` (the exception inbox and its actions), ``/cases`` (search, a case's
timeline and its state as of any moment, documents), ``/kpis`` (KPIs and charts; the
report in any format at ``/report``). ``/metrics`` is for Prometheus, ``/healthz`` for
probes.

Log-in: HTTP Basic, user ``dashboard_user`` with password ``dashboard_password``
(``ONEWINDOW_DASHBOARD_USER`` / ``ONEWINDOW_DASHBOARD_PASSWORD``). Anonymous access only
with ``ONEWINDOW_DASHBOARD_DEV=1`` and only from the loopback interface. Actions are
``POST`` with a JSON body (a cross-site form cannot send one without a CORS preflight,
which the app does not grant) and are refused when an ``Origin`` header names another
host.

Actions run the coordinator's commands (``hub.service.coordinator.Coordinator``): each is
one transaction writing the case's events and outgoing messages to the outbox; the
dashboard then publishes them and marks them sent (a hub worker's relay sends whatever
it could not).
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency annotations of
# the routes, which name locals of ``create_app``.
import asyncio
import datetime as dt
import logging
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, Field, SecretStr

from hub.config import Settings
from hub.domain.errors import DomainError, IllegalTransition, UnknownCase
from hub.domain.model import CaseState, Event, Lifecycle

__all__ = ["DashboardSettings", "create_app"]

log = logging.getLogger(__name__)


class DashboardSettings(Settings):
    """``Settings`` plus the dashboard's own (same ``ONEWINDOW_`` prefix)."""

    dashboard_user: str = "coordinator"
    dashboard_password: SecretStr | None = None
    #: anonymous access from localhost, for development only
    dashboard_dev: bool = False
    #: seconds the KPI page reuses a computation
    dashboard_kpi_cache_s: float = 15.0


_LOCAL = {"127.0.0.1", "::1", "localhost"}


# --- models of the JSON API ---------------------------------------------------------------


class ReassignIn(BaseModel):
    to_partner: str | None = Field(default=None, max_length=64)
    reason: str = Field(default="reassigned by the coordinator", min_length=1, max_length=500)


class DecisionIn(BaseModel):
    approved: bool
    note: str | None = Field(default=None, max_length=2000)


class CaseOut(BaseModel):
    case_id: str
    lifecycle: str
    phase: str
    partner_id: str | None
    country: str
    currency: str
    total: str
    collected: str
    debtor_name: str
    creditor_entity: str
    invoice_numbers: list[str]
    assigned_at: str | None
    accept_by: str | None
    declined_by: list[str]
    placed_at: str | None


class ErrorOut(BaseModel):
    """Why a request was refused."""

    detail: str


_ERR = {"model": ErrorOut}
#: what every operation may answer besides its own
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {**_ERR, "description": "Not logged in as the coordinator"},
    403: {**_ERR, "description": "Cross-site request refused"},
    503: {**_ERR, "description": "Not connected to the hub yet"},
}
ACTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {**_ERR, "description": "Refused: the command makes no sense for this case"},
    404: {**_ERR, "description": "No such case"},
    409: {**_ERR, "description": "The case's state does not allow it"},
}


class ActionOut(BaseModel):
    case_id: str
    lifecycle: str
    partner_id: str | None
    published: int


class EventOut(BaseModel):
    seq: int
    kind: str
    occurred_at: str
    recorded_at: str
    actor: str
    message_id: str | None
    data: dict[str, Any]


class DocumentOut(BaseModel):
    document_id: str
    filename: str
    kind: str
    size: int
    uploader: str
    sha256: str


class CaseViewOut(BaseModel):
    case_id: str
    as_of: str | None
    axis: str
    state: CaseOut | None
    events: list[EventOut]
    total_events: int
    documents: list[DocumentOut]


class DeadLetterOut(BaseModel):
    id: str
    message_id: str | None
    type: str | None
    user_id: str | None
    correlation_id: str | None
    reason: str
    queue: str
    exchange: str
    routing_key: str
    died_at: str | None
    count: int
    body_excerpt: str


class ExceptionsOut(BaseModel):
    rejected_claims: list[dict[str, Any]]
    unassigned: list[CaseOut]
    overdue: list[CaseOut]
    error_replies: list[dict[str, Any]]
    #: partner status codes the file adapter could not map (never guessed)
    quarantined: list[dict[str, Any]] = []
    #: outgoing messages the broker did not confirm, retried with pauses
    undelivered: list[dict[str, Any]] = []
    dead_letters: list[DeadLetterOut]
    dead_letter_error: str | None
    settlements: list[dict[str, Any]]
    partners: list[dict[str, Any]]


# --- helpers ---------------------------------------------------------------------------------


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat() if t else None


def case_out(s: CaseState) -> CaseOut:
    return CaseOut(
        case_id=s.case_id,
        lifecycle=s.lifecycle.value,
        phase=s.phase.value,
        partner_id=s.partner_id,
        country=s.country,
        currency=s.currency,
        total=str(s.total),
        collected=s.collected,
        debtor_name=str(s.debtor.get("name", "")),
        creditor_entity=s.creditor_entity,
        invoice_numbers=sorted(s.claims),
        assigned_at=_iso(s.assigned_at),
        accept_by=_iso(s.accept_by),
        declined_by=list(s.declined_by),
        placed_at=_iso(s.placed_at),
    )


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return value


def event_out(e: Event) -> EventOut:
    return EventOut(
        seq=e.seq,
        kind=e.kind.value,
        occurred_at=e.occurred_at.isoformat(),
        recorded_at=e.recorded_at.isoformat(),
        actor=e.actor,
        message_id=e.message_id,
        data=_plain(dict(e.data)),
    )


def parse_moment(text: str | None) -> dt.datetime | None:
    """An ISO date-time; without an offset it is UTC (what ``datetime-local`` sends)."""
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as e:
        raise HTTPException(400, f"as_of must be an ISO date-time, not {text!r}") from e
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _status_of(e: DomainError) -> int:
    if isinstance(e, UnknownCase):
        return 404
    if isinstance(e, IllegalTransition):
        return 409
    return 400


# --- the application state ------------------------------------------------------------------


@dataclass
class _State:
    settings: DashboardSettings
    hub: Any = None  # hub.bootstrap.Hub without consumers
    coordinator: Any = None
    monitor: Any = None
    dead: Any = None
    templates: Any = None
    registry: Any = None
    gauges: dict[str, Any] = field(default_factory=dict)
    kpi_cache: dict[str, tuple[float, Any]] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _templates() -> Any:
    import jinja2

    from hub.service.report import _text

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("hub", "templates"),
        autoescape=jinja2.select_autoescape(("html",)),
        undefined=jinja2.ChainableUndefined,
    )
    env.filters["cell"] = _text
    return env


def _metrics(state: _State) -> None:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    r = CollectorRegistry()
    state.registry = r
    state.gauges = {
        "queue_messages": Gauge(
            "onewindow_queue_messages",
            "Messages in a queue (ready + unacked)",
            ["queue"],
            registry=r,
        ),
        "queue_consumers": Gauge(
            "onewindow_queue_consumers", "Consumers of a queue", ["queue"], registry=r
        ),
        "queue_published": Gauge(
            "onewindow_queue_published",
            "Messages published to a queue (broker total)",
            ["queue"],
            registry=r,
        ),
        "exchange_in": Gauge(
            "onewindow_exchange_in",
            "Messages published to an exchange (broker total)",
            ["exchange"],
            registry=r,
        ),
        "cases": Gauge("onewindow_cases", "Cases by lifecycle", ["lifecycle"], registry=r),
        "exceptions": Gauge(
            "onewindow_exceptions", "Items in the exception inbox", ["kind"], registry=r
        ),
        "requests": Counter(
            "onewindow_http_requests",
            "Dashboard HTTP requests",
            ["method", "route", "status"],
            registry=r,
        ),
        "latency": Histogram(
            "onewindow_http_request_seconds", "Dashboard request latency", ["route"], registry=r
        ),
        "actions": Counter(
            "onewindow_coordinator_actions",
            "Coordinator actions from the dashboard",
            ["action", "outcome"],
            registry=r,
        ),
    }


# --- the app ---------------------------------------------------------------------------------


def create_app(settings: Settings | None = None, *, connect: bool = True) -> FastAPI:
    """The dashboard app. ``connect=False`` builds it without touching any service (for
    the OpenAPI document)."""
    if settings is None:
        dash = DashboardSettings()
    elif isinstance(settings, DashboardSettings):
        dash = settings
    else:
        dash = DashboardSettings(**settings.model_dump())
    state = _State(dash)
    state.templates = _templates()
    _metrics(state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if connect:
            from hub.bootstrap import start_hub
            from hub.infra.dead_letters import DeadLetters
            from hub.infra.rabbit_admin import vhost_of
            from hub.service.coordinator import Coordinator
            from hub.service.flows import FlowMonitor

            hub = await start_hub(dash, consume=False)
            state.hub = hub
            state.coordinator = Coordinator(hub.store, hub.partners)
            vhost = vhost_of(dash.amqp_url)
            state.monitor = FlowMonitor(
                dash.amqp_management_url, hub.topology, hub.store.db, vhost=vhost
            )
            state.dead = DeadLetters(
                dash.amqp_management_url,
                hub.topology.hub_dead,
                namespace=dash.namespace,
                vhost=vhost,
            )
        try:
            yield
        finally:
            if state.monitor is not None:
                await state.monitor.close()
            if state.hub is not None:
                await state.hub.close()

    app = FastAPI(
        title="OneWindow coordinator dashboard",
        version="1",
        description="The coordinator's window on the hub: flows, exceptions, cases, KPIs.",
        lifespan=lifespan,
        responses=COMMON_RESPONSES,
    )
    app.state.dashboard = state
    basic = HTTPBasic(auto_error=False, realm="OneWindow")

    def user(
        request: Request,
        credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)],
    ) -> str:
        host = request.client.host if request.client else ""
        if dash.dashboard_dev and host in _LOCAL:
            return credentials.username if credentials else "dev"
        password = dash.dashboard_password
        if (
            password is not None
            and password.get_secret_value()
            and credentials is not None
            and secrets.compare_digest(credentials.username.encode(), dash.dashboard_user.encode())
            and secrets.compare_digest(
                credentials.password.encode(), password.get_secret_value().encode()
            )
        ):
            return credentials.username
        raise HTTPException(
            401,
            "log in as the coordinator",
            headers={"WWW-Authenticate": 'Basic realm="OneWindow"'},
        )

    User = Annotated[str, Depends(user)]

    def same_origin(request: Request) -> None:
        origin = request.headers.get("origin")
        if origin and urllib.parse.urlsplit(origin).netloc != request.headers.get("host"):
            raise HTTPException(403, "cross-site request refused")

    def ready() -> _State:
        if state.hub is None:
            raise HTTPException(503, "the dashboard is not connected to the hub")
        return state

    Ready = Annotated[_State, Depends(ready)]

    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        from hub.infra.observability import tracer

        start = time.perf_counter()
        route = request.url.path
        with tracer("onewindow.dashboard").start_as_current_span(
            f"{request.method} {route}",
            attributes={"http.request.method": request.method, "url.path": route},
        ) as span:
            response = await call_next(request)
            span.set_attribute("http.response.status_code", response.status_code)
        matched = request.scope.get("route")
        name = getattr(matched, "path", "unmatched")
        state.gauges["requests"].labels(request.method, name, str(response.status_code)).inc()
        state.gauges["latency"].labels(name).observe(time.perf_counter() - start)
        return response

    def page(name: str, request_user: str, **context: Any) -> HTMLResponse:
        html = state.templates.get_template(name).render(
            user=request_user, namespace=dash.namespace, **context
        )
        return HTMLResponse(html)

    async def publish(messages: list[Any]) -> int:
        if not messages:
            return 0
        try:
            confirmed = await state.hub.publisher.publish(messages)
            await state.hub.store.mark_sent(confirmed)
            return len(confirmed)
        except Exception as e:  # the outbox keeps them; a worker's relay sends them
            log.warning("publishing %d message(s) failed, left to the relay: %r", len(messages), e)
            return 0

    # -- probes and metrics ------------------------------------------------------------

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok" if state.hub is not None or not connect else "starting"}

    @app.get("/metrics", include_in_schema=False)
    async def metrics(_: User) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if state.hub is not None:
            await _refresh_gauges(state)
        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def root(_: User) -> RedirectResponse:
        return RedirectResponse("/flows", status_code=303)

    # -- flows -------------------------------------------------------------------------

    @app.get("/flows", response_class=HTMLResponse, include_in_schema=False)
    async def flows_page(who: User) -> HTMLResponse:
        return page("flows.html", who, title="Flows", active="/flows")

    @app.get("/api/flows", summary="Message flows now")
    async def flows_api(_: User, s: Ready) -> dict[str, Any]:
        from hub.service.flows import flow_svg

        snapshot = await s.monitor.snapshot()
        doc: dict[str, Any] = snapshot.to_json()
        doc["svg"] = flow_svg(snapshot)
        return doc

    # -- exceptions --------------------------------------------------------------------

    async def exceptions(s: _State) -> ExceptionsOut:
        db = s.hub.store.db
        now = dt.datetime.now(dt.UTC)
        letters: list[DeadLetterOut] = []
        letter_error = None
        try:
            letters = [DeadLetterOut(**d.to_json()) for d in await s.dead.peek(100)]
        except Exception as e:
            letter_error = str(e)
        rejected = [
            _plain(d)
            async for d in db.rejections.find({"source": "creditor"})
            .sort("received_at", -1)
            .limit(100)
        ]
        replies = [
            _plain(d)
            async for d in db.rejections.find({"source": "partner"})
            .sort("received_at", -1)
            .limit(100)
        ]
        quarantined = [
            _plain(d)
            async for d in db.quarantine.find({"status": "open"})
            .sort("quarantined_at", -1)
            .limit(100)
        ]
        undelivered = [
            _plain(d)
            async for d in db.outbox.find(
                {"sent_at": None, "attempts": {"$gte": 1}},
                {"body": 0, "worker_id": 0},
            )
            .sort("created_at", 1)
            .limit(100)
        ]
        unassigned = await s.coordinator.list_cases(lifecycle=Lifecycle.UNASSIGNED.value, limit=200)
        overdue = await s.coordinator.overdue(now, limit=200)
        settlements = [
            {**_plain(dict(x.details)), "case_id": x.case.case_id, "currency": x.case.currency}
            for x in await s.coordinator.settlements(limit=200)
        ]
        profiles = await s.hub.partners.profiles()
        return ExceptionsOut(
            rejected_claims=rejected,
            unassigned=[case_out(c) for c in unassigned],
            overdue=[case_out(c) for c in overdue],
            error_replies=replies,
            quarantined=quarantined,
            undelivered=undelivered,
            dead_letters=letters,
            dead_letter_error=letter_error,
            settlements=settlements,
            partners=[
                {"partner_id": p.partner_id, "countries": sorted(p.countries), "active": p.active}
                for p in sorted(profiles, key=lambda p: p.partner_id)
                if p.active
            ],
        )

    @app.get("/exceptions", response_class=HTMLResponse, include_in_schema=False)
    async def exceptions_page(who: User, s: Ready) -> HTMLResponse:
        x = await exceptions(s)
        return page("exceptions.html", who, title="Exceptions", active="/exceptions", x=x)

    @app.get("/api/exceptions", summary="The exception inbox")
    async def exceptions_api(_: User, s: Ready) -> ExceptionsOut:
        return await exceptions(s)

    @app.post(
        "/api/cases/{case_id}/reassign",
        summary="Assign or reassign a case",
        dependencies=[Depends(same_origin)],
        responses=ACTION_RESPONSES,
    )
    async def reassign(case_id: str, body: ReassignIn, who: User, s: Ready) -> ActionOut:
        await s.hub.partners.refresh()  # a partner added a moment ago can take it
        try:
            out = await s.coordinator.reassign(
                case_id, to_partner=body.to_partner or None, reason=body.reason, actor=who
            )
        except DomainError as e:
            state.gauges["actions"].labels("reassign", "refused").inc()
            raise HTTPException(_status_of(e), e.message) from e
        published = await publish(out)
        state.gauges["actions"].labels("reassign", "done").inc()
        case = await s.hub.store.case(case_id)
        log.info("case %s reassigned by %s", case_id, who, extra={"case_id": case_id})
        return ActionOut(
            case_id=case_id,
            lifecycle=case.lifecycle.value if case else "unknown",
            partner_id=case.partner_id if case else None,
            published=published,
        )

    @app.post(
        "/api/cases/{case_id}/settlements/{settlement_id}/decision",
        summary="Approve or reject a settlement offer",
        dependencies=[Depends(same_origin)],
        responses=ACTION_RESPONSES,
    )
    async def decide(
        case_id: str, settlement_id: str, body: DecisionIn, who: User, s: Ready
    ) -> ActionOut:
        try:
            out = await s.coordinator.decide_settlement(
                case_id, settlement_id, approved=body.approved, decided_by=who, note=body.note
            )
        except DomainError as e:
            state.gauges["actions"].labels("decide_settlement", "refused").inc()
            raise HTTPException(_status_of(e), e.message) from e
        published = await publish(out)
        state.gauges["actions"].labels("decide_settlement", "done").inc()
        case = await s.hub.store.case(case_id)
        return ActionOut(
            case_id=case_id,
            lifecycle=case.lifecycle.value if case else "unknown",
            partner_id=case.partner_id if case else None,
            published=published,
        )

    @app.post(
        "/api/dead-letters/{letter_id}/replay",
        summary="Republish a dead letter to where it was first published",
        dependencies=[Depends(same_origin)],
        responses={
            400: ACTION_RESPONSES[400],
            404: {**_ERR, "description": "No such letter in hub.dead"},
            409: {**_ERR, "description": "The broker refused the copy; the letter stays"},
        },
    )
    async def replay(letter_id: str, who: User, s: Ready) -> DeadLetterOut:
        from hub.infra.dead_letters import DeadLetterError

        try:
            async with state.lock:  # one scan of hub.dead at a time
                letter = await s.dead.replay(s.hub.connection, letter_id, by=who)
        except DeadLetterError as e:
            state.gauges["actions"].labels("replay", "refused").inc()
            code = 404 if "is not in" in str(e) else 409
            raise HTTPException(code, str(e)) from e
        state.gauges["actions"].labels("replay", "done").inc()
        log.info(
            "dead letter %s replayed to %s/%s by %s",
            letter.message_id,
            letter.exchange,
            letter.routing_key,
            who,
            extra={"message_id": letter.message_id},
        )
        return DeadLetterOut(**letter.to_json())

    # -- cases -------------------------------------------------------------------------

    @app.get("/cases", response_class=HTMLResponse, include_in_schema=False)
    async def cases_page(who: User, s: Ready, q: str = "") -> HTMLResponse:
        results = [case_out(c) for c in await s.coordinator.find(q, limit=100)] if q else []
        return page("cases.html", who, title="Cases", active="/cases", q=q, results=results)

    @app.get("/api/cases", summary="Find cases by case id, invoice number or debtor name")
    async def cases_api(
        _: User, s: Ready, q: Annotated[str, Query(max_length=200)] = ""
    ) -> list[CaseOut]:
        return [case_out(c) for c in await s.coordinator.find(q, limit=100)] if q else []

    async def case_view(s: _State, case_id: str, as_of: str | None, axis: str) -> CaseViewOut:
        moment = parse_moment(as_of)
        if axis not in ("recorded", "occurred"):
            raise HTTPException(400, "axis must be recorded or occurred")
        all_events = await s.hub.store.events(case_id)
        if not all_events:
            raise HTTPException(404, f"there is no case {case_id}")
        shown, events = await s.coordinator.show(case_id, moment, axis)
        docs = []
        for info in await s.hub.documents.list_for_case(case_id):
            meta = info.get("metadata") or {}
            docs.append(
                DocumentOut(
                    document_id=str(meta.get("document_id") or str(info["_id"]).split("/", 1)[-1]),
                    filename=str(info.get("filename", "")),
                    kind=str(meta.get("kind", "")),
                    size=int(info.get("length", 0)),
                    uploader=str(meta.get("uploader") or meta.get("partner_id") or ""),
                    sha256=str(meta.get("sha256", "")),
                )
            )
        return CaseViewOut(
            case_id=case_id,
            as_of=_iso(moment),
            axis=axis,
            state=case_out(shown) if shown else None,
            events=[event_out(e) for e in events],
            total_events=len(all_events),
            documents=docs,
        )

    @app.get("/cases/{case_id}", response_class=HTMLResponse, include_in_schema=False)
    async def case_page(
        case_id: str, who: User, s: Ready, as_of: str | None = None, axis: str = "recorded"
    ) -> HTMLResponse:
        view = await case_view(s, case_id, as_of, axis)
        moment = parse_moment(as_of)
        state_rows = view.state.model_dump() if view.state else None
        return page(
            "case.html",
            who,
            title=f"Case {case_id}",
            active="/cases",
            case_id=case_id,
            state=state_rows,
            events=view.events,
            total_events=view.total_events,
            documents=view.documents,
            as_of=moment,
            as_of_input=moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] if moment else "",
            axis=axis,
        )

    @app.get(
        "/api/cases/{case_id}",
        summary="A case, its timeline and documents",
        responses={404: ACTION_RESPONSES[404]},
    )
    async def case_api(
        case_id: str,
        _: User,
        s: Ready,
        as_of: Annotated[
            dt.datetime | None, Query(description="ISO date-time; UTC if it has no offset")
        ] = None,
        axis: Annotated[Literal["recorded", "occurred"], Query()] = "recorded",
    ) -> CaseViewOut:
        return await case_view(s, case_id, as_of.isoformat() if as_of else None, axis)

    @app.get("/cases/{case_id}/documents/{document_id}", include_in_schema=False)
    async def document(case_id: str, document_id: str, _: User, s: Ready) -> Response:
        found = await s.hub.documents.get(f"{case_id}/{document_id}")
        if found is None:
            raise HTTPException(404, f"case {case_id} has no document {document_id}")
        info, data = found
        meta = info.get("metadata") or {}
        name = urllib.parse.quote(str(info.get("filename") or document_id))
        return Response(
            data,
            media_type=str(meta.get("content_type") or "application/octet-stream"),
            headers={"Content-Disposition": f"attachment; filename*=UTF-8''{name}"},
        )

    # -- KPIs and the report -----------------------------------------------------------

    async def kpis(s: _State, month: str | None) -> Any:
        from hub.service import report

        now = dt.datetime.now(dt.UTC)
        month = month or now.strftime("%Y-%m")
        cached = s.kpi_cache.get(month)
        if cached and time.monotonic() - cached[0] < dash.dashboard_kpi_cache_s:
            return cached[1]
        k = await report.build(s.hub.store.db, month, now=now)
        s.kpi_cache[month] = (time.monotonic(), k)
        return k

    def check_month(month: str | None) -> str | None:
        if month and not _valid_month(month):
            raise HTTPException(400, "month must be YYYY-MM")
        return month

    @app.get("/kpis", response_class=HTMLResponse, include_in_schema=False)
    async def kpis_page(who: User, s: Ready, month: str | None = None) -> HTMLResponse:
        import markupsafe

        from hub.service import report

        k = await kpis(s, check_month(month))
        return page(
            "kpis_page.html",
            who,
            title="KPIs",
            active="/kpis",
            k=k,
            month=k.month,
            formats=report.FORMATS,
            fragment=markupsafe.Markup(report.kpis_fragment(k)),
        )

    @app.get("/api/kpis", summary="The KPIs of a month, as the report's tables")
    async def kpis_api(
        _: User,
        s: Ready,
        month: Annotated[str | None, Query(pattern=r"^20\d{2}-(0[1-9]|1[0-2])$")] = None,
    ) -> dict[str, Any]:
        from hub.service import report

        k = await kpis(s, check_month(month))
        return {
            "month": k.month,
            "as_of": k.as_of.isoformat(),
            "tables": {
                t.name: [
                    {c: _plain(v) for c, v in zip(t.columns, row, strict=True)} for row in t.rows
                ]
                for t in report.tables_of(k)
            },
        }

    @app.get("/report", include_in_schema=False)
    async def report_file(
        _: User, s: Ready, month: str | None = None, format: str = "html"
    ) -> Response:
        from hub.service import report

        if format not in report.FORMATS:
            raise HTTPException(400, f"format must be one of {', '.join(report.FORMATS)}")
        k = await kpis(s, check_month(month))
        media = {
            "csv": "text/csv",
            "html": "text/html",
            "pdf": "application/pdf",
            "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }[format]
        data = await asyncio.to_thread(report.render, k, format)
        return Response(
            data,
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="report-{k.month}.{format}"'},
        )

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, e: DomainError) -> JSONResponse:
        return JSONResponse({"detail": e.message}, status_code=_status_of(e))

    return app


def _valid_month(month: str) -> bool:
    """``YYYY-MM`` of this century (a report of year 0 or 9999 makes no sense)."""
    try:
        dt.datetime.strptime(month, "%Y-%m")
    except ValueError:
        return False
    return len(month) == 7 and month.startswith("20")


async def _refresh_gauges(state: _State) -> None:
    g = state.gauges
    try:
        flows = await state.monitor.snapshot()
    except Exception as e:  # the scrape still answers with what the store knows
        log.warning("metrics: flows unavailable: %r", e)
    else:
        for q in flows.queues:
            g["queue_messages"].labels(q.logical).set(q.messages)
            g["queue_consumers"].labels(q.logical).set(q.consumers)
            g["queue_published"].labels(q.logical).set(q.published)
        for x in flows.exchanges:
            g["exchange_in"].labels(x.logical).set(x.in_total)
    db = state.hub.store.db
    counts = {lc.value: 0 for lc in Lifecycle}
    async for d in await db.cases.aggregate([{"$group": {"_id": "$lifecycle", "n": {"$sum": 1}}}]):
        counts[str(d["_id"])] = int(d["n"])
    for lc, n in counts.items():
        g["cases"].labels(lc).set(n)
    g["exceptions"].labels("rejected_claims").set(
        await db.rejections.count_documents({"source": "creditor"})
    )
    g["exceptions"].labels("error_replies").set(
        await db.rejections.count_documents({"source": "partner"})
    )
    g["exceptions"].labels("unassigned").set(counts[Lifecycle.UNASSIGNED.value])
    g["exceptions"].labels("overdue").set(
        await db.cases.count_documents(
            {"lifecycle": Lifecycle.ASSIGNED.value, "accept_by": {"$lt": dt.datetime.now(dt.UTC)}}
        )
    )
