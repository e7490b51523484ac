"""The group over real Redis topologies: a primary and replica under Sentinel, and a Cluster.

What matters: a write acknowledged with ``WAIT 1`` survives a failover (forced, or the primary
killed), a client from ``connect(url)`` follows the new primary, leases and fencing tokens
survive with it; on a Cluster each partition's keys live in one slot, and leases and the fenced
journal work there as on one server. Every topology is started by the test itself on 127.0.0.1
(engine.testing.topology), and every wait is bounded.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import redis
import redis.exceptions
import trio
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.sentinel import SentinelConnectionPool

from engine.group import AsyncLeases, FencedError, Keys, Leases, RedisJournal
from engine.group.client import check_binary, connect, connect_redis, run_sync
from engine.journal import JournalError
from engine.testing.topology import ClusterTopology, SentinelTopology

T = TypeVar("T")

KEYS = Keys()
redis_mark = pytest.mark.redis

#: What a client may see while the primary changes hands: a dropped connection, a demoted
#: primary refusing writes, or a read that timed out during the switch.
SWITCHING = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError)


def retry(fn: Callable[[], T], timeout: float = 15.0) -> T:
    """``fn()``, retried on the errors of a failover in progress until ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except SWITCHING:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def write_and_wait(client: redis.Redis, key: str, value: bytes) -> int:
    """SET then ``WAIT 1`` on the same connection (a pipeline), so WAIT covers the write."""
    pipe = client.pipeline(transaction=False)
    pipe.set(key, value)
    pipe.wait(1, 5000)
    _, acked = pipe.execute()
    return int(acked)


def role(server_client: redis.Redis) -> tuple[str, int | None]:
    """A server's role and, for a replica, the port of its primary."""
    info = server_client.info("replication")
    port = info.get("master_port")
    return str(info["role"]), int(port) if port is not None else None


# --- connect(): the three URL forms (no server needed) -------------------------------------


def test_connect_parses_plain_sentinel_and_cluster_urls() -> None:
    plain = connect("redis://127.0.0.1:6390/3", socket_timeout=1.5)
    assert isinstance(plain, redis.Redis)
    kw = plain.connection_pool.connection_kwargs
    assert (kw["port"], kw["db"], kw["socket_timeout"]) == (6390, 3, 1.5)

    s = connect("redis+sentinel://127.0.0.1:1,localhost:2,[::1]:3/wd/2", socket_timeout=1.5)
    assert isinstance(s, redis.Redis)
    pool = s.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "wd" and pool.is_master
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["socket_timeout"] == 1.5
    sentinels = pool.sentinel_manager.sentinels
    assert [c.connection_pool.connection_kwargs["port"] for c in sentinels] == [1, 2, 3]
    assert [c.connection_pool.connection_kwargs["host"] for c in sentinels][2] == "::1"
    assert sentinels[0].connection_pool.connection_kwargs["socket_timeout"] == 1.5
    s_default = connect("redis+sentinel://127.0.0.1:1/other/")
    assert s_default.connection_pool.service_name == "other"
    assert s_default.connection_pool.connection_kwargs["db"] == 0
    assert isinstance(connect_redis("redis+sentinel://127.0.0.1:1/wd"), redis.Redis)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:6379/0", "expected redis://"),
        ("127.0.0.1:6379", "expected redis://"),
        ("redis+sentinel://", "at least one HOST:PORT"),
        ("redis+sentinel://127.0.0.1:26379", "SERVICE"),
        ("redis+sentinel://127.0.0.1:26379/", "SERVICE"),
        ("redis+sentinel://127.0.0.1/wd", "expected HOST:PORT"),
        ("redis+sentinel://127.0.0.1:x/wd", "expected HOST:PORT"),
        ("redis+sentinel://127.0.0.1:0/wd", "expected HOST:PORT"),
        ("redis+sentinel://127.0.0.1:1,,127.0.0.1:2/wd", "expected HOST:PORT"),
        ("redis+sentinel://127.0.0.1:1/wd/x", "database must be a number"),
        ("redis+sentinel://127.0.0.1:1/wd/0/more", "SERVICE"),
        ("redis+sentinel://user:pw@127.0.0.1:1/wd", "no credentials"),
        ("redis+sentinel://127.0.0.1:1/wd?db=1", "no credentials, query"),
        ("redis+cluster://", "at least one HOST:PORT"),
        ("redis+cluster://127.0.0.1:7000/3", "only database 0"),
        ("redis+cluster://127.0.0.1:7000,127.0.0.1", "expected HOST:PORT"),
    ],
)
def test_connect_refuses_bad_urls_saying_what_it_expected(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("?", r"\?")):
        connect(url)


def test_connect_refuses_decoding_clients_and_connect_redis_refuses_a_cluster() -> None:
    for url in ("redis://127.0.0.1:1/0", "redis+sentinel://127.0.0.1:1/wd", "redis+cluster://a:1"):
        with pytest.raises(ValueError, match="decode_responses"):
            connect(url, decode_responses=True)
    with pytest.raises(ValueError, match="use connect"):
        connect_redis("redis+cluster://127.0.0.1:7000")


# --- Sentinel --------------------------------------------------------------------------------


@pytest.fixture
def sentinel() -> Iterator[SentinelTopology]:
    with SentinelTopology() as topo:
        yield topo


@redis_mark
def test_a_failover_keeps_acknowledged_writes_and_connect_follows_it(
    sentinel: SentinelTopology,
) -> None:
    old_primary, old_replica = sentinel.primary(), sentinel.replica()
    assert role(old_replica.client()) == ("slave", old_primary.port)
    direct = sentinel.client()
    assert write_and_wait(direct, "k", b"v") == 1
    app = connect(sentinel.url())
    assert check_binary(app) is None
    assert write_and_wait(app, "app", b"1") == 1

    new = sentinel.failover(timeout=25)

    assert new == ("127.0.0.1", old_replica.port)
    assert sentinel.primary() is old_replica and sentinel.replica() is old_primary
    promoted = old_replica.client()
    assert role(promoted) == ("master", None)
    assert promoted.mget("k", "app") == [b"v", b"1"]
    # The same client objects carry on: their pools ask the sentinels for the new primary.
    assert retry(lambda: write_and_wait(app, "after", b"2")) == 1
    assert retry(lambda: app.mget("k", "app", "after")) == [b"v", b"1", b"2"]
    assert retry(lambda: direct.get("after")) == b"2"
    # The old primary was turned into the new one's replica, and has what was written since.
    demoted = old_primary.client()
    assert role(demoted) == ("slave", old_replica.port)
    assert demoted.get("after") == b"2"
    with pytest.raises(redis.exceptions.ReadOnlyError):
        demoted.set("x", "1")


@redis_mark
def test_without_redis_sentinel_the_sentinels_run_as_redis_server_sentinel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name: None if name == "redis-sentinel" else real(name)
    )
    with SentinelTopology(sentinels=3) as topo:
        assert all(s.args == ("--sentinel",) for s in topo.sentinels)
        assert all(s.binary == real("redis-server") for s in topo.sentinels)
        modes = {s.client().info("server")["redis_mode"] for s in topo.sentinels}
        assert modes == {"sentinel"}
        assert write_and_wait(topo.client(), "k", b"v") == 1


def test_missing_binaries_fail_loudly_with_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"redis-sentinel.*tests/run\.sh"):
        SentinelTopology().start()
    with pytest.raises(RuntimeError, match=r"redis-cli.*tests/run\.sh"):
        ClusterTopology().start()


async def _write_synced(journal: RedisJournal, records: list[bytes], batch: list[bytes]) -> None:
    journal.write_nowait(batch)
    await journal.sync()
    records.extend(batch)


@redis_mark
@pytest.mark.parametrize("how", ["failover", "kill"])
async def test_leases_and_synced_journal_records_survive_losing_the_primary(
    sentinel: SentinelTopology, how: str
) -> None:
    client = connect(sentinel.url())
    assert isinstance(client, redis.Redis)
    leases = AsyncLeases.over(client)
    synced: list[bytes] = []
    with trio.fail_after(60):
        token = await leases.acquire(3, "A", 60_000)
        assert token == 1
        assert await leases.acquire(4, "B", 60_000) == 1
        # The lease scripts ran on pooled connections: a later write WAITed on one connection
        # covers them too (the replication stream is ordered).
        assert await run_sync(write_and_wait, client, "marker", b"m") == 1
        async with RedisJournal.open(client, 3, "A", token, wait_replicas=1) as j:
            for i in range(5):
                await _write_synced(j, synced, [f"r{i}-{k}".encode() for k in range(3)])
            await j.snapshot(b"S1")
            await _write_synced(j, synced, [b"after-snapshot"])
            assert j.stats.waits >= 6
        covered, synced = synced, [b"after-snapshot"]
        assert len(covered) == 16

        if how == "failover":
            await run_sync(sentinel.failover, 25.0)
        else:
            await run_sync(sentinel.kill_primary, 25.0)

        infos = await run_sync(retry, lambda: leases.sync.read_many([3, 4]))
        assert [(i.owner, i.token, i.fence) for i in infos] == [("A", token, 1), ("B", 1, 1)]
        assert infos[0].expires_in_ms is not None and infos[0].expires_in_ms > 30_000
        assert await run_sync(retry, lambda: leases.sync.renew(3, "A", token, 60_000))
        assert await leases.acquire(3, "B", 60_000) is None  # still A's
        again = await leases.acquire(3, "A", 60_000)
        assert again == token + 1  # the fence counter was replicated, never reset

        # A new token sees the snapshot and every synced record after it, once, in order.
        replicas = 1 if how == "failover" else 0  # after a kill no replica is left
        async with RedisJournal.open(client, 3, "A", again, wait_replicas=replicas) as j:
            assert j.snapshot_payload == b"S1"
            assert list(j.replay()) == synced
            await _write_synced(j, synced, [b"on-the-new-primary"])
        async with RedisJournal.open(client, 3, "A", again) as j:
            assert list(j.replay()) == synced
        with pytest.raises(FencedError):  # the old token stays fenced on the new primary
            async with RedisJournal.open(client, 3, "A", token):
                pass


@redis_mark
async def test_an_open_journal_across_a_failover_never_loses_or_repeats_a_synced_record(
    sentinel: SentinelTopology,
) -> None:
    """The writer's pinned connection points at the old primary: its next write either
    follows the new primary (redis-py reconnects; the batch marker makes a retry a no-op) or
    fails the journal. Either way a reopen holds exactly the synced records, in order."""
    client = connect(sentinel.url())
    assert isinstance(client, redis.Redis)
    leases = AsyncLeases.over(client)
    synced: list[bytes] = []
    with trio.fail_after(60):
        token = await leases.acquire(0, "A", 60_000)
        assert token is not None
        await run_sync(write_and_wait, client, "marker", b"m")
        maybe: list[bytes] = []
        async with RedisJournal.open(client, 0, "A", token, wait_replicas=1) as j:
            for i in range(3):
                await _write_synced(j, synced, [f"before-{i}".encode()])
            await run_sync(sentinel.failover, 25.0)
            try:
                for i in range(3):
                    batch = [f"after-{i}".encode()]
                    maybe.append(batch[0])
                    await _write_synced(j, synced, batch)
            except JournalError:
                pass  # the switch failed the journal, or WAIT was not answered in time
        reopened = await run_sync(retry, lambda: client.get(KEYS.lease(0)))
        assert reopened == f"A {token}".encode()
        async with RedisJournal.open(client, 0, "A", token) as j:
            replay = list(j.replay())
        # Every synced record, once, in order; a batch that failed may have landed anyway
        # (the outcome of a dropped call is unknown), but only after them and only once.
        assert replay[: len(synced)] == synced
        rest = replay[len(synced) :]
        assert rest == [r for r in maybe if r not in synced][: len(rest)]
        assert len(set(replay)) == len(replay)


# --- Cluster ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterTopology]:
    with ClusterTopology() as topo:
        yield topo


@pytest.fixture
def rc(cluster: ClusterTopology) -> RedisCluster:
    """A cluster client over empty nodes (binary replies, as the group's)."""
    c = cluster.client()
    c.flushall(target_nodes=RedisCluster.PRIMARIES)
    return c


@redis_mark
def test_a_partitions_keys_share_one_slot_and_partitions_spread_over_the_nodes(
    cluster: ClusterTopology, rc: RedisCluster
) -> None:
    nodes_used = set()
    for p in range(16):
        names = KEYS.all(p)
        slots = {key_slot(n.encode()) for n in names}
        assert len(slots) == 1, names
        assert {rc.cluster_keyslot(n) for n in names} == slots  # the server agrees
        nodes_used.add(rc.get_node_from_key(names[0]).port)
    assert nodes_used == {n.port for n in cluster.nodes}
    assert len(cluster.nodes) == 3 and cluster.url().count(",") == 2


@redis_mark
def test_connect_gives_a_working_cluster_client(cluster: ClusterTopology, rc: RedisCluster) -> None:
    app = connect(cluster.url())
    assert isinstance(app, RedisCluster)
    check_binary(app)
    for p in range(16):
        app.set(KEYS.commit(p), f"c{p}")
    assert [rc.get(KEYS.commit(p)) for p in range(16)] == [f"c{p}".encode() for p in range(16)]
    assert connect(cluster.url() + "/0").get(KEYS.commit(0)) == b"c0"
    with pytest.raises(ValueError, match="decode_responses"):
        check_binary(cluster.client(decode_responses=True))


@redis_mark
def test_leases_on_a_cluster(rc: RedisCluster) -> None:
    leases = Leases(rc)
    tokens = {p: leases.acquire(p, "A", 60_000) for p in range(16)}
    assert set(tokens.values()) == {1}
    assert leases.acquire(5, "B", 60_000) is None
    assert all(leases.renew(p, "A", 1, 60_000) for p in range(16))
    assert not leases.renew(5, "B", 1, 60_000) and not leases.release(5, "A", 2)
    status = leases.read_all(16)
    assert [(s.partition, s.owner, s.token, s.fence) for s in status] == [
        (p, "A", 1, 1) for p in range(16)
    ]
    assert all(s.expires_in_ms is not None and s.expires_in_ms > 30_000 for s in status)
    assert all(leases.release(p, "A", 1) for p in range(0, 16, 2))
    assert leases.acquire(2, "B", 60_000) == 2
    status = leases.read_all(16)
    assert [(s.owner, s.token, s.fence) for s in status[:4]] == [
        (None, None, 1),
        ("A", 1, 1),
        ("B", 2, 2),
        ("A", 1, 1),
    ]


@redis_mark
async def test_the_fenced_journal_on_a_cluster(cluster: ClusterTopology, rc: RedisCluster) -> None:
    leases = AsyncLeases.over(rc)
    by_node: dict[int, int] = {}
    for p in range(16):
        by_node.setdefault(rc.get_node_from_key(KEYS.journal(p)).port, p)
    assert len(by_node) == 3  # one partition on each node
    with trio.fail_after(30):
        for port, p in by_node.items():
            first = [f"p{p}-r{i}".encode() for i in range(5)]
            token = await leases.acquire(p, "A", 60_000)
            assert token == 1
            async with RedisJournal.open(rc, p, "A", token, max_batch_records=2) as j:
                assert j.snapshot_payload is None and list(j.replay()) == []
                j.write_nowait(first)
                await j.sync()
                await j.snapshot(b"S-" + str(p).encode())
                j.write_nowait([b"tail-1", b"tail-2"])
                await j.sync()
                assert j.stats.batches >= 4
            # The records live on the node that holds the partition's slot.
            node = redis.Redis(host="127.0.0.1", port=port)
            try:
                assert node.xlen(KEYS.journal(p)) == 2
                assert node.hget(KEYS.snapshot(p), "payload") == b"S-" + str(p).encode()
            finally:
                node.close()
            again = await leases.acquire(p, "A", 60_000)  # a restart: same name, new token
            assert again == 2
            async with RedisJournal.open(rc, p, "A", again) as j:
                assert j.snapshot_payload == b"S-" + str(p).encode()
                assert list(j.replay()) == [b"tail-1", b"tail-2"]
                j.write_nowait([b"tail-3"])
                await j.sync()
            with pytest.raises(FencedError):
                async with RedisJournal.open(rc, p, "A", token):
                    pass
            async with RedisJournal.open(rc, p, "A", again) as stale:
                assert list(stale.replay()) == [b"tail-1", b"tail-2", b"tail-3"]
                taken = await leases.acquire(p, "A", 60_000)
                assert taken == 3
                stale.write_nowait([b"late"])
                with pytest.raises(FencedError):
                    await stale.sync()
            assert [f[b"r"] for _, f in rc.xrange(KEYS.journal(p))] == [
                b"tail-1",
                b"tail-2",
                b"tail-3",
            ]
