"""A group of engines in one process, against a real redis-server: routing, an even spread,
clean hand-over, takeover, fencing of a stalled member, and ``group status``.

Members run on the real clock with short leases (1.2 s), so each test takes a few seconds;
every wait polls with a deadline. The chaos test (``test_group_chaos.py``) does the same with
real processes, SIGKILL and SIGSTOP.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import msgspec
import pytest
import redis
import trio
from hypothesis import given
from hypothesis import strategies as st

from engine.group import Keys, partition_of
from engine.group.client import connect
from engine.group.inspect import partition_state, read_status
from engine.group.member import GroupConfig, GroupMember
from engine.group.router import route
from engine.rules.escalation import EscalationRules, load_escalation
from engine.testing import RedisServer
from tests.test_service import elderly_county
from tests.transport_support import warning_json

P = 8
TTL_MS = 1200
RULES = load_escalation()


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


def binary(server: RedisServer) -> redis.Redis:
    return connect(f"redis://127.0.0.1:{server.port}/0")


def config(member: str, **kw: object) -> GroupConfig:
    options: dict[str, object] = {"partitions": P, "lease_ttl_ms": TTL_MS, "claim_idle_s": 2.0}
    options.update(kw)
    return GroupConfig(member=member, **options)  # type: ignore[arg-type]


# --- routing (pure) -------------------------------------------------------------------------


@given(st.text(min_size=1, max_size=40), st.integers(1, 64))
def test_a_message_routes_to_the_partition_of_its_key(key: str, partitions: int) -> None:
    want = partition_of(key, partitions)
    assert route("intake", json.dumps({"id": key, "x": 1}).encode(), partitions) == want
    assert route("feedback", json.dumps({"warning_id": key}).encode(), partitions) == want
    assert route("campaigns", json.dumps({"id": key}).encode(), partitions) == want
    control = json.dumps({"campaign_id": key, "id": "other"}).encode()
    assert route("campaigns", control, partitions) == want


@pytest.mark.parametrize(
    ("kind", "raw", "field"),
    [
        ("intake", b"{not json", "(message)"),
        ("intake", b"[1, 2]", "(message)"),
        ("intake", b'{"warning_id": "w"}', "id"),
        ("intake", b'{"id": 7}', "id: expected a non-empty string"),
        ("intake", b'{"id": ""}', "id: expected a non-empty string"),
        ("feedback", b'{"id": "w"}', "warning_id"),
        ("campaigns", b"{}", "campaign_id or id"),
    ],
)
def test_an_unroutable_message_gets_a_reason_naming_the_field(
    kind: str, raw: bytes, field: str
) -> None:
    reason = route(kind, raw, 16)  # type: ignore[arg-type]
    assert isinstance(reason, str)
    assert reason.startswith(field)


# --- members against a real server ----------------------------------------------------------


async def wait_for(check: object, what: str, timeout: float = 20.0) -> None:
    """Poll ``check()`` (sync, may block briefly) until true, or fail naming ``what``."""
    with trio.move_on_after(timeout):
        while True:
            if await trio.to_thread.run_sync(check):  # type: ignore[arg-type]
                return
            await trio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def outbox_keys(client: redis.Redis) -> list[str]:
    return [f[b"key"].decode() for _, f in client.xrange("wd:outbox", "-", "+")]  # type: ignore[union-attr]


def first_notices(client: redis.Redis) -> set[str]:
    """Warning ids whose first officer notice is in the outbox."""
    return {k.split("/")[0] for k in outbox_keys(client) if k.endswith("/o0/1")}


async def test_two_members_split_the_partitions_and_route_every_warning(
    server: RedisServer,
) -> None:
    reg = elderly_county(40)
    client = binary(server)
    stops = [trio.Event(), trio.Event()]
    members = [GroupMember(config(f"m{i}"), binary(server), reg, RULES) for i in range(2)]
    async with trio.open_nursery() as n:
        for m, stop in zip(members, stops, strict=True):
            await n.start(m.run, stop)
        await wait_for(
            lambda: sorted(len(m.owned) for m in members) == [P // 2, P // 2], "an even spread"
        )
        for i in range(40):
            client.xadd("wd:intake", {"raw": warning_json(i)})
        ids = {f"w-{i}" for i in range(40)}
        await wait_for(lambda: first_notices(client) >= ids, "every first notice")
        # Feedback is routed to the owner of its warning's partition, whoever that is.
        for i in range(0, 40, 2):
            ack = {"type": "ack", "warning_id": f"w-{i}", "officer": "P01"}
            client.xadd("wd:feedback", {"raw": json.dumps(ack).encode()})

        def acked() -> bool:
            states = {}
            for p in range(P):
                states.update(partition_state(client, Keys(), p, RULES).states)
            return all(states[f"w-{i}"].acked_by == "P01" for i in range(0, 40, 2))

        await wait_for(acked, "every ack applied by the warning's owner")
        status = await read_status(client, Keys(), P)
        owned = status.owned_by()
        assert sorted(owned) == ["m0", "m1"]
        assert sorted(p for ps in owned.values() for p in ps) == list(range(P))
        assert status.routers["intake"].pending == 0
        for s in stops:
            s.set()
    # Both left cleanly: every lease released, every partition's pending list empty.
    status = await read_status(client, Keys(), P)
    assert all(p.lease.owner is None for p in status.partitions)
    assert all(p.intake.pending == 0 and p.feedback.pending == 0 for p in status.partitions)
    for p in range(P):
        for wid in partition_state(client, Keys(), p, RULES).states:
            assert partition_of(wid, P) == p


async def test_a_member_leaving_hands_its_partitions_over_and_deadlines_still_fire(
    server: RedisServer,
) -> None:
    reg = elderly_county(10)
    client = binary(server)
    stop_a, stop_b = trio.Event(), trio.Event()
    a = GroupMember(config("a"), binary(server), reg, RULES)
    b = GroupMember(config("b"), binary(server), reg, RULES)
    async with trio.open_nursery() as n:
        await n.start(a.run, stop_a)
        await wait_for(lambda: len(a.owned) == P, "a owns everything alone")
        for i in range(10):
            client.xadd("wd:intake", {"raw": warning_json(i)})
        await wait_for(lambda: len(first_notices(client)) == 10, "first notices")
        await n.start(b.run, stop_b)
        await wait_for(lambda: len(a.owned) == len(b.owned) == P // 2, "b takes its share")
        stop_a.set()
        await wait_for(lambda: len(b.owned) == P, "b takes a's partitions")
        for p in range(P):
            state = partition_state(client, Keys(), p, RULES)
            assert all(partition_of(w, P) == p for w in state.states)
        total = sum(len(partition_state(client, Keys(), p, RULES).states) for p in range(P))
        assert total == 10
        stop_b.set()


async def test_a_member_cut_off_from_redis_stops_its_partitions_before_the_lease_lapses(
    server: RedisServer,
) -> None:
    """A member whose rounds fail (cut off from Redis, as a network partition would) stops
    each partition by the watchdog before its lease can lapse; the other member takes every
    partition over with a higher token and serves every warning."""
    reg = elderly_county(10)
    client = binary(server)
    stop_a, stop_b = trio.Event(), trio.Event()
    a = GroupMember(config("a"), binary(server), reg, RULES)
    b = GroupMember(config("b"), binary(server), reg, RULES)
    async with trio.open_nursery() as n:
        await n.start(a.run, stop_a)
        await wait_for(lambda: len(a.owned) == P, "a owns everything")
        tokens = {o.partition: o.token for o in a.owned_info()}

        async def cut_off() -> None:
            raise redis.ConnectionError("cut off (test)")

        a._round = cut_off  # type: ignore[method-assign]
        await wait_for(lambda: not a.owned, "the watchdog stops a's partitions", TTL_MS / 1000 * 2)
        await n.start(b.run, stop_b)
        await wait_for(lambda: len(b.owned) == P, "b takes every partition over")
        for o in b.owned_info():
            assert o.token > tokens[o.partition]
        for i in range(10):
            client.xadd("wd:intake", {"raw": warning_json(i)})
        await wait_for(lambda: len(first_notices(client)) == 10, "b serves every warning")
        assert a.lost == P
        stop_a.set()
        stop_b.set()


def test_campaign_control_is_decoded_strictly() -> None:
    from engine.campaigns.campaign import (
        CancelCampaign,
        ConfirmTask,
        InvalidCampaign,
        decode_control,
        is_control,
    )

    confirm = b'{"control": "confirm", "campaign_id": "c1", "task_id": "c1/P01", "officer": "P01"}'
    assert is_control(confirm)
    assert decode_control(confirm) == ConfirmTask(campaign_id="c1", task_id="c1/P01", officer="P01")
    assert decode_control(b'{"control": "cancel", "campaign_id": "c1"}') == CancelCampaign(
        campaign_id="c1"
    )
    with pytest.raises(InvalidCampaign, match="control"):
        decode_control(b'{"control": "pause", "campaign_id": "c1"}')
    with pytest.raises(InvalidCampaign, match="officer"):
        decode_control(b'{"control": "confirm", "campaign_id": "c1", "task_id": "c1/P01"}')


async def test_campaigns_and_their_control_reach_the_campaigns_owner(server: RedisServer) -> None:
    """A routine campaign waits for its officer's click; the click (and a cancel) sent to the
    one campaigns stream reach whichever member owns the campaign's partition."""
    reg = elderly_county(6)
    client = binary(server)
    stops = [trio.Event(), trio.Event()]
    noon = datetime.now(UTC).replace(hour=4)  # 12:00 UTC+8: outside quiet hours, any day
    members = [
        GroupMember(
            config(f"m{i}"), binary(server), reg, RULES, campaign_wall_clock=lambda _t: noon
        )
        for i in range(2)
    ]
    base = {"title": "t", "text": "x", "audience": "elderly", "issuer": "county"}

    def outbox_actions() -> list[dict[str, object]]:
        return [json.loads(f[b"action"]) for _, f in client.xrange("wd:outbox", "-", "+")]  # type: ignore[union-attr]

    async with trio.open_nursery() as n:
        for m, stop in zip(members, stops, strict=True):
            await n.start(m.run, stop)
        await wait_for(lambda: sorted(len(m.owned) for m in members) == [4, 4], "a spread")
        for cid in ("c-a", "c-b"):
            raw = json.dumps({**base, "id": cid, "priority": "routine"}).encode()
            client.xadd("wd:campaigns", {"raw": raw})

        def prompts() -> set[str]:
            return {
                str(a["campaign_id"])
                for a in outbox_actions()
                if a.get("type") == "campaign_confirm"
            }

        await wait_for(lambda: prompts() == {"c-a", "c-b"}, "both confirm prompts")
        task = next(str(a["task_id"]) for a in outbox_actions() if a.get("campaign_id") == "c-a")
        confirm = {"control": "confirm", "campaign_id": "c-a", "task_id": task, "officer": "P01"}
        client.xadd("wd:campaigns", {"raw": json.dumps(confirm).encode()})
        cancel = {"control": "cancel", "campaign_id": "c-b"}
        client.xadd("wd:campaigns", {"raw": json.dumps(cancel).encode()})

        def sent(cid: str, kind: str) -> bool:
            return any(
                a.get("campaign_id") == cid and a.get("type") == kind for a in outbox_actions()
            )

        await wait_for(lambda: sent("c-a", "campaign_chat"), "c-a sent after the click")
        await wait_for(lambda: sent("c-b", "campaign_closed"), "c-b's prompt withdrawn")
        assert not sent("c-b", "campaign_chat")
        for s in stops:
            s.set()


async def test_a_member_restarted_under_its_name_takes_its_partitions_back_at_once(
    server: RedisServer,
) -> None:
    """Its leases still name it: it takes them back with new tokens in its first round,
    not a lease TTL later (the TTL here is long enough to tell the two apart)."""
    reg = elderly_county(4)
    client = binary(server)
    cfg = config("a", lease_ttl_ms=8000)
    first = GroupMember(cfg, binary(server), reg, RULES)
    with trio.CancelScope() as crash:
        async with trio.open_nursery() as n:
            await n.start(first.run, trio.Event())
            await wait_for(lambda: len(first.owned) == P, "a owns everything")
            tokens = {o.partition: o.token for o in first.owned_info()}
            crash.cancel()  # no hand-back: the leases stay, as after a SIGKILL
    assert all(i.owner == "a" for i in (await read_status(client, Keys(), P)).partitions_leases())
    again = GroupMember(cfg, binary(server), reg, RULES)
    stop = trio.Event()
    async with trio.open_nursery() as n:
        began = trio.current_time()
        await n.start(again.run, stop)
        await wait_for(lambda: len(again.owned) == P, "a takes its partitions back")
        assert trio.current_time() - began < 3.0
        assert all(o.token > tokens[o.partition] for o in again.owned_info())
        stop.set()


async def test_registry_changes_reach_every_member_and_a_bad_one_is_dead_lettered(
    server: RedisServer,
) -> None:
    """Each member holds its own registry: a change on wd:registry reaches both, a member that
    starts later catches up before it takes partitions, and a bad change is dead-lettered with
    its reason while the good ones after it still apply."""
    client = binary(server)
    regs = [elderly_county(2), elderly_county(2), elderly_county(2)]
    before = regs[0].count("elderly")
    added = {
        "type": "resident_added",
        "ext_id": "NEW-1",
        "name": "丙",
        "phone": "13800000001",
        "address": "x",
        "grid": "01-11",
        "officer": "P01",
        "tags": ["elderly"],
    }
    client.xadd("wd:registry", {"raw": json.dumps(added).encode()})
    bad = {"type": "tag_changed", "ext_id": "NOBODY", "tag": "elderly", "on": True}
    client.xadd("wd:registry", {"raw": json.dumps(bad).encode()})
    members = [GroupMember(config(f"m{i}"), binary(server), regs[i], RULES) for i in range(2)]
    stops = [trio.Event(), trio.Event()]
    async with trio.open_nursery() as n:
        for m, stop in zip(members, stops, strict=True):
            await n.start(m.run, stop)  # started: the registry has caught up
        assert [r.count("elderly") for r in regs[:2]] == [before + 1, before + 1]
        cleared = {"type": "tag_changed", "ext_id": "R0", "tag": "elderly", "on": False}
        client.xadd("wd:registry", {"raw": json.dumps(cleared).encode()})
        await wait_for(
            lambda: [r.count("elderly") for r in regs[:2]] == [before, before], "the change"
        )
        late = GroupMember(config("m2"), binary(server), regs[2], RULES)
        stop_late = trio.Event()
        await n.start(late.run, stop_late)
        assert regs[2].count("elderly") == before
        assert regs[2].has_tag(regs[2].lookup("NEW-1"), "elderly")
        for s in (*stops, stop_late):
            s.set()
    dead = [f for _, f in client.xrange("wd:dead", "-", "+")]  # type: ignore[union-attr]
    reasons = [f[b"reason"].decode() for f in dead if f[b"stream"] == b"wd:registry"]
    assert len(reasons) == 3  # each member that saw it says so
    assert all("NOBODY" in r for r in reasons)
    assert all(m.registry_follower.refused == 1 for m in (*members, late))


async def test_a_group_runs_on_a_redis_cluster() -> None:
    """Three masters: every partition's keys share one slot, so the fenced scripts run on the
    partition's node; routing writes across slots; a member leaving hands over cleanly."""
    from engine.testing.topology import ClusterTopology

    reg = elderly_county(12)
    with ClusterTopology() as cluster:
        client = connect(cluster.url())
        nodes = {client.get_node_from_key(Keys().journal(p)).name for p in range(P)}
        assert len(nodes) == 3
        stops = [trio.Event(), trio.Event()]
        members = [
            GroupMember(config(f"m{i}"), connect(cluster.url()), reg, RULES) for i in range(2)
        ]
        async with trio.open_nursery() as n:
            for m, stop in zip(members, stops, strict=True):
                await n.start(m.run, stop)
            await wait_for(lambda: sorted(len(m.owned) for m in members) == [4, 4], "a spread")
            for i in range(12):
                client.xadd("wd:intake", {"raw": warning_json(i)})
            await wait_for(lambda: len(first_notices(client)) == 12, "every first notice")
            stops[0].set()
            await wait_for(lambda: len(members[1].owned) == P, "m1 takes everything")
            for p in range(P):
                for wid in partition_state(client, Keys(), p, RULES).states:
                    assert partition_of(wid, P) == p
            total = sum(len(partition_state(client, Keys(), p, RULES).states) for p in range(P))
            assert total == 12
            status = await read_status(client, Keys(), P)
            assert all(p.lease.owner == "m1" for p in status.partitions)
            stops[1].set()
        client.close()


async def test_sighup_reload_reaches_every_partition_and_a_bad_file_changes_nothing(
    server: RedisServer,
) -> None:
    """What ``serve --group`` does on SIGHUP (``GroupMember.reload``): good rules go into
    every running partition's engine and into partitions taken later; a bad file is refused
    once, counted in every partition engine, and the old rules stay."""
    from engine.rules.loading import RuleError

    reg = elderly_county(20)
    member = GroupMember(config("m"), binary(server), reg, RULES)
    stop = trio.Event()
    async with trio.open_nursery() as n:
        await n.start(member.run, stop)
        await wait_for(
            lambda: (
                len(member.owned) == P and all(o.engine is not None for o in member.owned.values())
            ),
            "every partition running",
        )
        newer = msgspec.structs.replace(RULES, source="<site rules>")
        assert member.reload(lambda: newer) is True
        engines = [o.engine for o in member.owned.values()]
        assert all(e is not None and e.rules.source == "<site rules>" for e in engines)
        assert member.rules is newer  # partitions taken later start with them

        def bad() -> EscalationRules:
            raise RuleError("site/rosters.toml", "rotations[0].officers", "officer keys")

        assert member.reload(bad) is False
        for e in engines:
            assert e is not None and e.rules.source == "<site rules>"
            assert (e.reloads.ok, e.reloads.failed) == (1, 1)
            assert "rotations[0].officers" in e.reloads.last_error
        stop.set()
