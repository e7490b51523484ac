"""An ASGI app for a running engine, served in the engine's own trio loop by hypercorn.

Why Starlette on hypercorn: hypercorn has a native trio worker (so the HTTP server shares the
engine's loop and its cancellation, no second event loop or thread), and Starlette runs on
anyio, which runs on trio; both are small, maintained and typed. Aiohttp and Uvicorn are
asyncio-only. The handlers only read the engine (and, later, submit to it): no I/O of their
own beyond the socket.

    async with trio.open_nursery() as n:
        await n.start(serve_http, web_app(app, ready), "127.0.0.1:8080", stop)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from engine.access.audit import AuditLog
from engine.access.tokens import TokenStore
from engine.app import App
from engine.web.api import api_routes, clock_rate
from engine.web.console import console_routes
from engine.web.desk import Desk, LocalDesk

log = logging.getLogger("engine.web")

__all__ = ["desk_app", "http_config", "parse_bind", "serve_http", "web_app"]


def web_app(
    app: App,
    ready: Callable[[], bool],
    tokens: TokenStore | None = None,
    audit: AuditLog | None = None,
) -> Starlette:
    """``/metrics`` (Prometheus text format), ``/healthz`` (the process answers) and
    ``/readyz`` (the journal is restored and intake is being taken: 503 until then); with a
    token store and an audit log, the API of :mod:`engine.web.api` and the console too."""
    return desk_app(
        LocalDesk(app),
        ready,
        tokens,
        audit,
        metrics=app.metrics.registry if app.metrics is not None else None,
    )


def desk_app(
    desk: Desk,
    ready: Callable[[], bool],
    tokens: TokenStore | None = None,
    audit: AuditLog | None = None,
    *,
    metrics: CollectorRegistry | None = None,
    no_metrics: str = "metrics are off for this engine",
) -> Starlette:
    """:func:`web_app` over any :class:`~engine.web.desk.Desk` (a group member's, say)."""

    async def metrics_page(_: Request) -> Response:
        if metrics is None:
            return JSONResponse({"error": no_metrics}, status_code=404)
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        if not ready():
            return JSONResponse({"status": "starting"}, status_code=503)
        states = list(desk.states())
        active = sum(1 for s in states if s.status == "active")
        return JSONResponse({"status": "ready", "warnings": len(states), "active": active})

    routes: list[Route | Mount] = [
        Route("/metrics", metrics_page),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
    ]
    if tokens is not None and audit is not None:
        routes += api_routes(desk, tokens, audit)
        routes += console_routes()
    return Starlette(routes=routes)


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ValueError naming what was expected."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:8080), not {text!r}")
    return host.strip("[]"), int(port)


async def serve_http(
    asgi: Starlette,
    bind: str,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    time_scale: float | None = None,
) -> None:
    """Serve ``asgi`` on ``bind`` until ``stop``; ``task_status`` gets the bound addresses
    (port 0 picks a free one). ``time_scale``: see :func:`http_config`."""
    await hypercorn_serve(
        asgi,  # type: ignore[arg-type]  # ASGI typings of the two projects differ
        http_config(bind, time_scale),
        shutdown_trigger=stop.wait,
        task_status=task_status,
    )


def http_config(bind: str, time_scale: float | None = None) -> Config:
    """hypercorn's configuration for :func:`serve_http` (call it inside ``trio.run``).

    hypercorn's timeouts (keep-alive, read, graceful shutdown, ...) are in trio's seconds. Under
    a clock that runs at N trio seconds per real second (``MockClock(rate=N)``, as in
    ``simulate --serve``) they are multiplied by ``time_scale`` so they last as long in real
    time as under the real clock. ``None``: the current clock's rate when it runs at a
    positive rate, else 1 (the real clock, or an autojumping MockClock): nothing changes."""
    if time_scale is None:
        rate = clock_rate()
        time_scale = rate if rate > 0 else 1.0
    host, port = parse_bind(bind)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None  # access logs would carry query strings; ours stay id-free
    config.errorlog = None  # we log the bound address ourselves
    config.graceful_timeout = 2.0
    if time_scale != 1.0:
        config.graceful_timeout *= time_scale
        config.keep_alive_timeout *= time_scale
        config.ssl_handshake_timeout *= time_scale
        config.startup_timeout *= time_scale
        config.shutdown_timeout *= time_scale
        if config.read_timeout is not None:  # an int in hypercorn's typing
            config.read_timeout = max(1, round(config.read_timeout * time_scale))
        if config.websocket_ping_interval is not None:
            config.websocket_ping_interval *= time_scale
    return config
