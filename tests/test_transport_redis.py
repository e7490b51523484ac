"""Redis Streams transport against a real redis-server (never a mock), with both clients.

Needs Debian's redis-server: without it these tests fail (RedisServer raises), they do not
skip. Real network I/O, so the real clock with short ``fail_after`` bounds, no autojump.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterator

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.testing import RedisServer
from engine.transport import (
    IntakeSource,
    OutboxSink,
    RedisOutbox,
    RedisStreamSource,
    SourceOptions,
    StreamNames,
    decode_action,
    open_redis_transport,
)
from engine.transport.redis_clients import ClientName, StreamClient, open_client
from tests.props import examples
from tests.transport_support import action, consume, garbage, is_garbage, warning_json

pytestmark = pytest.mark.redis

CLIENTS: list[ClientName] = ["coredis", "redis-py"]
_ns = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


def names() -> StreamNames:
    """Fresh stream keys per test (and per hypothesis example): no cross-talk, one server."""
    p = f"t{next(_ns)}"
    return StreamNames(
        intake=f"{p}:intake", feedback=f"{p}:feedback", outbox=f"{p}:outbox", dead=f"{p}:dead"
    )


async def produce(c: StreamClient, stream: str, raws: list[bytes]) -> list[str]:
    return await c.add_many(stream, [{"raw": r} for r in raws], None)


def opts(**kw: object) -> SourceOptions:
    base: dict[str, object] = {"consumer": "c1", "block_s": 0.5, "claim_idle_s": 60.0}
    base.update(kw)
    return SourceOptions(**base)  # type: ignore[arg-type]


def pending(server: RedisServer, stream: str, group: str = "wd-engine") -> int:
    """Entries in the group's pending list, by XPENDING from an independent client (a quick
    sync call: it is a probe, not part of what is tested)."""
    return int(server.client().xpending(stream, group)["pending"])


@pytest.mark.parametrize("client", CLIENTS)
async def test_round_trip_every_stream(server, client):
    n = names()
    async with open_redis_transport(
        server.host, server.port, client=client, names=n, options=opts()
    ) as t:
        assert isinstance(t.intake, IntakeSource) and isinstance(t.outbox, OutboxSink)
        await produce(t.client, n.intake, [warning_json(i) for i in range(5)])
        await produce(t.client, n.feedback, [b'{"type":"read","warning_id":"w-1"}'])
        with trio.fail_after(5):
            assert await consume(t.intake, 5) == [f"w-{i}" for i in range(5)]
            (fb,) = await t.feedback.receive_batch()
        assert (
            fb.raw == b'{"type":"read","warning_id":"w-1"}' and fb.source == f"redis:{n.feedback}"
        )
        await t.feedback.ack([fb.id])
        await t.outbox.send([action(1), action(2)])
        assert pending(server, n.intake) == 0
        assert pending(server, n.feedback) == 0
        await t.client.create_group(n.outbox, "adapter")
        got = await t.client.read_group(n.outbox, "adapter", "a1", ">", 10, None)
        assert [(f[b"key"], decode_action(f[b"action"])) for _, f in got] == [  # type: ignore[index]
            (action(i).key.encode(), action(i)) for i in (1, 2)
        ]


@pytest.mark.parametrize("client", CLIENTS)
async def test_unacked_is_reclaimed_after_restart_acked_is_not(server, client):
    n = names()
    async with open_client(client, server.host, server.port) as c:
        ids = await produce(c, n.intake, [warning_json(i) for i in range(4)])
        first = await RedisStreamSource.open(c, n.intake, n.dead, opts(consumer="c1"))
        with trio.fail_after(5):
            batch = await first.receive_batch()
        assert [d.id for d in batch] == ids and not any(d.redelivered for d in batch)
        await first.ack([ids[0], ids[2]])
        # "Crash": c1 is gone. A new consumer on another host claims what c1 left idle.
        await trio.sleep(0.06)
        second = await RedisStreamSource.open(
            c, n.intake, n.dead, opts(consumer="c2", claim_idle_s=0.05)
        )
        with trio.fail_after(5):
            again = await second.receive_batch()
        assert [d.id for d in again] == [ids[1], ids[3]] and all(d.redelivered for d in again)
        assert second.claimed == 2
        await second.ack([d.id for d in again])
        assert pending(server, n.intake) == 0
        # Nothing else comes: the acked entries are never redelivered.
        with trio.move_on_after(0.2):
            extra = await second.receive_batch()
            raise AssertionError(f"unexpected redelivery {extra}")


@pytest.mark.parametrize("client", CLIENTS)
async def test_same_consumer_restart_gets_own_pending_at_once(server, client):
    n = names()
    async with open_client(client, server.host, server.port) as c:
        ids = await produce(c, n.intake, [warning_json(i) for i in range(3)])
        first = await RedisStreamSource.open(c, n.intake, n.dead, opts())
        with trio.fail_after(5):
            assert len(await first.receive_batch()) == 3
        await first.ack(ids[:1])
        restarted = await RedisStreamSource.open(c, n.intake, n.dead, opts())  # claim_idle 60 s
        with trio.fail_after(1):
            again = await restarted.receive_batch()
        assert [d.id for d in again] == ids[1:]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("next_read_first", [False, True])
async def test_cancelled_blocked_read_loses_nothing(server, client, next_read_first):
    """The TOOLCHAIN hazard: a read abandoned while blocked takes the next entry into the PEL.
    ``next_read_first``: the next read is already blocked when the entry arrives (a stale
    blocked read on the server would be served first and the entry never reach us)."""
    n = names()
    async with open_client(client, server.host, server.port) as c:
        src = await RedisStreamSource.open(c, n.intake, n.dead, opts(block_s=5.0))
        (held_id,) = await produce(c, n.intake, [warning_json(1)])
        with trio.fail_after(2):
            (held,) = await src.receive_batch()  # handed out, not acked (journal is slow)
        assert held.id == held_id
        with trio.move_on_after(0.13) as scope:  # 30 ms into the second 100 ms BLOCK slice
            await src.receive_batch()  # blocked in XREADGROUP BLOCK
        assert scope.cancelled_caught
        got: list[str] = []

        async def next_read() -> None:
            got.extend(d.id for d in await src.receive_batch())

        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:
                if next_read_first:
                    nursery.start_soon(next_read)
                    await trio.sleep(0.03)
                (eid,) = await produce(c, n.intake, [warning_json(7)])
                if not next_read_first:
                    nursery.start_soon(next_read)
        assert got == [eid]  # the new entry, and not the held one a second time
        # ...and after a restart both come back (neither was acked).
        restarted = await RedisStreamSource.open(c, n.intake, n.dead, opts())
        with trio.fail_after(2):
            again = await restarted.receive_batch()
        assert [d.id for d in again] == [held_id, eid] and all(d.redelivered for d in again)


@pytest.mark.parametrize("client", CLIENTS)
async def test_random_cancellation_under_load_loses_and_duplicates_nothing(server, client):
    n = names()
    rng = random.Random(4)
    async with (
        open_client(client, server.host, server.port) as c,
        open_client(client, server.host, server.port) as producer,
    ):
        src = await RedisStreamSource.open(c, n.intake, n.dead, opts(batch_size=7, block_s=0.05))
        sent: list[str] = []
        got: list[str] = []

        async def produce_slowly() -> None:
            for i in range(150):
                sent.extend(await produce(producer, n.intake, [warning_json(i)]))
                if i % 3 == 0:
                    await trio.sleep(0.001)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce_slowly)
                while len(got) < 150:
                    with trio.move_on_after(rng.uniform(0, 0.004)):
                        batch = await src.receive_batch()
                        got.extend(d.id for d in batch)
                        with trio.CancelScope(shield=True):
                            await src.ack([d.id for d in batch])
        assert len(got) == len(set(got)) == 150
        assert set(got) == set(sent)
        assert pending(server, n.intake) == 0


@settings(
    max_examples=examples(15),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(mix=st.lists(st.tuples(st.booleans(), garbage), min_size=1, max_size=10))
async def test_garbage_goes_to_dead_stream_good_ones_in_order(server, mix):
    n = names()
    raws, good, bad = [], [], []
    for i, (is_good, junk) in enumerate(mix):
        if is_good:
            raws.append(warning_json(i))
            good.append(f"w-{i}")
        elif is_garbage(junk):
            raws.append(junk)
            bad.append(junk)
    async with open_redis_transport(
        server.host, server.port, names=n, options=opts(batch_size=3)
    ) as t:
        if not raws:
            return
        ids = await produce(t.client, n.intake, raws)
        with trio.fail_after(5):
            # good ones stop coming after len(good); the garbage after them still has to be read
            assert await consume(t.intake, len(good)) == good
            while server.client().xlen(n.dead) < len(bad):
                assert await consume(t.intake, 0) == []
        await t.client.create_group(n.dead, "ops")
        dead = await t.client.read_group(n.dead, "ops", "o1", ">", 100, None)
        assert [f[b"raw"] for _, f in dead] == bad  # type: ignore[index]
        bad_ids = {i for i, r in zip(ids, raws, strict=True) if r in bad}
        for _, f in dead:
            assert f is not None and f[b"reason"] and f[b"stream"] == n.intake.encode()
            assert f[b"source_id"].decode() in bad_ids
        assert pending(server, n.intake) == 0


@pytest.mark.parametrize("client", CLIENTS)
async def test_entry_without_payload_field_is_dead_lettered_by_transport(server, client):
    n = names()
    async with open_redis_transport(
        server.host, server.port, client=client, names=n, options=opts()
    ) as t:
        (bad,) = await t.client.add_many(n.intake, [{"data": b"{}"}], None)
        await produce(t.client, n.intake, [warning_json(1)])
        with trio.fail_after(5):
            assert await consume(t.intake, 1) == ["w-1"]
        await t.client.create_group(n.dead, "ops")
        ((_, f),) = await t.client.read_group(n.dead, "ops", "o1", ">", 10, None)
        assert f is not None and f[b"source_id"] == bad.encode()
        assert b"no 'raw' field" in f[b"reason"] and f[b"raw"] == b'{"data":"{}"}'
        assert pending(server, n.intake) == 0


def delivered(server: RedisServer, stream: str, eid: str, group: str = "wd-engine") -> int | None:
    """XPENDING's delivery count of one entry, None once it is no longer pending (a probe)."""
    rows = server.client().xpending_range(stream, group, eid, eid, 1)
    return int(rows[0]["times_delivered"]) if rows else None


def dead_letters(server: RedisServer, stream: str) -> list[dict[bytes, bytes]]:
    """Every entry of the dead-letter stream, oldest first (a probe, no consumer group)."""
    return [fields for _, fields in server.client().xrange(stream)]  # type: ignore[misc, union-attr]


def poison_reason(times: int, limit: int) -> bytes:
    return (
        f"delivered {times} times without being acknowledged (limit {limit}): retired as poison"
    ).encode()


HISTORY_FIELDS = {
    b"reason",
    b"raw",
    b"source_id",
    b"stream",
    b"consumer",
    b"at",
    b"times_delivered",
    b"last_consumer",
    b"idle_ms",
}


@pytest.mark.parametrize("client", CLIENTS)
async def test_entries_without_payload_never_stall_the_source(server, client):
    """Batches made only of entries without a ``raw`` field, fresh or left in the PEL by a
    crash, are dead-lettered with the reason, and the source goes on to the next entry."""
    n = names()
    shapes: list[dict[str, bytes]] = [
        {"data": b"{}"},
        {"RAW": b"x", "id": b"7"},
        {"raw_b64": b"e30="},
    ]
    async with open_client(client, server.host, server.port) as c:
        assert await c.create_group(n.intake, "wd-engine")
        (bad0,) = await c.add_many(n.intake, shapes[:1], None)
        (good0,) = await produce(c, n.intake, [warning_json(0)])
        # A previous run of c1 read both and crashed before handling either.
        assert [e for e, _ in await c.read_group(n.intake, "wd-engine", "c1", ">", 10, None)] == [
            bad0,
            good0,
        ]
        bad1, bad2 = await c.add_many(n.intake, shapes[1:], None)
        (good1,) = await produce(c, n.intake, [warning_json(1)])
        src = await RedisStreamSource.open(c, n.intake, n.dead, opts(batch_size=2))
        with trio.fail_after(5):
            assert await consume(src, 2) == ["w-0", "w-1"]
        dead = dead_letters(server, n.dead)
        assert [f[b"source_id"] for f in dead] == [i.encode() for i in (bad0, bad1, bad2)]
        assert [f[b"reason"] for f in dead] == [
            b"entry has no 'raw' field (fields: ['data'])",
            b"entry has no 'raw' field (fields: ['RAW', 'id'])",
            b"entry has no 'raw' field (fields: ['raw_b64'])",
        ]
        assert [f[b"raw"] for f in dead] == [
            b'{"data":"{}"}',
            b'{"RAW":"x","id":"7"}',
            b'{"raw_b64":"e30="}',
        ]
        assert all(f[b"stream"] == n.intake.encode() and b"times_delivered" not in f for f in dead)
        assert src.retired == 0 and pending(server, n.intake) == 0
        assert good1 not in src.outstanding and not src.outstanding


def test_max_deliveries_defaults_to_five_and_must_be_positive():
    assert SourceOptions().max_deliveries == 5
    with pytest.raises(ValueError, match="max_deliveries must be at least 1"):
        SourceOptions(max_deliveries=0)


@pytest.mark.parametrize("client", CLIENTS)
async def test_entry_up_to_the_limit_is_redelivered_normally(server, client):
    """Delivered exactly ``max_deliveries`` times (the default, 5): still handed out, marked
    ``redelivered``, and nothing is dead-lettered."""
    n = names()
    raw = warning_json(0)
    async with open_client(client, server.host, server.port) as c:
        (eid,) = await produce(c, n.intake, [raw])
        src = await RedisStreamSource.open(c, n.intake, n.dead, opts())
        with trio.fail_after(5):
            (d,) = await src.receive_batch()
        assert d.id == eid and not d.redelivered and delivered(server, n.intake, eid) == 1
        for times in range(2, 6):  # restarts of the same consumer: deliveries 2..5
            src = await RedisStreamSource.open(c, n.intake, n.dead, opts())
            with trio.fail_after(5):
                (d,) = await src.receive_batch()
            assert (d.id, d.raw, d.redelivered) == (eid, raw, True)
            assert delivered(server, n.intake, eid) == times
        assert src.retired == 0 and server.client().xlen(n.dead) == 0
        await src.ack([eid])
        assert pending(server, n.intake) == 0


@pytest.mark.parametrize("client", CLIENTS)
async def test_poison_entry_is_retired_after_restarts_of_its_consumer(server, client, caplog):
    """The engine dies on an entry (never acks it) and restarts with the same consumer name,
    again and again: past ``max_deliveries`` the entry goes to the dead stream with its
    history and is acked; the entries after it come through in order."""
    n = names()
    limit = 3
    poison = warning_json(0)
    async with open_client(client, server.host, server.port) as c:
        ids = await produce(c, n.intake, [poison, warning_json(1), warning_json(2)])
        o = opts(max_deliveries=limit, batch_size=1)
        src = await RedisStreamSource.open(c, n.intake, n.dead, o)
        with trio.fail_after(5):
            (d,) = await src.receive_batch()
        assert d.id == ids[0] and not d.redelivered  # delivery 1, then a "crash"
        for times in range(2, limit + 1):
            src = await RedisStreamSource.open(c, n.intake, n.dead, o)
            with trio.fail_after(5):
                (d,) = await src.receive_batch()
            assert (d.id, d.redelivered, src.retired) == (ids[0], True, 0)
            assert delivered(server, n.intake, ids[0]) == times
        await trio.sleep(0.06)  # the last run held it this long before dying
        src = await RedisStreamSource.open(c, n.intake, n.dead, o)
        with caplog.at_level(logging.INFO, logger="engine.transport.redis"), trio.fail_after(5):
            got = [d for _ in range(2) for d in await src.receive_batch()]
        assert [(d.id, d.redelivered) for d in got] == [(ids[1], False), (ids[2], False)]
        assert (src.retired, src.claimed) == (1, 0)
        assert delivered(server, n.intake, ids[0]) is None  # acked: no restart sees it again
        ((f),) = dead_letters(server, n.dead)
        assert set(f) == HISTORY_FIELDS
        assert f[b"reason"] == poison_reason(limit + 1, limit)
        assert (f[b"raw"], f[b"source_id"], f[b"stream"]) == (
            poison,
            ids[0].encode(),
            n.intake.encode(),
        )
        assert (f[b"times_delivered"], f[b"consumer"], f[b"last_consumer"]) == (
            str(limit + 1).encode(),
            b"c1",
            b"c1",
        )
        assert 50 <= int(f[b"idle_ms"]) < 5000
        # The log says which entry, how often and why; never the payload.
        lines = [r.getMessage() for r in caplog.records if ids[0] in r.getMessage()]
        assert len(lines) == 1
        assert n.intake in lines[0] and poison_reason(limit + 1, limit).decode() in lines[0]
        assert "w-0" not in caplog.text and "fraud" not in caplog.text
        await src.ack([d.id for d in got])
        assert pending(server, n.intake) == 0
        # A further restart finds nothing of it: no loop.
        src = await RedisStreamSource.open(c, n.intake, n.dead, o)
        with trio.move_on_after(0.3):
            extra = await src.receive_batch()
            raise AssertionError(f"unexpected redelivery {extra}")
        assert len(dead_letters(server, n.dead)) == 1


@pytest.mark.parametrize("client", CLIENTS)
async def test_poison_entry_is_retired_when_claimed(server, client):
    """Consumers die one after another holding the same entry, each claimed by the next with
    XAUTOCLAIM: past ``max_deliveries`` the claimer retires it, naming the last holder."""
    n = names()
    limit = 2
    poison = warning_json(0)
    async with open_client(client, server.host, server.port) as c:
        ids = await produce(c, n.intake, [poison, warning_json(1), warning_json(2)])
        a = await RedisStreamSource.open(
            c, n.intake, n.dead, opts(consumer="c1", batch_size=1, max_deliveries=limit)
        )
        with trio.fail_after(5):
            (d,) = await a.receive_batch()
        assert d.id == ids[0] and not d.redelivered  # delivery 1; c1 dies
        await trio.sleep(0.06)
        b = await RedisStreamSource.open(
            c,
            n.intake,
            n.dead,
            opts(consumer="c2", batch_size=1, claim_idle_s=0.05, max_deliveries=limit),
        )
        with trio.fail_after(5):
            (d,) = await b.receive_batch()
        assert (d.id, d.redelivered, b.claimed, b.retired) == (ids[0], True, 1, 0)
        assert delivered(server, n.intake, ids[0]) == 2  # at the limit: still handed out; c2 dies
        await trio.sleep(0.06)
        third = await RedisStreamSource.open(
            c, n.intake, n.dead, opts(consumer="c3", claim_idle_s=0.05, max_deliveries=limit)
        )
        with trio.fail_after(5):
            got = await third.receive_batch()
        assert [(d.id, d.redelivered) for d in got] == [(ids[1], False), (ids[2], False)]
        assert (third.retired, third.claimed) == (1, 0)
        assert delivered(server, n.intake, ids[0]) is None
        ((f),) = dead_letters(server, n.dead)
        assert set(f) == HISTORY_FIELDS
        assert f[b"reason"] == poison_reason(3, limit)
        assert (f[b"raw"], f[b"source_id"], f[b"stream"], f[b"times_delivered"]) == (
            poison,
            ids[0].encode(),
            n.intake.encode(),
            b"3",
        )
        # Retired by c3; held (and died on) by c2, idle since then.
        assert (f[b"consumer"], f[b"last_consumer"]) == (b"c3", b"c2")
        assert 50 <= int(f[b"idle_ms"]) < 5000
        await third.ack([d.id for d in got])
        assert pending(server, n.intake) == 0


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_outbox_repeats_keep_key_and_maxlen_trims(server, client, encoding):
    n = names()
    async with open_client(client, server.host, server.port) as c:
        outbox = RedisOutbox(c, n.outbox, encoding=encoding)
        batch = [action(i) for i in range(3)] + [action(0, attempt=2)]
        await outbox.send(batch)
        await outbox.send(batch[:2])  # the engine retries after a failed send
        await c.create_group(n.outbox, "adapter")
        got = await c.read_group(n.outbox, "adapter", "a1", ">", 100, None)
        keys = [f[b"key"].decode() for _, f in got]  # type: ignore[index]
        assert keys == [a.key for a in batch + batch[:2]]
        assert [decode_action(f[b"action"], encoding) for _, f in got] == batch + batch[:2]  # type: ignore[index]
        assert keys[0] != keys[3]  # a new attempt has a new key; a repeat the same one
        trimmed = RedisOutbox(c, n.outbox + ":trim", maxlen=10)
        for i in range(30):
            await trimmed.send([action(i) for _ in range(50)])
        assert server.client().xlen(n.outbox + ":trim") < 300  # MAXLEN ~ trims whole nodes
