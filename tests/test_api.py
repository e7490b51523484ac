"""The HTTP API against a running engine, role by role: each role tries every endpoint,
including warnings and residents of another jurisdiction. In-process (httpx's ASGI transport
on trio), with a real engine, token store and audit log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from engine import AppConfig, open_app
from engine.access.audit import AuditLog
from engine.access.tokens import TokenStore
from engine.testing.messages import warning_bytes
from engine.transport import open_memory_intake, open_memory_outbox
from engine.web.server import web_app
from tests.small_county import make_registry

GRID_OFFICER = {"01-11": "P01", "01-12": "P01", "01-21": "P02", "02-11": "P03"}


def county() -> Any:
    reg = make_registry()
    for i, grid in enumerate(["01-11", "02-11", "01-21", "01-11", "02-11"]):
        reg.add_resident(
            f"X{i}",
            name="张三丰",
            phone="13812345678",
            address="x",
            grid=grid,
            officer=GRID_OFFICER[grid],
            tags=["elderly"],
        )
    return reg


warning = warning_bytes


@asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[tuple[Any, dict[str, httpx.AsyncClient], Path]]:
    reg = county()
    store = TokenStore.load(tmp_path / "tokens.json")
    tokens = {
        "centre": store.create("centre", None),
        "admin": store.create("admin", None),
        "chief01": store.create("chief", "01"),
        "chief02": store.create("chief", "02"),
        "p01": store.create("officer", "P01"),
        "p03": store.create("officer", "P03"),
    }
    audit = AuditLog(tmp_path / "audit.jsonl")
    _send, intake = open_memory_intake()
    sink, _out = open_memory_outbox(capacity=10_000)
    stop = trio.Event()
    config = AppConfig(registry=reg, journal=tmp_path / "j")
    async with open_app(config) as app, trio.open_nursery() as n:
        await n.start(
            lambda task_status: app.serve(
                intake, sink, stop=stop, handle_signals=False, task_status=task_status
            )
        )
        asgi = web_app(app, lambda: True, store, audit)
        transport = httpx.ASGITransport(app=asgi)
        clients = {
            who: httpx.AsyncClient(
                transport=transport,
                base_url="http://engine",
                headers={"authorization": f"Bearer {t}"},
                timeout=5,
            )
            for who, t in tokens.items()
        }
        clients["nobody"] = httpx.AsyncClient(transport=transport, base_url="http://engine")
        try:
            yield app, clients, tmp_path / "audit.jsonl"
        finally:
            for c in clients.values():
                await c.aclose()
            stop.set()
    audit.close()


async def test_every_role_against_every_endpoint(tmp_path: Path) -> None:
    async with running(tmp_path) as (app, c, audit_path):
        # Without a token: 401 everywhere.
        for method, url in [
            ("GET", "/api/v1/warnings"),
            ("POST", "/api/v1/warnings"),
            ("GET", "/api/v1/stats"),
            ("GET", "/api/v1/audiences/count?expr=elderly"),
        ]:
            r = await c["nobody"].request(method, url)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        # Only the centre submits; bad input names the field.
        for who in ("admin", "chief01", "p01"):
            assert (
                await c[who].post("/api/v1/warnings", content=warning("w-x", 0))
            ).status_code == 403
        bad = await c["centre"].post("/api/v1/warnings", content=b'{"id": "w-bad", "kind": 3}')
        assert bad.status_code == 422 and bad.json()["field"] == "kind"
        a = await c["centre"].post("/api/v1/warnings", content=warning("w-a", 0))  # grid 01-11
        b = await c["centre"].post("/api/v1/warnings", content=warning("w-b", 1))  # grid 02-11
        assert (a.status_code, b.status_code) == (202, 202)
        with trio.fail_after(5):
            while not (app.engine.status("w-a") and app.engine.status("w-a").notified):
                await trio.sleep(0.01)

        async def ids(who: str) -> set[str]:
            r = await c[who].get("/api/v1/warnings?status=all")
            assert r.status_code == 200
            return {w["id"] for w in r.json()["warnings"]}

        assert await ids("centre") == {"w-a", "w-b"}
        assert await ids("chief01") == {"w-a"} and await ids("chief02") == {"w-b"}
        assert await ids("p01") == {"w-a"} and await ids("p03") == {"w-b"}
        assert await ids("admin") == set()
        # Someone else's warning: 404, exactly as a warning that does not exist.
        for who, wid in [("p01", "w-b"), ("p03", "w-a"), ("chief02", "w-a"), ("admin", "w-a")]:
            r = await c[who].get(f"/api/v1/warnings/{wid}")
            assert r.status_code == 404 and r.json() == {"error": "no such warning"}
        assert (await c["p01"].get("/api/v1/warnings/nope")).json() == {"error": "no such warning"}
        mine = await c["p01"].get("/api/v1/warnings/w-a")
        assert mine.status_code == 200 and mine.json()["timeline"]
        # The officer asked to act on it sees whom to call; the chief and the centre see
        # the resident masked.
        assert mine.json()["resident"] == {"name": "张三丰", "phone": "13812345678"}
        assert mine.json()["may"] == ["ack", "call", "read", "visit", "outcome"]
        for who in ("chief01", "centre"):
            theirs = await c[who].get("/api/v1/warnings/w-a")
            assert "13812345678" not in theirs.text and "张三丰" not in theirs.text
            assert theirs.json()["resident"]["phone"].endswith("5678")
        # Acting: only on what one was asked to act on, and only as oneself.
        assert (
            await c["p03"].post("/api/v1/warnings/w-a/feedback", json={"type": "ack"})
        ).status_code == 404
        assert (
            await c["admin"].post("/api/v1/warnings/w-a/feedback", json={"type": "ack"})
        ).status_code == 404
        forged = await c["p01"].post(
            "/api/v1/warnings/w-a/feedback", json={"type": "ack", "officer": "P02"}
        )
        assert forged.status_code == 403 and forged.json()["field"] == "officer"
        odd = await c["p01"].post("/api/v1/warnings/w-a/feedback", json={"type": "wave"})
        assert odd.status_code == 422 and odd.json()["field"] == "type"
        ok = await c["p01"].post("/api/v1/warnings/w-a/feedback", json={"type": "ack"})
        assert ok.status_code == 202
        assert app.engine.status("w-a").acked_by == "P01"
        # Audiences: counted within the caller's jurisdiction; errors say where and suggest.
        counts = {}
        for who in ("centre", "chief01", "chief02", "p01", "p03", "admin"):
            r = await c[who].get("/api/v1/audiences/count", params={"expr": "elderly"})
            assert r.status_code == 200, r.text
            counts[who] = r.json()["count"]
        assert counts == {"centre": 5, "admin": 5, "chief01": 3, "chief02": 2, "p01": 2, "p03": 2}
        typo = await c["centre"].get("/api/v1/audiences/count", params={"expr": "elderyl"})
        assert typo.status_code == 422 and "elderly" in typo.json()["expected"]
        # Statistics: county, station or one's own row.
        assert "county" in (await c["admin"].get("/api/v1/stats")).json()
        station = (await c["chief02"].get("/api/v1/stats")).json()
        assert [s["key"] for s in station["stations"]] == ["02"]
        assert {o["station"] for o in station["officers"]} == {"02"}
        own = (await c["p03"].get("/api/v1/stats")).json()
        assert [o["key"] for o in own["officers"]] == ["P03"]
        doc = (await c["nobody"].get("/api/v1/openapi.json")).json()
        assert "/api/v1/warnings/{warning_id}/feedback" in doc["paths"]
    rows = AuditLog.read(audit_path)
    assert ("warning.submit", "warning:w-a", "ok") in {
        (r.action, r.target, r.outcome) for r in rows
    }
    assert any(r.action == "warning.submit" and r.outcome == "forbidden" for r in rows)
    assert any(
        r.action == "feedback.ack" and r.subject == "P01" and r.outcome == "ok" for r in rows
    )
    assert all("13812345678" not in r.target for r in rows)


async def test_campaigns_by_role(tmp_path: Path) -> None:
    base = {"title": "t", "text": "x", "audience": "elderly", "issuer": "county"}
    routine = json.dumps({**base, "id": "c-r", "priority": "routine"}).encode()
    async with running(tmp_path) as (app, c, audit_path):
        for who in ("p01", "chief01", "nobody"):
            r = await c[who].post("/api/v1/campaigns", content=routine)
            assert r.status_code in (401, 403)
        made = await c["admin"].post("/api/v1/campaigns", content=routine)
        assert made.status_code == 202, made.text
        assert made.json()["campaign_id"] == "c-r"
        again = await c["admin"].post("/api/v1/campaigns", content=routine)
        assert again.status_code == 409 and again.json()["field"] == "id"
        typo = json.dumps({**base, "id": "c-t", "priority": "routine", "audience": "elderyl"})
        bad = await c["admin"].post("/api/v1/campaigns", content=typo.encode())
        assert bad.status_code == 422 and "elderly" in bad.json()["expected"]
        # Officers confirm their own task only.
        other = await c["p03"].post("/api/v1/campaigns/c-r/tasks/P01/confirm")
        assert other.status_code == 403
        own = await c["p01"].post("/api/v1/campaigns/c-r/tasks/P01/confirm")
        assert own.status_code == 200 and own.json()["confirmed"]
        assert (await c["p01"].get("/api/v1/campaigns/c-r")).status_code == 403
        assert (await c["admin"].get("/api/v1/campaigns/c-nope")).status_code == 404
        assert (await c["p01"].post("/api/v1/campaigns/c-r/cancel")).status_code == 403
        cancelled = await c["centre"].post("/api/v1/campaigns/c-r/cancel")
        assert cancelled.status_code == 200
        progress = (await c["admin"].get("/api/v1/campaigns/c-r")).json()
        assert progress["state"] in ("cancelled", "done")
        assert app.engine.campaign_records.used("c-r")
    actions = {(r.action, r.outcome) for r in AuditLog.read(audit_path)}
    assert {("campaign.issue", "ok"), ("campaign.issue", "forbidden")} <= actions
    assert {("campaign.confirm", "forbidden"), ("campaign.cancel", "ok")} <= actions
