"""The foundation of a group of engines over Redis: stable partitions, the assignment plan,
leases with fencing tokens, and the fenced Redis journal an Engine runs on.

What matters most: a stalled owner whose lease passed can never write its partition again
(the write is refused inside Redis, atomically with the check), tokens only grow, and a
partition's state reopens exactly from Redis, so a survivor restores the same warnings.

Everything against a real redis-server (engine.testing.RedisServer), real clock, each wait
bounded by trio.fail_after. The plan is pure: hypothesis runs the whole group round by round.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from engine.group import (
    AsyncLeases,
    FencedError,
    Keys,
    Leases,
    RedisJournal,
    ReplicationError,
    partition_of,
    plan_assignment,
    targets,
)
from engine.group.client import run_sync
from engine.journal import JournalError, JournalFailedError
from engine.model import Acknowledged, CallResult, ResidentTarget, Responders, WarningInstruction
from engine.rules.escalation import load_escalation
from engine.scheduler import Engine
from engine.testing import RedisServer, StaticDirectory
from tests.props import examples

KEYS = Keys()


# --- partitions and keys (pure) -------------------------------------------------------------


def test_partition_of_never_changes() -> None:
    """Pinned values: a change here moves warnings away from the partition holding them."""
    assert partition_of("w-20261125-0001", 16) == 11
    assert partition_of("w-20261125-0001", 1024) == 523
    assert partition_of("alert-1", 16) == 13
    assert partition_of("", 16) == 4
    assert partition_of("张三的预警", 1024) == 114
    assert partition_of("alert-1", 2**61 - 1) == 961710878223104929
    assert all(partition_of(f"w{i}", 1) == 0 for i in range(100))
    with pytest.raises(ValueError):
        partition_of("w", 0)


def test_partition_of_spreads_ids_evenly() -> None:
    counts = Counter(partition_of(f"w-20261125-{i:05d}", 8) for i in range(8000))
    assert set(counts) == set(range(8))
    assert max(counts.values()) < 1.1 * 1000 and min(counts.values()) > 0.9 * 1000


def test_every_key_of_a_partition_is_in_one_cluster_slot() -> None:
    for keys in (KEYS, Keys("grp-7")):
        for p in range(64):
            names = keys.all(p)
            assert len({key_slot(n.encode()) for n in names}) == 1, names
            assert all(n.startswith(f"{{{keys.prefix}:p{p}}}:") for n in names)
    assert KEYS.lease(3) == "{wd:p3}:lease" and KEYS.journal(3) == "{wd:p3}:journal"
    for bad in ("", "a{b", "a}b"):
        with pytest.raises(ValueError):
            Keys(bad)


# --- the assignment plan (pure, hypothesis) -------------------------------------------------

POOL = [f"e{i}" for i in range(8)]


@st.composite
def group_views(draw: st.DrawFn) -> tuple[int, set[str], dict[int, str | None]]:
    """A partition count, a live set, and an owner map that may name dead engines, leave
    partitions free, or leave them out entirely."""
    partitions = draw(st.integers(0, 40))
    live = draw(st.sets(st.sampled_from(POOL), min_size=1, max_size=6))
    owner = st.one_of(st.none(), st.sampled_from(POOL))
    owners = draw(st.dictionaries(st.integers(0, max(0, partitions - 1)), owner))
    if partitions == 0:
        owners = {}
    return partitions, live, owners


def balanced(partitions: int, live: set[str], owners: dict[int, str | None]) -> bool:
    """Every partition owned by exactly one live engine; counts within one of each other."""
    if any(owners.get(p) not in live for p in range(partitions)):
        return False
    counts = Counter(owners[p] for p in range(partitions))
    per_engine = [counts.get(e, 0) for e in live]
    return max(per_engine) - min(per_engine) <= 1


def apply_acquire(owners: dict[int, str | None], live: set[str], engine: str, p: int) -> None:
    """A lease grant: succeeds only if the partition is free or its holder is dead."""
    if owners.get(p) is None or owners[p] not in live:
        owners[p] = engine


@settings(max_examples=examples(200), deadline=None)
@given(view=group_views(), order=st.permutations(POOL))
def test_the_group_converges_in_two_rounds_when_all_plan_from_one_view(
    view: tuple[int, set[str], dict[int, str | None]], order: list[str]
) -> None:
    """Each round every live engine plans from the same view, then all releases happen,
    then all acquisitions (in an arbitrary order, through lease semantics)."""
    partitions, live, owners = view
    owners = dict(owners)
    for _round in range(3):
        plans = {e: plan_assignment(partitions, e, live, owners) for e in live}
        acquiring = [p for acquire, _ in plans.values() for p in acquire]
        assert len(acquiring) == len(set(acquiring)), "two engines went for one partition"
        if all(not acquire and not release for acquire, release in plans.values()):
            break
        nxt = dict(owners)
        for e, (acquire, release) in plans.items():
            assert all(owners.get(p) == e for p in release)
            assert all(owners.get(p) is None or owners[p] not in live for p in acquire)
            for p in release:
                nxt[p] = None
        for e in (e for e in order if e in live):
            for p in plans[e][0]:
                apply_acquire(nxt, live, e, p)
        owners = nxt
    else:
        pytest.fail(f"no fixed point after two rounds: {owners}")
    assert balanced(partitions, live, owners), owners


@settings(max_examples=examples(200), deadline=None)
@given(view=group_views(), orders=st.lists(st.permutations(POOL), min_size=5, max_size=5))
def test_the_group_converges_when_engines_plan_one_after_another(
    view: tuple[int, set[str], dict[int, str | None]], orders: list[list[str]]
) -> None:
    """Each engine plans from the view as the engines before it left it (a fresh read)."""
    partitions, live, owners = view
    owners = dict(owners)
    for order in orders:
        changed = False
        for e in (e for e in order if e in live):
            acquire, release = plan_assignment(partitions, e, live, owners)
            changed = changed or bool(acquire or release)
            for p in release:
                owners[p] = None
            for p in acquire:
                apply_acquire(owners, live, e, p)
        if not changed:
            break
    else:
        pytest.fail(f"still moving after four rounds: {owners}")
    assert balanced(partitions, live, owners), owners


@settings(max_examples=examples(200), deadline=None)
@given(view=group_views(), me=st.sampled_from(POOL))
def test_a_plan_only_takes_free_partitions_and_only_releases_its_own(
    view: tuple[int, set[str], dict[int, str | None]], me: str
) -> None:
    partitions, live, owners = view
    acquire, release = plan_assignment(partitions, me, live, owners)
    group = live | {me}  # an engine always counts itself as live
    mine = [p for p in range(partitions) if owners.get(p) == me]
    assert acquire == sorted(acquire) and release == sorted(release)
    assert all(owners.get(p) is None or owners[p] not in group for p in acquire)
    assert set(release) <= set(mine)
    assert release == mine[len(mine) - len(release) :]  # the highest-numbered extras
    target = targets(partitions, group, owners)[me]
    assert len(mine) - len(release) + len(acquire) <= target
    assert sum(targets(partitions, group, owners).values()) == partitions
    assert plan_assignment(partitions, me, set(reversed(sorted(live))), owners) == (
        acquire,
        release,
    )


def test_a_joining_engine_takes_its_share_and_nothing_else_moves() -> None:
    live = {"a", "b", "c"}
    owners: dict[int, str | None] = {p: "abc"[p // 4] for p in range(12)}
    assert balanced(12, live, owners)
    live.add("d")
    before = dict(owners)
    for _ in range(2):
        plans = {e: plan_assignment(12, e, live, owners) for e in live}
        for _e, (_, release) in plans.items():
            for p in release:
                owners[p] = None
        for e, (acquire, _) in plans.items():
            for p in acquire:
                apply_acquire(owners, live, e, p)
    assert balanced(12, live, owners)
    moved = {p for p in range(12) if owners[p] != before[p]}
    assert len(moved) == 3 and {owners[p] for p in moved} == {"d"}
    assert moved == {3, 7, 11}  # each released its highest-numbered partition
    # and when d dies, its partitions are free for the others at once
    live.discard("d")
    acquire_a, _ = plan_assignment(12, "a", live, owners)
    assert acquire_a == [3]


# --- Redis: leases --------------------------------------------------------------------------

redis_mark = pytest.mark.redis


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


@pytest.fixture
def client(server: RedisServer) -> redis.Redis:
    """A client on an empty database."""
    c = server.client()
    c.flushall()
    return c


@redis_mark
async def test_tokens_only_grow_across_acquisitions(client: redis.Redis) -> None:
    leases = AsyncLeases.over(client)
    seen: list[int] = []
    with trio.fail_after(10):
        for i in range(5):
            token = await leases.acquire(0, f"e{i % 2}", 5000)
            assert token is not None
            seen.append(token)
            assert await leases.release(0, f"e{i % 2}", token)
        token = await leases.acquire(0, "a", 50)  # let this one expire
        assert token is not None
        seen.append(token)
        await trio.sleep(0.15)
        token = await leases.acquire(0, "b", 5000)
        assert token is not None
        seen.append(token)
        # the holder named in the lease takes it over with a new token (a restarted engine)
        again = await leases.acquire(0, "b", 5000)
        assert again is not None
        seen.append(again)
        assert not await leases.renew(0, "b", token, 5000)  # its old incarnation is fenced
    assert seen == list(range(1, 9))
    assert (await leases.acquire(1, "a", 5000)) == 1  # each partition has its own fence


@redis_mark
async def test_renew_extends_and_stale_or_foreign_tokens_do_nothing(client: redis.Redis) -> None:
    leases = AsyncLeases.over(client)
    with trio.fail_after(10):
        token = await leases.acquire(2, "a", 300)
        assert token == 1
        assert await leases.acquire(2, "b", 5000) is None  # held by someone else
        assert await leases.renew(2, "a", token, 60_000)
        assert 30_000 < client.pttl(KEYS.lease(2)) <= 60_000
        assert not await leases.renew(2, "a", token + 1, 60_000)  # a token never issued
        assert not await leases.renew(2, "b", token, 60_000)  # someone else's name
        assert not await leases.release(2, "b", token)  # a non-owner cannot release
        info = (await leases.read_all(4))[2]
        assert (info.owner, info.token, info.fence) == ("a", token, 1)
        assert info.expires_in_ms is not None and info.expires_in_ms > 30_000
        assert await leases.release(2, "a", token)
        assert not await leases.release(2, "a", token)  # already gone
        assert not await leases.renew(2, "a", token, 1000)  # a released lease stays released
        status = await leases.read_all(4)
    assert [(s.partition, s.owner, s.token, s.fence) for s in status] == [
        (0, None, None, 0),
        (1, None, None, 0),
        (2, None, None, 1),
        (3, None, None, 0),
    ]
    with pytest.raises(ValueError):
        Leases(client).acquire(0, " padded", 1000)


# --- Redis: the fenced journal --------------------------------------------------------------


def stream(client: redis.Redis, partition: int) -> list[bytes]:
    return [f[b"r"] for _, f in client.xrange(KEYS.journal(partition), "-", "+")]


@redis_mark
async def test_a_stalled_owner_is_fenced_and_its_late_writes_never_land(
    client: redis.Redis,
) -> None:
    leases = AsyncLeases.over(client)
    with trio.fail_after(20):
        token_a = await leases.acquire(0, "A", 150)
        assert token_a == 1
        async with RedisJournal.open(client, 0, "A", token_a) as a:
            a.write_nowait([b"a1", b"a2"])
            await a.sync()  # while the lease holds: lands
            await trio.sleep(0.3)  # A stalls past its lease
            token_b = await leases.acquire(0, "B", 60_000)
            assert token_b == 2  # strictly greater
            async with RedisJournal.open(client, 0, "B", token_b) as b:
                assert list(b.replay()) == [b"a1", b"a2"]  # B sees what A wrote in time
                a.write_nowait([b"a3-late"])  # A wakes up and carries on
                with pytest.raises(FencedError):
                    await a.sync()
                assert a.failed
                # and it stays failed, whatever it tries
                with pytest.raises(FencedError):
                    a.write_nowait([b"a4-late"])
                with pytest.raises(FencedError):
                    await a.snapshot(b"A's idea of the state")
                with pytest.raises(FencedError):
                    await a.sync()
                b.write_nowait([b"b1"])
                await b.sync()
        assert stream(client, 0) == [b"a1", b"a2", b"b1"]
        assert client.hgetall(KEYS.snapshot(0)) == {}  # A's snapshot never landed
        # an old token cannot even open the partition
        with pytest.raises(FencedError):
            async with RedisJournal.open(client, 0, "A", token_a):
                pass


@redis_mark
async def test_a_lapsed_lease_fences_even_when_nobody_took_it_over(client: redis.Redis) -> None:
    leases = AsyncLeases.over(client)
    with trio.fail_after(20):
        token = await leases.acquire(5, "A", 100)
        assert token is not None
        async with RedisJournal.open(client, 5, "A", token) as a:
            a.write_nowait([b"x"])
            await a.sync()
            await trio.sleep(0.25)
            a.write_nowait([b"y"])
            with pytest.raises(FencedError) as info:
                await a.sync()
            assert isinstance(info.value, JournalFailedError)
            assert isinstance(info.value, JournalError)
    assert stream(client, 5) == [b"x"]


@redis_mark
async def test_snapshot_trims_and_a_reopen_gives_the_snapshot_and_what_followed(
    client: redis.Redis,
) -> None:
    leases = AsyncLeases.over(client)
    first = [f"r{i}".encode() for i in range(7)]
    after = [f"s{i}".encode() for i in range(5)]
    with trio.fail_after(20):
        token = await leases.acquire(3, "A", 60_000)
        assert token is not None
        # tiny batches, so one sync spans several fenced script calls
        async with RedisJournal.open(client, 3, "A", token, max_batch_records=2) as j:
            assert j.snapshot_payload is None and list(j.replay()) == []
            j.write_nowait(first[:3])
            j.write_nowait(first[3:])
            await j.sync()
            assert stream(client, 3) == first
            last_covered = client.xrevrange(KEYS.journal(3), "+", "-", count=1)[0][0]
            await j.snapshot(b"S1")
            with pytest.raises(JournalError):
                j.replay()  # superseded, as with the disk journal
            assert client.xlen(KEYS.journal(3)) == 0  # trimmed at the snapshot
            j.write_nowait(after)  # written without sync: the close flushes them
            assert j.stats.records == 12 and j.stats.snapshots == 1
            assert j.stats.batches >= 4
        assert client.hget(KEYS.snapshot(3), "last_id") == last_covered
        async with RedisJournal.open(client, 3, "A", token) as j:
            assert j.snapshot_payload == b"S1"
            assert j.snapshot_last_id == last_covered.decode()
            assert list(j.replay()) == after
            assert j.stats.replayed_records == 5
            await j.snapshot(b"S2")
        async with RedisJournal.open(client, 3, "A", token) as j:
            assert (j.snapshot_payload, list(j.replay())) == (b"S2", [])
            await j.snapshot(b"S3")  # a snapshot over an empty stream keeps the last id
            assert client.hget(KEYS.snapshot(3), "payload") == b"S3"
        assert client.hget(KEYS.snapshot(3), "token") == str(token).encode()
        assert client.hget(KEYS.snapshot(3), "last_id") > last_covered


@redis_mark
async def test_a_retried_batch_is_written_once(client: redis.Redis) -> None:
    """A script call whose reply was lost is retried by redis-py; the marker makes the retry
    a no-op, because a duplicated record would replay differently from the live run."""
    leases = AsyncLeases.over(client)
    with trio.fail_after(20):
        token = await leases.acquire(1, "A", 60_000)
        assert token is not None
        async with RedisJournal.open(client, 1, "A", token) as j:
            await run_sync(j._write_records, "m-1", [b"one", b"two"])
            await run_sync(j._write_records, "m-1", [b"one", b"two"])  # the retry
            await run_sync(j._write_records, "m-2", [b"three"])
            j.write_nowait([b"four"])
            await j.sync()
        async with RedisJournal.open(client, 1, "A", token) as j:
            # a second instance on the same token never mistakes its batches for the first's
            j.write_nowait([b"five"])
            await j.sync()
    assert stream(client, 1) == [b"one", b"two", b"three", b"four", b"five"]


@redis_mark
async def test_wait_replicas_raises_without_replicas_and_passes_with_one(
    server: RedisServer, client: redis.Redis
) -> None:
    leases = AsyncLeases.over(client)
    with trio.fail_after(30):
        token = await leases.acquire(4, "A", 60_000)
        assert token is not None
        with pytest.raises(ReplicationError):  # the final sync at close waits for them too
            async with RedisJournal.open(
                client, 4, "A", token, wait_replicas=1, wait_timeout_ms=50
            ) as j:
                j.write_nowait([b"r"])
                with pytest.raises(ReplicationError):
                    await j.sync()
                assert not j.failed  # the record is on the primary; the journal carries on
                with pytest.raises(ReplicationError):
                    await j.snapshot(b"S")
        client.config_set("repl-diskless-sync-delay", 0)  # else the first sync waits 5 s
        with RedisServer(config={"replicaof": f"127.0.0.1 {server.port}"}) as replica:
            while _replica_state(client) != "online":
                await trio.sleep(0.02)
            async with RedisJournal.open(
                client, 4, "A", token, wait_replicas=1, wait_timeout_ms=5000
            ) as j:
                j.write_nowait([b"r2"])
                await j.sync()
                assert j.stats.waits == 1
            r = replica.client()
            assert r.hget(KEYS.snapshot(4), "payload") == b"S"
            assert [f[b"r"] for _, f in r.xrange(KEYS.journal(4))] == [b"r2"]


def _replica_state(client: redis.Redis) -> str | None:
    """The first replica's state as the primary reports it (None: no replica yet)."""
    replica = client.info("replication").get("slave0")
    return replica.get("state") if isinstance(replica, dict) else None


# --- Redis: an Engine on the fenced journal -------------------------------------------------

RULES = load_escalation()
DIRECTORY = StaticDirectory(
    county_centre="cc",
    residents={
        rid: Responders(
            county_centre="cc",
            grid_officer=f"grid-{rid}",
            duty_officer="duty",
            chief="chief",
            visitors=(f"nb-{rid}",),
            resident=rid,
        )
        for rid in range(20)
    },
)


def warning(wid: str, rid: int, *, level: int = 1, msg_type: str = "alert") -> WarningInstruction:
    now = datetime.now(UTC)
    return WarningInstruction(
        id=wid,
        kind="fraud",
        level=level,
        target=ResidentTarget(rid),
        issued_at=now,
        expires=now + timedelta(hours=5),
        msg_type=msg_type,  # type: ignore[arg-type]
    )


@redis_mark
async def test_a_survivor_engine_restores_the_same_states_from_redis(
    client: redis.Redis,
) -> None:
    leases = AsyncLeases.over(client)
    ids = [f"w{i}" for i in range(12)]
    with trio.fail_after(30):
        token_a = await leases.acquire(7, "A", 60_000)
        assert token_a is not None
        async with (
            RedisJournal.open(client, 7, "A", token_a) as journal,
            Engine.open(DIRECTORY, RULES, journal=journal, snapshot_every=8) as engine,  # type: ignore[arg-type]
        ):
            await engine.submit_many([warning(w, i, level=1 + i % 3) for i, w in enumerate(ids)])
            await engine.durable()
            await engine.submit(warning("w1", 1, msg_type="update"))
            await engine.submit(warning("w2", 2, msg_type="cancel"))
            await engine.feedback_many(
                [
                    Acknowledged(warning_id="w4", officer="grid-4"),
                    CallResult(warning_id="w5", result="busy"),
                ]
            )
            await engine.durable()
            while engine.stats.snapshots < 1:  # the snapshotter ran on the Redis journal
                await trio.sleep(0.01)
            sent = []
            with contextlib.suppress(trio.WouldBlock):
                while len(sent) < 5:
                    sent.append(engine.actions().receive_nowait())
            engine.mark_sent([a.key for a in sent])  # journaled without waiting
            before = {w: engine.status(w) for w in ids}
            unsent_before = engine.unsent
        assert journal.stats.snapshots >= 1 and client.exists(KEYS.snapshot(7))
        assert await leases.release(7, "A", token_a)
        # engine A is gone; B takes the partition over with a new token
        token_b = await leases.acquire(7, "B", 60_000)
        assert token_b == token_a + 1
        async with (
            RedisJournal.open(client, 7, "B", token_b) as journal,
            Engine.open(DIRECTORY, RULES, journal=journal) as engine,  # type: ignore[arg-type]
        ):
            after = {w: engine.status(w) for w in ids}
            assert engine.unsent == unsent_before  # the Sent records made it too
            assert engine.stats.replayed == journal.stats.replayed_records
    assert all(s is not None for s in before.values()) and len(sent) == 5
    assert before["w2"].status == "cancelled"  # type: ignore[union-attr]
    assert after == before


@redis_mark
async def test_closing_a_journal_whose_writer_was_cancelled_does_not_hang(
    client: redis.Redis,
) -> None:
    """A hand-back that overruns cancels the partition's scope, writer task included. The
    final sync at close is shielded: it must learn that the writer stopped (and the records
    queued are not written) instead of waiting for it forever. This hung the group suite
    once under load before the writer reported its own end."""
    leases = AsyncLeases.over(client)
    with trio.fail_after(20):
        token = await leases.acquire(2, "A", 60_000)
        assert token is not None
        with trio.CancelScope() as partition:
            async with RedisJournal.open(client, 2, "A", token) as j:
                partition.cancel()  # before the writer ever runs
                j.write_nowait([b"never written"])
                await trio.sleep(1)  # the cancelled body: Cancelled here
        assert partition.cancelled_caught
    assert stream(client, 2) == []
