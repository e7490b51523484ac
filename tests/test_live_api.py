"""What the console reads: the live feed of changed warnings (server-sent events over a real
hypercorn socket), audience preview with error positions, campaign listing, ``/me``; and the
engine's :class:`StateFeed` as a property test."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from hypothesis import given
from hypothesis import strategies as st

from engine import AppConfig, open_app
from engine.access.audit import AuditLog
from engine.access.tokens import TokenStore
from engine.state_feed import StateFeed
from engine.testing.messages import warning_bytes
from engine.transport import open_memory_intake, open_memory_outbox
from engine.web.server import serve_http, web_app
from tests.test_api import county

ROLES = {
    "centre": ("centre", None),
    "admin": ("admin", None),
    "chief01": ("chief", "01"),
    "chief02": ("chief", "02"),
    "p01": ("officer", "P01"),
    "p03": ("officer", "P03"),
}


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[Any, dict[str, httpx.AsyncClient]]]:
    """An engine with its HTTP side on a free loopback port, and a client per role."""
    store = TokenStore.load(tmp_path / "tokens.json")
    tokens = {who: store.create(role, subject) for who, (role, subject) in ROLES.items()}
    audit = AuditLog(tmp_path / "audit.jsonl")
    _send, intake = open_memory_intake()
    sink, _out = open_memory_outbox(capacity=10_000)
    stop = trio.Event()
    config = AppConfig(registry=county(), journal=tmp_path / "j")
    async with open_app(config) as app, trio.open_nursery() as n:
        await n.start(
            lambda task_status: app.serve(
                intake, sink, stop=stop, handle_signals=False, task_status=task_status
            )
        )
        asgi = web_app(app, lambda: True, store, audit)
        binds = await n.start(serve_http, asgi, "127.0.0.1:0", stop)
        base = binds[0].replace("0.0.0.0", "127.0.0.1")
        clients = {
            who: httpx.AsyncClient(
                base_url=base, headers={"authorization": f"Bearer {t}"}, timeout=5
            )
            for who, t in tokens.items()
        }
        try:
            yield app, clients
        finally:
            for c in clients.values():
                await c.aclose()
            stop.set()
    audit.close()


class EventStream:
    """A minimal SSE client on a raw trio socket (httpx's streaming iterators warn when left
    early under trio). Every read is under the caller's deadline."""

    def __init__(self, client: httpx.AsyncClient, path: str) -> None:
        self.url = httpx.URL(str(client.base_url)).join(path)
        self.auth = client.headers["authorization"]
        self.buf = b""
        self.status = 0
        self.headers = ""

    async def __aenter__(self) -> EventStream:
        url = self.url
        self.stream = await trio.open_tcp_stream(url.host, url.port or 80)
        target = url.raw_path.decode()
        request = f"GET {target} HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: {self.auth}\r\n\r\n"
        await self.stream.send_all(request.encode())
        while b"\r\n\r\n" not in self.buf:
            self.buf += await self.stream.receive_some(65536)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split()[1])
        self.headers = head.decode().lower()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stream.aclose()

    async def events(self, want: int) -> list[tuple[str, dict[str, Any]]]:
        """The next ``want`` events (heartbeats skipped). The body is chunked; chunk-size
        lines are skipped since they never start with ``event:`` or ``data:``."""
        out: list[tuple[str, dict[str, Any]]] = []
        event = ""
        while len(out) < want:
            while b"\n" not in self.buf:
                self.buf += await self.stream.receive_some(65536)
            line, self.buf = self.buf.split(b"\n", 1)
            text = line.decode().rstrip("\r")
            if text.startswith("event: "):
                event = text[7:]
            elif text.startswith("data: "):
                out.append((event, json.loads(text[6:])))
        return out


async def test_events_show_a_submitted_warning_only_to_who_may_see_it(tmp_path: Path) -> None:
    async with served(tmp_path) as (_app, c):
        listing = (await c["p01"].get("/api/v1/warnings")).json()
        assert listing["warnings"] == [] and listing["rate"] == 1.0
        got: dict[str, list[tuple[str, dict[str, Any]]]] = {}

        async def watch(who: str, want: int, task_status: Any) -> None:
            url = f"/api/v1/events?since={listing['version']}"
            async with EventStream(c[who], url) as r:
                assert r.status == 200 and "content-type: text/event-stream" in r.headers
                task_status.started()
                got[who] = await r.events(want)

        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                await n.start(watch, "p01", 2)
                await n.start(watch, "p03", 2)
                await n.start(watch, "chief02", 2)
                r = await c["centre"].post(
                    "/api/v1/warnings", content=warning_bytes("w-1", resident=0)
                )
                assert r.status_code == 202
                r = await c["centre"].post(
                    "/api/v1/warnings", content=warning_bytes("w-2", resident=1)
                )
                assert r.status_code == 202
        # Resident 0 lives in P01's grid 01-11, resident 1 in P03's 02-11.
        hello, changed = got["p01"]
        assert hello[0] == "hello" and changed[0] == "changed"
        assert [w["id"] for w in changed[1]["warnings"]] == ["w-1"]
        row = changed[1]["warnings"][0]
        assert row["next_deadline"] > changed[1]["now"] and row["timeline"] is None
        assert [w["id"] for w in got["p03"][1][1]["warnings"]] == ["w-2"]
        assert [w["id"] for w in got["chief02"][1][1]["warnings"]] == ["w-2"]
        assert "13812345678" not in json.dumps(got)


async def test_events_after_an_ack_carry_the_new_state(tmp_path: Path) -> None:
    async with served(tmp_path) as (_app, c):
        await c["centre"].post("/api/v1/warnings", content=warning_bytes("w-1", resident=0))
        listing = (await c["p01"].get("/api/v1/warnings")).json()
        assert [w["id"] for w in listing["warnings"]] == ["w-1"]
        with trio.fail_after(10):
            async with EventStream(c["p01"], f"/api/v1/events?since={listing['version']}") as r:
                ack = {"type": "ack"}
                posted = await c["p01"].post("/api/v1/warnings/w-1/feedback", json=ack)
                assert posted.status_code == 202, posted.text
                events = await r.events(2)
        row = events[1][1]["warnings"][0]
        assert row["acked_by"] == "P01" and row["officer_track"]["status"] == "done"
        bad = await c["p01"].get("/api/v1/events?since=x")
        assert bad.status_code == 422 and bad.json()["field"] == "since"


async def test_a_watcher_too_far_behind_is_told_to_reload(tmp_path: Path) -> None:
    async with served(tmp_path) as (app, c):
        app.engine.feed._turns.clear()  # as if the log had moved on past version 0
        app.engine.feed.version = 10
        with trio.fail_after(10):
            async with EventStream(c["centre"], "/api/v1/events?since=0") as r:
                await c["centre"].post("/api/v1/warnings", content=warning_bytes("w-1", 0))
                events = await r.events(2)
        assert events[1][0] == "reset"


async def test_audience_preview_masks_and_scopes(tmp_path: Path) -> None:
    async with served(tmp_path) as (_app, c):
        centre = (await c["centre"].get("/api/v1/audiences/preview?expr=elderly")).json()
        assert centre["count"] == 5 and len(centre["residents"]) == 5
        assert all(
            r["phone"].endswith("5678") and r["phone"] != "13812345678" for r in centre["residents"]
        )
        assert "张三丰" not in json.dumps(centre, ensure_ascii=False)
        p01 = (await c["p01"].get("/api/v1/audiences/preview?expr=elderly")).json()
        assert p01["count"] == 2 and {r["grid"] for r in p01["residents"]} == {"01-11"}
        chief = (await c["chief02"].get("/api/v1/audiences/preview?expr=elderly&limit=1")).json()
        assert chief["count"] == 2 and len(chief["residents"]) == 1
        assert chief["residents"][0]["grid"] == "02-11"
        r = await c["admin"].get("/api/v1/audiences/preview?expr=elderly")
        assert r.status_code == 403
        assert (await c["admin"].get("/api/v1/audiences/count?expr=elderly")).json()["count"] == 5


async def test_audience_errors_carry_the_position_in_the_callers_text(tmp_path: Path) -> None:
    async with served(tmp_path) as (_app, c):
        for who in ("centre", "chief01", "p01"):
            r = await c[who].get("/api/v1/audiences/count", params={"expr": "elderly & eldrly"})
            body = r.json()
            assert r.status_code == 422 and body["field"] == "expr"
            assert body["position"] == 10, (who, body)
            assert "did you mean elderly" in body["expected"]
        r = await c["centre"].get("/api/v1/audiences/preview", params={"expr": "elderly &"})
        assert r.status_code == 422 and r.json()["position"] == 9


async def test_me_and_campaign_listing(tmp_path: Path) -> None:
    async with served(tmp_path) as (_app, c):
        me = (await c["chief02"].get("/api/v1/me")).json()
        assert (me["role"], me["station"]) == ("chief", "02")
        camp = {"id": "c-1", "title": "t", "text": "x", "audience": "elderly", "issuer": "county"}
        camp["priority"] = "routine"
        assert (await c["admin"].post("/api/v1/campaigns", json=camp)).status_code == 202
        listed = (await c["admin"].get("/api/v1/campaigns")).json()["campaigns"]
        assert [x["campaign_id"] for x in listed] == ["c-1"]
        assert (await c["p01"].get("/api/v1/campaigns")).status_code == 403
        grids = (await c["chief01"].get("/api/v1/stats")).json()["grids"]
        assert sorted(g["key"] for g in grids) == ["01-11", "01-12", "01-21"]


@given(st.lists(st.lists(st.sampled_from("abcdefg"), max_size=4), max_size=30), st.data())
def test_state_feed_gives_exactly_what_changed_since(turns: list[list[str]], data: Any) -> None:
    keep = 8
    feed = StateFeed(keep=keep)
    published: list[tuple[int, set[str]]] = []
    for ids in turns:
        for i in ids:
            feed.touch(i)
        feed.end_turn()
        if ids:
            published.append((feed.version, set(ids)))
    since = data.draw(st.integers(0, feed.version))
    version, ids = feed.since(since)
    assert version == feed.version == len(published)
    # The newest turns whose distinct ids add up to at most ``keep`` (always the last one).
    kept, total = [], 0
    for v, s in reversed(published):
        if kept and total + len(s) > keep:
            break
        kept.insert(0, (v, s))
        total += len(s)
    if since < version and kept[0][0] > since + 1:
        assert ids is None
    else:
        assert ids is not None and len(ids) == len(set(ids))
        assert set(ids) == set().union(*(s for v, s in published if v > since))


async def test_the_new_routes_need_a_token_and_the_right_role(tmp_path: Path) -> None:
    async with served(tmp_path) as (_app, c):
        anonymous = httpx.AsyncClient(base_url=str(c["centre"].base_url), timeout=5)
        async with anonymous:
            for path in (
                "/api/v1/me",
                "/api/v1/events",
                "/api/v1/audiences/preview?expr=elderly",
                "/api/v1/campaigns",
            ):
                r = await anonymous.get(path)
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        allowed = {
            "/api/v1/campaigns": {"centre", "admin"},
            "/api/v1/audiences/preview?expr=elderly": {
                "centre",
                "chief01",
                "chief02",
                "p01",
                "p03",
            },
            "/api/v1/me": set(ROLES),
        }
        for path, who in allowed.items():
            for role in ROLES:
                r = await c[role].get(path)
                assert (r.status_code == 200) == (role in who), (path, role, r.status_code)
                assert r.status_code in (200, 403)


async def test_the_console_is_served_with_its_security_headers(tmp_path: Path) -> None:
    async with served(tmp_path) as (_app, c):
        anonymous = httpx.AsyncClient(base_url=str(c["centre"].base_url), timeout=5)
        async with anonymous:
            home = await anonymous.get("/")
            assert home.status_code == 307 and home.headers["location"] == "/console/"
            page = await anonymous.get("/console/")
            assert page.status_code == 200 and '<script src="console.js">' in page.text
            csp = page.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-eval" not in csp
            script = await anonymous.get("/console/console.js")
            assert script.status_code == 200 and "textContent" in script.text
            # No page or script puts server data into the page as HTML.
            assert "innerHTML" not in script.text and "insertAdjacentHTML" not in script.text


def test_the_openapi_document_lists_every_route() -> None:
    from starlette.routing import Route

    from engine.web.api import api_routes, openapi

    class _Nothing:
        registry = None

    doc = openapi()["paths"]
    routes = api_routes(_Nothing(), None, None)  # type: ignore[arg-type]
    for route in routes:
        assert isinstance(route, Route)
        if route.path.endswith("openapi.json"):
            continue
        assert route.path in doc, route.path
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in doc[route.path], (route.path, method)
