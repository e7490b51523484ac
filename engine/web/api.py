"""The HTTP API of one engine: warnings, feedback, audiences, statistics, behind API tokens.

Every request carries ``Authorization: Bearer wd_<id>_<secret>``; the token's role and
subject become a :class:`~engine.access.policy.Principal`, and every decision is one of the
pure functions of :mod:`engine.access.policy` (the handlers never filter by themselves).
What a caller may not see answers 404, the same as what does not exist; what they may see but
not do answers 403. Bad input answers 422 with ``field`` and ``expected``, the same wording
as the dead-letter reasons. Every write is in the audit log before its answer goes out.

Routes (``/api/v1``; the OpenAPI document is at ``/api/v1/openapi.json``):

    POST /warnings                    submit a warning (centre)
    GET  /warnings[?status=&kind=&limit=]   warnings the caller may see
    GET  /warnings/{id}               one warning: state and timeline
    POST /warnings/{id}/feedback      ack, call, read, visit, outcome (who may act)
    GET  /me                          the caller's role and jurisdiction
    GET  /events[?since=]             server-sent events: the warnings that changed, live
    GET  /audiences/count?expr=       count an expression within the caller's jurisdiction
    GET  /audiences/preview?expr=     the count and the first residents, masked, in scope
    GET  /stats                       statistics within the caller's scope
    GET  /campaigns                   every campaign's progress (admin, centre)
    POST /campaigns                   issue a campaign (admin, centre)
    GET  /campaigns/{id}              its progress (admin, centre)
    POST /campaigns/{id}/cancel       cancel it (admin, centre)
    POST /campaigns/{id}/tasks/{officer}/confirm   an officer's one click (that officer)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from engine.access.audit import AuditLog
from engine.access.policy import (
    ACT_KINDS,
    Principal,
    may_act,
    may_campaign,
    may_confirm_task,
    may_submit,
    principal_for,
    resident_fields,
    resident_visible,
    stats_scope,
    warning_visible,
)
from engine.access.tokens import TokenStore
from engine.audience.expr import AudienceError
from engine.audience.program import Audience
from engine.campaigns.campaign import (
    Campaign,
    CampaignError,
    DuplicateCampaign,
    InvalidCampaign,
)
from engine.machine import WarningState
from engine.model import (
    FeedbackEvent,
    InvalidMessage,
    WarningInstruction,
    decode_feedback,
    describe_target,
)
from engine.web.desk import Desk

__all__ = ["API_PREFIX", "api_routes", "openapi"]

API_PREFIX = "/api/v1"
MAX_BODY = 1 << 16
MAX_LIST = 1000
MAX_PREVIEW = 100
EVENT_INTERVAL_S = 0.1
ROW_CACHE = 200_000
"""Encoded board rows kept for the live feed (cleared whole when full)."""
_encode = msgspec.json.Encoder().encode
"""Real seconds between two updates to one watcher: changes in between go out together."""
HEARTBEAT_S = 15.0
"""Real seconds of silence after which a watcher gets a comment line (proxies keep it open)."""


class _Refused(Exception):
    """An answer other than 2xx, raised from deep in a handler."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _error(status: int, field: str, expected: str) -> _Refused:
    return _Refused(status, {"field": field, "expected": expected})


NOT_FOUND = _Refused(404, {"error": "no such warning"})


def clock_rate() -> float:
    """Engine seconds per real second: 1 live; the replay speed under ``simulate --serve``
    (trio's MockClock with a rate), so a console can count down deadlines between updates."""
    rate = getattr(trio.lowlevel.current_clock(), "rate", 1.0)
    return float(rate) if isinstance(rate, int | float) else 1.0


async def real_sleep(seconds: float) -> None:
    """Sleep ``seconds`` of real time, also when the engine's clock runs faster."""
    rate = clock_rate()
    await trio.sleep(seconds * rate if rate > 0 else 0)


def warning_view(state: WarningState) -> dict[str, Any]:
    """A warning as the API shows it: no phone number or name, ids and officer keys only."""
    w, r = state.warning, state.responders
    return {
        "id": w.id,
        "kind": w.kind,
        "level": w.level,
        "msg_type": w.msg_type,
        "target": describe_target(w.target),
        "status": state.status,
        "outcome": state.outcome,
        "expires_at": state.expires_at,
        "next_deadline": state.next_deadline,
        "grid": r.grid,
        "station": r.station,
        "notified": list(state.notified),
        "acked_by": state.acked_by,
        "officer_track": {
            "status": state.officer.status,
            "label": state.officer.label,
            "to": state.officer.to,
        },
        "contact_track": {
            "status": state.contact.status,
            "label": state.contact.label,
            "to": state.contact.to,
        },
        "received_at": state.timeline[0].at if state.timeline else None,
        "timeline": [
            {
                "at": t.at,
                "track": t.track,
                "from": t.frm,
                "to": t.to,
                "reason": t.reason,
                "cause": t.cause,
            }
            for t in state.timeline
        ],
    }


def api_routes(desk: Desk, tokens: TokenStore, audit: AuditLog) -> list[Route]:
    """The API's routes over a desk (one engine, or a group), a token store and an audit log."""
    engine, reg = desk, desk.registry

    def principal(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        record = tokens.authenticate(token) if scheme.lower() == "bearer" else None
        if record is None:
            raise _Refused(401, {"error": "a valid API token is required (Bearer)"})
        try:
            return principal_for(record.role, record.subject, reg, record.id)
        except ValueError:  # the subject left the registry since the token was made
            raise _Refused(403, {"error": "this token's jurisdiction no longer exists"}) from None

    async def body(request: Request) -> bytes:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise _error(413, "(message)", f"at most {MAX_BODY} bytes")
        return raw

    def visible(p: Principal, warning_id: str) -> WarningState:
        state = engine.status(warning_id)
        if state is None or not warning_visible(p, state):
            raise NOT_FOUND
        return state

    async def submit(request: Request) -> Response:
        p = principal(request)
        if not may_submit(p):
            audit.record(p, "warning.submit", "-", "forbidden")
            raise _Refused(403, {"error": "only the warning centre submits warnings"})
        raw = await body(request)
        try:
            await engine.submit(raw)
        except InvalidMessage as exc:
            audit.record(p, "warning.submit", "-", f"invalid {exc.field}")
            raise _error(422, exc.field, exc.expected) from None
        warning_id = json.loads(raw)["id"]
        audit.record(p, "warning.submit", f"warning:{warning_id}")
        return JSONResponse({"id": warning_id, "accepted": True}, status_code=202)

    async def list_warnings(request: Request) -> Response:
        p = principal(request)
        status = request.query_params.get("status", "active")
        kind = request.query_params.get("kind")
        try:
            limit = min(int(request.query_params.get("limit", "100")), MAX_LIST)
        except ValueError:
            raise _error(422, "limit", f"a whole number up to {MAX_LIST}") from None
        out = []
        version = engine.feed.version  # read with the states: no await in between
        for s in engine.states():
            if status != "all" and s.status != status:
                continue
            if kind is not None and s.warning.kind != kind:
                continue
            if warning_visible(p, s):
                out.append(warning_view(s) | {"timeline": None})
                if len(out) >= limit:
                    break
        return JSONResponse(
            {"warnings": out, "version": version, "now": engine.now(), "rate": clock_rate()}
        )

    async def one_warning(request: Request) -> Response:
        p = principal(request)
        state = visible(p, request.path_params["warning_id"])
        view = warning_view(state)
        view["may"] = [k for k in ACT_KINDS if may_act(p, state, k)]
        rid = state.responders.resident
        if rid is not None and resident_visible(p, reg, rid):
            view["resident"] = resident_fields(p, reg, rid, acting_on=state)
        return JSONResponse(view)

    async def me(request: Request) -> Response:
        p = principal(request)
        return JSONResponse(
            {"role": p.role, "subject": p.subject, "station": p.station, "token": p.token_id}
        )

    row_cache: dict[str, tuple[WarningState, msgspec.Raw]] = {}

    def row_bytes(state: WarningState) -> msgspec.Raw:
        """A warning's board row, encoded once per state (states are immutable: a change is a
        new object) and shared by every watcher that may see it."""
        wid = state.warning.id
        hit = row_cache.get(wid)
        if hit is not None and hit[0] is state:
            return hit[1]
        raw = msgspec.Raw(_encode(warning_view(state) | {"timeline": None}))
        if len(row_cache) >= ROW_CACHE:
            row_cache.clear()
        row_cache[wid] = (state, raw)
        return raw

    async def events(request: Request) -> Response:
        """Server-sent events: ``changed`` with the rows that changed (or ``gone`` ids),
        ``reset`` when the watcher fell too far behind (reload the list), a comment line as
        heartbeat. Each event carries the engine's ``now`` and clock ``rate``."""
        p = principal(request)
        feed = engine.feed
        try:
            since = int(request.query_params.get("since", feed.version))
        except ValueError:
            raise _error(422, "since", "a version number from a listing or an event") from None

        def frame(event: str, data: dict[str, Any]) -> bytes:
            data |= {"now": engine.now(), "rate": clock_rate()}
            return b"event: " + event.encode() + b"\ndata: " + _encode(data) + b"\n\n"

        async def stream() -> AsyncIterator[bytes]:
            seen = since
            yield frame("hello", {"version": feed.version})
            while True:
                rate = clock_rate()
                with trio.move_on_after(HEARTBEAT_S * rate if rate > 0 else 0):
                    await feed.wait_after(seen)
                if feed.version <= seen:
                    yield b": heartbeat\n\n"
                    continue
                seen, ids = feed.since(seen)
                if ids is None:
                    yield frame("reset", {"version": seen})
                else:
                    rows: list[msgspec.Raw] = []
                    gone: list[str] = []
                    for wid in ids:
                        state = engine.status(wid)
                        if state is not None and warning_visible(p, state):
                            rows.append(row_bytes(state))
                        elif state is None:
                            gone.append(wid)
                    if rows or gone:
                        yield frame("changed", {"version": seen, "warnings": rows, "gone": gone})
                await real_sleep(EVENT_INTERVAL_S)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def feedback(request: Request) -> Response:
        p = principal(request)
        warning_id = request.path_params["warning_id"]
        state = visible(p, warning_id)
        raw = await body(request)
        try:
            fields = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise _error(422, "(message)", "a JSON object") from None
        if not isinstance(fields, dict):
            raise _error(422, "(message)", "a JSON object")
        kind = fields.get("type")
        if kind not in ACT_KINDS:
            raise _error(422, "type", f"one of {', '.join(ACT_KINDS)}")
        if not may_act(p, state, kind):
            audit.record(p, f"feedback.{kind}", f"warning:{warning_id}", "forbidden")
            raise _Refused(403, {"error": "you were not asked to act on this warning"})
        fields["warning_id"] = warning_id
        own = kind != "ack" or p.role != "officer"
        if not own and fields.setdefault("officer", p.subject) != p.subject:
            raise _error(403, "officer", "your own officer key")
        try:
            event: FeedbackEvent = decode_feedback(msgspec.json.encode(fields))
            await engine.feedback(event)
        except InvalidMessage as exc:
            raise _error(422, exc.field, exc.expected) from None
        audit.record(p, f"feedback.{kind}", f"warning:{warning_id}")
        return JSONResponse({"warning_id": warning_id, "accepted": True}, status_code=202)

    def audience(p: Principal, request: Request) -> tuple[str, Audience]:
        """The caller's expression, within their jurisdiction. A bad one answers 422 with
        the message and the ``position`` (0-based, in the caller's text) at fault."""
        expr = request.query_params.get("expr", "")
        if not expr.strip():
            raise _error(422, "expr", "an audience expression, e.g. elderly & ~warned_7d")
        try:
            if p.role == "officer":
                return expr, reg.view_for(p.subject or "").audience(expr)
            if p.role == "chief":
                scoped = reg.audience(f"station:{p.station}")
                return expr, reg.audience(expr).within(scoped.plan)
            return expr, reg.audience(expr)
        except AudienceError as exc:
            body = {"field": "expr", "expected": exc.message, "position": exc.pos}
            raise _Refused(422, body) from None

    async def count(request: Request) -> Response:
        p = principal(request)
        expr, aud = audience(p, request)
        return JSONResponse({"expr": expr, "count": int(aud.count())})

    async def preview(request: Request) -> Response:
        p = principal(request)
        if p.role == "admin":
            raise _Refused(403, {"error": "admins count audiences; they do not look residents up"})
        try:
            limit = min(int(request.query_params.get("limit", "20")), MAX_PREVIEW)
        except ValueError:
            raise _error(422, "limit", f"a whole number up to {MAX_PREVIEW}") from None
        expr, aud = audience(p, request)
        ids = aud.ids()
        grids = reg.jurisdiction.units["grid"]
        rows = []
        for rid in ids[: max(limit, 0)].tolist():
            if not resident_visible(p, reg, rid):  # defence in depth: the audience is scoped
                continue
            o = int(reg.officer[rid])
            rows.append(
                {
                    "id": rid,
                    "grid": grids[int(reg.grid[rid])].key,
                    "officer": reg.officers[o].key if o >= 0 else None,
                    **resident_fields(p, reg, rid),
                }
            )
        return JSONResponse({"expr": expr, "count": int(ids.size), "residents": rows})

    def station_grids(station: str) -> set[str]:
        j = reg.jurisdiction
        units = j.units
        return {
            g.key
            for i, g in enumerate(units["grid"])
            if units["station"][int(j.village_station[int(j.grid_village[i])])].key == station
        }

    async def stats(request: Request) -> Response:
        p = principal(request)
        scope = stats_scope(p)
        summary = desk.summary()
        if scope.level == "county":
            return JSONResponse(msgspec.to_builtins(summary))
        if scope.level == "station":
            rows = [s for s in summary.stations if s.key == scope.key]
            officers = [o for o in summary.officers if o.station == scope.key]
            in_station = station_grids(scope.key or "")
            grids = [g for g in summary.grids if g.key in in_station]
            return JSONResponse(
                msgspec.to_builtins({"stations": rows, "officers": officers, "grids": grids})
            )
        mine = [o for o in summary.officers if o.key == scope.key]
        return JSONResponse(msgspec.to_builtins({"officers": mine}))

    def campaign_admin(p: Principal, action: str, target: str) -> None:
        if not may_campaign(p):
            audit.record(p, action, target, "forbidden")
            raise _Refused(403, {"error": "campaigns are for county admins and the centre"})

    async def issue_campaign(request: Request) -> Response:
        p = principal(request)
        campaign_admin(p, "campaign.issue", "-")
        raw = await body(request)
        try:
            progress = await desk.issue_campaign(raw)
        except InvalidCampaign as exc:
            raise _error(422, exc.field, exc.expected) from None
        except DuplicateCampaign as exc:
            raise _Refused(409, {"field": "id", "expected": str(exc).partition(": ")[2]}) from None
        except CampaignError as exc:
            field, _, expected = str(exc).partition(": ")
            raise _error(422, field if expected else "(campaign)", expected or str(exc)) from None
        audit.record(p, "campaign.issue", f"campaign:{progress['campaign_id']}")
        return JSONResponse(progress, status_code=202)

    def known_campaign(campaign_id: str) -> dict[str, Any]:
        progress = desk.progress(campaign_id)
        if progress is None:
            raise _Refused(404, {"error": "no such campaign"})
        return progress

    async def list_campaigns(request: Request) -> Response:
        p = principal(request)
        if not may_campaign(p):
            raise _Refused(403, {"error": "campaigns are for county admins and the centre"})
        out = [desk.progress(c) for c in desk.campaign_ids()]
        return JSONResponse({"campaigns": [x for x in out if x is not None]})

    async def campaign_progress(request: Request) -> Response:
        p = principal(request)
        campaign_id = request.path_params["campaign_id"]
        if not may_campaign(p):
            raise _Refused(403, {"error": "campaigns are for county admins and the centre"})
        return JSONResponse(known_campaign(campaign_id))

    async def cancel_campaign(request: Request) -> Response:
        p = principal(request)
        campaign_id = request.path_params["campaign_id"]
        campaign_admin(p, "campaign.cancel", f"campaign:{campaign_id}")
        known_campaign(campaign_id)
        progress = await desk.cancel_campaign(campaign_id)
        audit.record(p, "campaign.cancel", f"campaign:{campaign_id}")
        return JSONResponse(progress)

    async def confirm_task(request: Request) -> Response:
        p = principal(request)
        campaign_id = request.path_params["campaign_id"]
        officer = request.path_params["officer"]
        target = f"task:{campaign_id}/{officer}"
        if not may_confirm_task(p, officer):
            audit.record(p, "campaign.confirm", target, "forbidden")
            raise _Refused(403, {"error": "officers confirm their own tasks"})
        known_campaign(campaign_id)
        try:
            changed = await desk.confirm_task(campaign_id, officer)
        except CampaignError as exc:
            raise _Refused(409, {"error": str(exc)}) from None
        audit.record(p, "campaign.confirm", target)
        return JSONResponse(
            {"task": f"{campaign_id}/{officer}", "confirmed": True, "changed": changed}
        )

    async def openapi_doc(_: Request) -> Response:
        return JSONResponse(openapi())

    def guarded(handler: Any) -> Any:
        async def run(request: Request) -> Response:
            try:
                response: Response = await handler(request)
                return response
            except _Refused as r:
                headers = {"WWW-Authenticate": "Bearer"} if r.status == 401 else None
                return JSONResponse(r.body, status_code=r.status, headers=headers)

        return run

    prefix = API_PREFIX
    return [
        Route(f"{prefix}/openapi.json", openapi_doc),
        Route(f"{prefix}/warnings", guarded(submit), methods=["POST"]),
        Route(f"{prefix}/warnings", guarded(list_warnings), methods=["GET"]),
        Route(f"{prefix}/warnings/{{warning_id}}", guarded(one_warning), methods=["GET"]),
        Route(f"{prefix}/warnings/{{warning_id}}/feedback", guarded(feedback), methods=["POST"]),
        Route(f"{prefix}/me", guarded(me), methods=["GET"]),
        Route(f"{prefix}/events", guarded(events), methods=["GET"]),
        Route(f"{prefix}/audiences/count", guarded(count), methods=["GET"]),
        Route(f"{prefix}/audiences/preview", guarded(preview), methods=["GET"]),
        Route(f"{prefix}/stats", guarded(stats), methods=["GET"]),
        Route(f"{prefix}/campaigns", guarded(issue_campaign), methods=["POST"]),
        Route(f"{prefix}/campaigns", guarded(list_campaigns), methods=["GET"]),
        Route(f"{prefix}/campaigns/{{campaign_id}}", guarded(campaign_progress), methods=["GET"]),
        Route(
            f"{prefix}/campaigns/{{campaign_id}}/cancel", guarded(cancel_campaign), methods=["POST"]
        ),
        Route(
            f"{prefix}/campaigns/{{campaign_id}}/tasks/{{officer}}/confirm",
            guarded(confirm_task),
            methods=["POST"],
        ),
    ]


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document: paths by hand, message schemas generated by msgspec from the
    structs that decode them (so they cannot drift from what the engine accepts)."""
    (warning, feedback, campaign), components = msgspec.json.schema_components(
        [WarningInstruction, FeedbackEvent, Campaign], ref_template="#/components/schemas/{name}"
    )
    bearer: list[dict[str, list[str]]] = [{"token": []}]
    errors = {
        "401": {"description": "no valid token"},
        "403": {"description": "the token's role may not do this"},
        "404": {"description": "no such warning, or not in the caller's jurisdiction"},
        "422": {"description": "bad input: `field` and `expected`"},
    }

    def op(summary: str, **extra: Any) -> dict[str, Any]:
        return {
            "summary": summary,
            "security": bearer,
            "responses": {"200": {"description": "ok"}, **errors},
            **extra,
        }

    return {
        "openapi": "3.1.0",
        "info": {"title": "warn-dispatch", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            f"{API_PREFIX}/warnings": {
                "post": op(
                    "Submit a warning (centre)",
                    requestBody={"content": {"application/json": {"schema": warning}}},
                ),
                "get": op(
                    "Warnings the caller may see",
                    parameters=[
                        {"name": "status", "in": "query", "schema": {"type": "string"}},
                        {"name": "kind", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "maximum": MAX_LIST},
                        },
                    ],
                ),
            },
            f"{API_PREFIX}/warnings/{{warning_id}}": {"get": op("One warning: state and timeline")},
            f"{API_PREFIX}/warnings/{{warning_id}}/feedback": {
                "post": op(
                    "Ack, call result, read, visit or outcome (who may act)",
                    requestBody={"content": {"application/json": {"schema": feedback}}},
                ),
            },
            f"{API_PREFIX}/audiences/count": {
                "get": op(
                    "Count an audience within the caller's jurisdiction",
                    parameters=[
                        {
                            "name": "expr",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                )
            },
            f"{API_PREFIX}/audiences/preview": {
                "get": op(
                    "The count and the first residents (masked), within the caller's "
                    "jurisdiction; not for admins",
                    parameters=[
                        {
                            "name": "expr",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "maximum": MAX_PREVIEW},
                        },
                    ],
                )
            },
            f"{API_PREFIX}/me": {"get": op("The caller's role, subject and station")},
            f"{API_PREFIX}/events": {
                "get": op(
                    "Server-sent events: `changed` (rows and `gone` ids), `reset`, heartbeats; "
                    "each with the engine's `now` and clock `rate`",
                    parameters=[{"name": "since", "in": "query", "schema": {"type": "integer"}}],
                )
            },
            f"{API_PREFIX}/stats": {"get": op("Statistics within the caller's scope")},
            f"{API_PREFIX}/campaigns": {
                "get": op("Every campaign's progress (admin, centre)"),
                "post": op(
                    "Issue a campaign (admin, centre)",
                    requestBody={"content": {"application/json": {"schema": campaign}}},
                ),
            },
            f"{API_PREFIX}/campaigns/{{campaign_id}}": {"get": op("A campaign's progress")},
            f"{API_PREFIX}/campaigns/{{campaign_id}}/cancel": {"post": op("Cancel a campaign")},
            f"{API_PREFIX}/campaigns/{{campaign_id}}/tasks/{{officer}}/confirm": {
                "post": op("An officer confirms their routine task")
            },
        },
    }
