"""Any member answers the API for the whole group: the board in Redis, its fencing, and a
member's desk over it, against a real redis-server with two members in one process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from engine.access.audit import AuditLog
from engine.access.tokens import TokenStore
from engine.group import Keys, partition_of
from engine.group.board import BoardMirror, BoardPublisher, board_keys, decode_entry
from engine.group.desk import GroupDesk, merge_summaries
from engine.group.member import GroupMember
from engine.stats import Stats
from engine.testing import RedisServer
from engine.web.server import desk_app, serve_http
from tests.test_group import RULES, P, binary, config, wait_for
from tests.test_live_api import EventStream
from tests.test_service import elderly_county
from tests.transport_support import warning_json


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


class _FakeApp:
    """Just what BoardPublisher.publish reads of an app: ``engine.status``."""

    def __init__(self, states: dict[str, Any]) -> None:
        self.engine = self
        self._states = states

    def status(self, wid: str) -> Any:
        return self._states.get(wid)


async def test_a_stale_owner_cannot_overwrite_its_successors_view(server: RedisServer) -> None:
    client = binary(server)
    keys = Keys()
    reg = elderly_county(2)
    # Two real states of one warning: the owner publishes the acked one; a stalled old owner
    # (a lower token) then tries to publish the older, unacked state.
    member = GroupMember(config("m"), binary(server), reg, RULES)
    stop = trio.Event()
    async with trio.open_nursery() as n:
        await n.start(member.run, stop)
        client.xadd("wd:intake", {"raw": warning_json(0)})
        board = board_keys(keys)[0]
        await wait_for(lambda: client.hexists(board, "w-0"), "the warning on the board")
        client.xadd(
            "wd:feedback",
            {"raw": json.dumps({"type": "ack", "warning_id": "w-0", "officer": "P01"}).encode()},
        )
        await wait_for(
            lambda: (
                (v := client.hget(board, "w-0")) is not None and decode_entry(v).acked_by == "P01"
            ),
            "the acked state on the board",
        )
        stop.set()
    acked = decode_entry(client.hget(board, "w-0"))  # type: ignore[arg-type]
    old = msgspec.structs.replace(acked, acked_by=None)
    current_token = int(client.hget(board, "w-0")[:20])  # type: ignore[index]
    stale = BoardPublisher(client, keys, current_token - 1)
    await stale.publish(_FakeApp({"w-0": old}), ["w-0"])  # type: ignore[arg-type]
    assert decode_entry(client.hget(board, "w-0")).acked_by == "P01"  # type: ignore[arg-type]
    assert stale.published == 0
    # Nor delete it.
    await stale.publish(_FakeApp({}), ["w-0"])  # type: ignore[arg-type]
    assert client.hexists(board, "w-0")
    newer = BoardPublisher(client, keys, current_token + 1)
    await newer.publish(_FakeApp({"w-0": old}), ["w-0"])  # type: ignore[arg-type]
    assert decode_entry(client.hget(board, "w-0")).acked_by is None  # type: ignore[arg-type]


async def test_any_member_answers_for_the_whole_group(server: RedisServer, tmp_path: Path) -> None:
    reg = elderly_county(24)
    keys = Keys()
    store = TokenStore.load(tmp_path / "tokens.json")
    centre = store.create("centre", None)
    officer = store.create("officer", "P01")
    admin = store.create("admin", None)
    audit = AuditLog(tmp_path / "audit.jsonl")
    stops = [trio.Event(), trio.Event()]
    members = [GroupMember(config(f"m{i}"), binary(server), reg, RULES) for i in range(2)]
    # Member 0 answers HTTP; it owns only half the partitions.
    mirror = BoardMirror(binary(server), keys)
    desk = GroupDesk(mirror, binary(server), keys, reg, RULES)
    http_stop = trio.Event()
    async with trio.open_nursery() as n:
        for m, stop in zip(members, stops, strict=True):
            await n.start(m.run, stop)
        await wait_for(lambda: sorted(len(m.owned) for m in members) == [P // 2, P // 2], "spread")
        await n.start(mirror.run)
        asgi = desk_app(desk, mirror.ready.is_set, store, audit)
        binds = await n.start(serve_http, asgi, "127.0.0.1:0", http_stop)
        base = binds[0].replace("0.0.0.0", "127.0.0.1")

        def client_for(token: str) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=5
            )

        async with client_for(centre) as c, client_for(officer) as o, client_for(admin) as a:
            listing = (await c.get("/api/v1/warnings")).json()
            assert listing["warnings"] == []
            with trio.fail_after(20):
                async with EventStream(c, f"/api/v1/events?since={listing['version']}") as events:
                    for i in range(12):
                        r = await c.post("/api/v1/warnings", content=warning_json(i))
                        assert r.status_code == 202, r.text
                    seen: set[str] = set()
                    while len(seen) < 12:
                        for name, data in await events.events(1):
                            if name == "changed":
                                seen |= {w["id"] for w in data["warnings"]}
            ids = {f"w-{i}" for i in range(12)}
            assert seen == ids
            owners = {partition_of(w, P) in members[1].owned for w in ids}
            assert owners == {True, False}, "some warnings are owned by the member not asked"
            # A bad warning answers 422 here, before it reaches any stream.
            bad = await c.post("/api/v1/warnings", content=b'{"id": "x"}')
            assert bad.status_code == 422 and bad.json()["field"]
            # The officer acks, through member 0, a warning that member 1 owns.
            theirs = next(w for w in sorted(ids) if partition_of(w, P) in members[1].owned)
            r = await o.post(f"/api/v1/warnings/{theirs}/feedback", json={"type": "ack"})
            assert r.status_code == 202, r.text

            async def acked() -> bool:
                view = (await o.get(f"/api/v1/warnings/{theirs}")).json()
                return view["acked_by"] == "P01" and bool(view["timeline"])

            with trio.fail_after(20):
                while not await acked():
                    await trio.sleep(0.1)
            # Campaigns: issued through member 0, progress from the owner, duplicates refused.
            camp = {"id": "c-g", "title": "t", "text": "x", "audience": "elderly"}
            camp |= {"issuer": "county", "priority": "routine"}
            r = await a.post("/api/v1/campaigns", json=camp)
            assert r.status_code == 202 and r.json()["state"] == "queued"
            with trio.fail_after(20):
                while (await a.get("/api/v1/campaigns/c-g")).status_code != 200:
                    await trio.sleep(0.2)
            progress = (await a.get("/api/v1/campaigns/c-g")).json()
            assert progress["resolved"] == 24
            assert (await a.post("/api/v1/campaigns", json=camp)).status_code == 409
            # Statistics of both members, merged.
            with trio.fail_after(20):
                while (await c.get("/api/v1/stats")).json()["warnings"] < 12:
                    await trio.sleep(0.5)
        http_stop.set()
        for s in stops:
            s.set()
        n.cancel_scope.cancel()
    audit.close()


def test_merged_statistics_add_counts_and_bound_percentiles() -> None:
    reg = elderly_county(4)
    one = Stats.from_registry(reg, start=0.0).summary(until=7200.0)
    s = msgspec.to_builtins(one)
    s["warnings"] = 3
    s["county"]["time_to_ack"] = {"n": 3, "p50": 10.0, "p90": 20.0, "p99": 30.0}
    t = msgspec.to_builtins(one)
    t["warnings"] = 4
    t["county"]["time_to_ack"] = {"n": 1, "p50": 50.0, "p90": 50.0, "p99": 50.0}
    a, b = msgspec.convert(s, type(one)), msgspec.convert(t, type(one))
    merged = merge_summaries([a, b])
    assert merged is not None
    assert merged.warnings == 7
    assert merged.county.time_to_ack.n == 4 and merged.county.time_to_ack.p50 == 50.0
    assert merged.county.contacts == one.county.contacts  # the same registry: not doubled
    assert [g.residents for g in merged.grids] == [g.residents for g in one.grids]
    assert merge_summaries([]) is None
