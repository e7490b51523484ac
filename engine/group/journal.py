"""A partition's journal and snapshot in Redis, every write fenced by the partition's lease.

:class:`RedisJournal` has the surface :class:`engine.scheduler.Engine` uses of the disk
:class:`engine.journal.Journal` (``write_nowait``, ``sync``, ``snapshot``, ``snapshot_payload``,
``replay``, ``policy``, ``stats``), so an engine runs one partition on it unchanged. Its state
lives in Redis, where a survivor can take the partition over after the owner dies.

Why it is safe against a stalled owner: each batch is written by one Lua script that first
checks that ``{wd:pN}:lease`` still holds ``"<owner> <token>"``, and only then XADDs the records
to ``{wd:pN}:journal``; a snapshot likewise, in one script that also trims what it covers. The
check and the write are one atomic step on the server, so once the lease has passed (expired,
or granted to another owner with a higher token) no write of the old owner can land, however
late it arrives. A refused write raises :class:`FencedError` and the journal stays failed: the
engine must stop, and only a new acquisition (a new token, a fresh ``open`` that reloads what
the partition holds now) may write again.

Group commit: ``write_nowait`` only queues; one background task writes what has queued, one
script call per batch, while the next batch gathers. ``sync`` returns once everything queued
before it is in Redis. With ``wait_replicas`` it then runs ``WAIT n timeout`` on the writer's
own connection (WAIT counts the writes of the connection it runs on) and raises
:class:`ReplicationError` if fewer replicas acknowledged.

A retried script call never writes a batch twice: each batch carries a marker unique to this
journal instance (token, nonce, sequence) and the script skips a batch whose marker is already
the last one committed, because a duplicated record would replay differently from the live run.
Any other failure of a write is ambiguous (the batch may or may not have landed), so it fails
the journal like a failed fsync fails the disk journal: restart, and reopen from Redis.

On a Redis Cluster every key of a partition shares one hash tag, so one slot and one node: the
journal talks to that node's own client (found once, at open), which is also what lets the
writer pin one connection for ``WAIT``. If the slot moves later, writes fail with ``MOVED`` and
the journal fails like any other write failure; reopening finds the new node.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import redis
import trio
from redis.cluster import RedisCluster

from engine.group.client import AnyClient, check_binary, run_sync
from engine.group.lease import holder
from engine.group.partitions import Keys
from engine.journal import FsyncPolicy, JournalError, JournalFailedError
from engine.journal.journal import Payload

log = logging.getLogger("engine.group.journal")

__all__ = ["FencedError", "RedisJournal", "RedisJournalStats", "ReplicationError"]

FENCED = "FENCED"
"""The error prefix a fenced script returns."""

_CHECK_HOLDER = """
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then
  return redis.error_reply('FENCED lease is ' .. (cur or 'free') .. ', not ' .. ARGV[1])
end
"""

# KEYS[1] lease, KEYS[2] snapshot; ARGV[1] "owner token". The snapshot, if we hold the lease.
LOAD = (
    _CHECK_HOLDER
    + """
return redis.call('HMGET', KEYS[2], 'payload', 'last_id')
"""
)

# KEYS[1] lease, KEYS[2] journal, KEYS[3] commit; ARGV[1] "owner token", ARGV[2] batch marker,
# ARGV[3..] records. A batch already committed (a retried call) only touches the marker again,
# so that WAIT on this connection still covers the batch.
APPEND = (
    _CHECK_HOLDER
    + """
if redis.call('GET', KEYS[3]) == ARGV[2] then
  redis.call('SET', KEYS[3], ARGV[2])
  return 0
end
for i = 3, #ARGV do
  redis.call('XADD', KEYS[2], '*', 'r', ARGV[i])
end
redis.call('SET', KEYS[3], ARGV[2])
return #ARGV - 2
"""
)

# KEYS[1] lease, KEYS[2] journal, KEYS[3] snapshot; ARGV[1] "owner token", ARGV[2] payload,
# ARGV[3] token. The snapshot covers every entry in the stream now: record the last one's id,
# trim the stream through it (MINID keeps that id itself, so XDEL it too), and return it.
SNAPSHOT = (
    _CHECK_HOLDER
    + """
local last = redis.call('HGET', KEYS[3], 'last_id') or '0-0'
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #top > 0 then
  last = top[1][1]
  redis.call('XTRIM', KEYS[2], 'MINID', last)
  redis.call('XDEL', KEYS[2], last)
end
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'payload', ARGV[2], 'last_id', last, 'token', ARGV[3])
return last
"""
)

_PAGE = 5000
"""Journal entries read per XRANGE when loading."""


class FencedError(JournalFailedError):
    """The partition's lease no longer holds our (owner, token): this process lost the
    partition and may never write its state again. Stop, and acquire anew to continue."""


class ReplicationError(JournalError):
    """``WAIT`` saw fewer replicas acknowledge than asked for, in time. The records are on the
    primary (the journal stays usable); whether they survive a failover is not assured."""


@dataclass(frozen=True, slots=True)
class RedisJournalStats:
    """Counters since open. ``batches`` counts script calls that wrote records;
    ``last_batch_latency`` is the wall-clock seconds of the last one."""

    records: int = 0
    bytes: int = 0
    appends: int = 0
    batches: int = 0
    last_batch_latency: float = 0.0
    snapshots: int = 0
    replayed_records: int = 0
    waits: int = 0


class _Records:
    """Records queued together; later ``write_nowait`` calls join it until the writer takes
    it."""

    __slots__ = ("payloads", "seq")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.payloads: list[bytes] = []


class _Snapshot:
    __slots__ = ("payload", "seq")

    def __init__(self, seq: int, payload: bytes) -> None:
        self.seq = seq
        self.payload = payload


class _WaitRound:
    """The syncs one ``WAIT`` answers."""

    __slots__ = ("acked", "done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.acked = 0
        self.error: BaseException | None = None


class RedisJournal:
    """One partition's fenced journal in Redis. Use :meth:`RedisJournal.open`."""

    def __init__(
        self,
        client: redis.Redis,
        writer: redis.Redis,
        *,
        keys: Keys,
        partition: int,
        owner: str,
        token: int,
        policy: FsyncPolicy,
        wait_replicas: int,
        wait_timeout_ms: int,
        max_batch_records: int,
        max_batch_bytes: int,
        snapshot_payload: bytes | None,
        snapshot_last_id: str | None,
        records: list[bytes],
    ) -> None:
        self.keys = keys
        self.partition = partition
        self.owner = owner
        self.token = token
        self.snapshot_payload: bytes | None = snapshot_payload
        self.snapshot_last_id = snapshot_last_id
        """The id of the last journal entry the loaded snapshot covers (None: no snapshot)."""
        self._client = client
        self._writer = writer
        self._holder = holder(owner, token)
        self._policy = policy
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._max_records = max_batch_records
        self._max_bytes = max_batch_bytes
        self._records: list[bytes] | None = records
        self._stats = RedisJournalStats(replayed_records=len(records))
        self._append = writer.register_script(APPEND)
        self._snapshot = writer.register_script(SNAPSHOT)
        self._nonce = secrets.token_hex(6)
        self._batch_seq = 0
        self._ops: deque[_Records | _Snapshot] = deque()
        self._queued = 0  # sequence number of the newest op
        self._done = 0  # sequence number of the newest op written
        self._wake = trio.Event()
        self._progress = trio.Event()
        self._round: _WaitRound | None = None
        self._failure: tuple[type[JournalFailedError], str, BaseException] | None = None
        self._closed = False
        self._last_start = -float("inf")

    # -- opening and closing ------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        client: AnyClient,
        partition: int,
        owner: str,
        token: int,
        *,
        keys: Keys | None = None,
        policy: FsyncPolicy | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        max_batch_records: int = 1000,
        max_batch_bytes: int = 1 << 20,
    ) -> AsyncIterator[RedisJournal]:
        """Check the lease holds (owner, token), load the snapshot and the records after it,
        and yield the journal with its writer running.

        ``client`` must not decode replies (see :func:`engine.group.client.connect`); the
        writer takes one connection of its pool for itself, for ``WAIT``'s sake (on a
        ``RedisCluster``, of the pool of the node that holds the partition's slot). ``policy``
        is ``always`` by default (``sync`` waits for Redis); ``interval`` spaces batches at
        least ``interval_ms`` apart (bigger batches); ``none`` lets the engine acknowledge
        intake without waiting for Redis. ``WAIT`` blocks the writer's connection: keep
        ``wait_timeout_ms`` below the client's ``socket_timeout``. A batch holds at most
        ``max_batch_records`` records and about ``max_batch_bytes`` (a Lua script blocks
        Redis while it runs). On exit, everything queued is written first, unless the
        journal failed.
        """
        check_binary(client)
        if wait_replicas < 0 or (wait_replicas and wait_timeout_ms < 1):
            raise ValueError("wait_replicas must be >= 0, and WAIT needs a timeout >= 1 ms")
        if max_batch_records < 1 or max_batch_bytes < 1:
            raise ValueError("batches must allow at least one record")
        keys = keys if keys is not None else Keys()
        node = await run_sync(_partition_client, client, keys.journal(partition))
        payload, last_id, records = await run_sync(
            _load, node, keys, partition, holder(owner, token)
        )
        writer = await run_sync(_single_connection, node)
        try:
            journal = cls(
                node,
                writer,
                keys=keys,
                partition=partition,
                owner=owner,
                token=token,
                policy=policy if policy is not None else FsyncPolicy.always(),
                wait_replicas=wait_replicas,
                wait_timeout_ms=wait_timeout_ms,
                max_batch_records=max_batch_records,
                max_batch_bytes=max_batch_bytes,
                snapshot_payload=payload,
                snapshot_last_id=last_id,
                records=records,
            )
            ok = False
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(journal._write_loop)
                    try:
                        yield journal
                        ok = True
                    finally:
                        with trio.CancelScope(shield=True):
                            await journal._shutdown(raise_errors=ok)
                        nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                # The writer task never raises, so a group holds what the body (or the final
                # sync) raised: hand that on as itself, so `except JournalError` works.
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from None
                raise
        finally:
            with trio.CancelScope(shield=True):
                await run_sync(writer.close)

    async def _shutdown(self, *, raise_errors: bool) -> None:
        try:
            if self._failure is None and not self._closed:
                await self.sync()
        except BaseException:
            if raise_errors:
                raise
            log.exception("redis journal %s: final sync failed", self.keys.journal(self.partition))
        finally:
            self._closed = True

    # -- reading ------------------------------------------------------------------------------

    def replay(self) -> Iterator[bytes]:
        """The records after ``snapshot_payload`` at open, in order. For start-up only: a
        ``snapshot()`` releases them."""
        if self._records is None:
            raise JournalError("replay() after snapshot(): the records are superseded")
        return iter(self._records)

    @property
    def policy(self) -> FsyncPolicy:
        return self._policy

    @property
    def stats(self) -> RedisJournalStats:
        return self._stats

    @property
    def failed(self) -> bool:
        """True once a write was refused or failed; every later call raises."""
        return self._failure is not None

    # -- writing ------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failure is not None:
            cls, message, cause = self._failure
            raise cls(message) from cause
        if self._closed:
            raise JournalError("journal is closed")

    def write_nowait(self, payloads: Iterable[Payload]) -> None:
        """Queue records in order, without waiting (no checkpoint); :meth:`sync` waits."""
        self._check_usable()
        batch = [bytes(p) for p in payloads]
        if not batch:
            return
        tail = self._ops[-1] if self._ops else None
        if not isinstance(tail, _Records):
            self._queued += 1
            tail = _Records(self._queued)
            self._ops.append(tail)
        size = sum(len(p) for p in batch)
        tail.payloads.extend(batch)
        s = self._stats
        self._stats = replace(
            s, records=s.records + len(batch), bytes=s.bytes + size, appends=s.appends + 1
        )
        self._wake.set()

    async def sync(self) -> None:
        """Return once every record queued before this call is in Redis (and, with
        ``wait_replicas``, acknowledged by that many replicas). Raises :class:`FencedError`
        if the lease passed, :class:`JournalFailedError` if a write failed."""
        self._check_usable()
        await self._written(self._queued)
        await self._replicated()

    async def snapshot(self, payload: Payload) -> None:
        """Install ``payload`` as the state covering every record queued before this call, and
        trim those records from the stream (one fenced script)."""
        self._check_usable()
        self._queued += 1
        op = _Snapshot(self._queued, bytes(payload))
        self._ops.append(op)
        self._records = None
        self._wake.set()
        await self._written(op.seq)
        self._stats = replace(self._stats, snapshots=self._stats.snapshots + 1)
        await self._replicated()

    async def _written(self, seq: int) -> None:
        while self._done < seq:
            self._check_usable()
            await self._progress.wait()
        await trio.lowlevel.checkpoint()

    async def _replicated(self) -> None:
        if self._wait_replicas == 0:
            return
        self._check_usable()  # a failed writer has stopped: nobody would answer the round
        rnd = self._round
        if rnd is None:
            rnd = self._round = _WaitRound()
            self._wake.set()
        await rnd.done.wait()
        if rnd.error is not None:
            self._check_usable()
            raise JournalError(f"WAIT failed: {rnd.error}") from rnd.error
        if rnd.acked < self._wait_replicas:
            raise ReplicationError(
                f"{rnd.acked} of {self._wait_replicas} replicas acknowledged within "
                f"{self._wait_timeout_ms} ms"
            )

    # -- the writer task ----------------------------------------------------------------------

    async def _write_loop(self) -> None:
        try:
            await self._write_forever()
        finally:
            # Cancelled (the partition's cancel scope, when a hand-back overran): whoever
            # waits in sync() or the final sync at close must hear that nothing more will be
            # written, or the shielded final sync waits forever.
            if self._failure is None and not self._closed:
                where = f"partition {self.partition} ({self.owner}, token {self.token})"
                message = f"{where}: the journal writer stopped"
                stopped = RuntimeError(message)
                self._failure = (JournalFailedError, message, stopped)
                self._notify()
                rnd, self._round = self._round, None
                if rnd is not None:
                    rnd.error = stopped
                    rnd.done.set()

    async def _write_forever(self) -> None:
        while True:
            if self._round is not None:
                await self._run_wait()
                continue
            if not self._ops:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            if self._policy.mode == "interval":
                await trio.sleep_until(self._last_start + self._policy.interval_ms / 1000)
            else:
                # One scheduling round, so records queued by tasks just woken join this batch.
                await trio.lowlevel.checkpoint()
            self._last_start = trio.current_time()
            op = self._ops.popleft()
            try:
                if isinstance(op, _Records):
                    for chunk in self._chunks(op.payloads):
                        await self._write_batch(chunk)
                else:
                    await run_sync(self._write_snapshot, op.payload)
            except Exception as exc:
                self._fail(exc)
                return
            self._done = op.seq
            self._notify()

    def _chunks(self, payloads: list[bytes]) -> Iterator[list[bytes]]:
        chunk: list[bytes] = []
        size = 0
        for p in payloads:
            if chunk and (len(chunk) >= self._max_records or size + len(p) > self._max_bytes):
                yield chunk
                chunk, size = [], 0
            chunk.append(p)
            size += len(p)
        if chunk:
            yield chunk

    async def _write_batch(self, chunk: list[bytes]) -> None:
        self._batch_seq += 1
        marker = f"{self.token}:{self._nonce}:{self._batch_seq}"
        start = time.perf_counter()
        await run_sync(self._write_records, marker, chunk)
        s = self._stats
        self._stats = replace(
            s, batches=s.batches + 1, last_batch_latency=time.perf_counter() - start
        )

    def _write_records(self, marker: str, chunk: list[bytes]) -> None:
        k, p = self.keys, self.partition
        self._append(
            keys=[k.lease(p), k.journal(p), k.commit(p)],
            args=[self._holder, marker, *chunk],
            client=self._writer,
        )

    def _write_snapshot(self, payload: bytes) -> None:
        k, p = self.keys, self.partition
        self._snapshot(
            keys=[k.lease(p), k.journal(p), k.snapshot(p)],
            args=[self._holder, payload, self.token],
            client=self._writer,
        )

    async def _run_wait(self) -> None:
        rnd, self._round = self._round, None
        assert rnd is not None
        try:
            acked = await run_sync(
                self._writer.execute_command, "WAIT", self._wait_replicas, self._wait_timeout_ms
            )
            rnd.acked = int(acked)
            self._stats = replace(self._stats, waits=self._stats.waits + 1)
        except Exception as exc:
            rnd.error = exc
        rnd.done.set()

    def _fail(self, exc: Exception) -> None:
        where = f"partition {self.partition} ({self.owner}, token {self.token})"
        if isinstance(exc, redis.ResponseError) and str(exc).startswith(FENCED):
            self._failure = (FencedError, f"{where} is fenced: {exc}", exc)
            log.error("redis journal: %s is fenced; it may not write again", where)
        else:
            message = f"{where}: a journal write failed ({type(exc).__name__}: {exc})"
            self._failure = (JournalFailedError, message, exc)
            log.error("redis journal: %s", message)
        self._notify()
        rnd, self._round = self._round, None
        if rnd is not None:
            rnd.error = exc
            rnd.done.set()

    def _notify(self) -> None:
        progress, self._progress = self._progress, trio.Event()
        progress.set()


def _partition_client(client: AnyClient, key: str) -> redis.Redis:
    """The ``redis.Redis`` that serves ``key``: ``client`` itself, or on a ``RedisCluster``
    the client of the node holding the key's slot (a partition's keys share that slot)."""
    if isinstance(client, RedisCluster):
        return client.get_redis_connection(client.get_node_from_key(key))
    return client


def _single_connection(client: redis.Redis) -> redis.Redis:
    """A client pinned to one connection of ``client``'s pool (released by ``close``)."""
    return redis.Redis(connection_pool=client.connection_pool, single_connection_client=True)


def _load(
    client: redis.Redis, keys: Keys, partition: int, holder_value: str
) -> tuple[bytes | None, str | None, list[bytes]]:
    """The snapshot (if any), the id it covers through, and every record after it."""
    try:
        payload, last_id = client.register_script(LOAD)(
            keys=[keys.lease(partition), keys.snapshot(partition)], args=[holder_value]
        )
    except redis.ResponseError as exc:
        if str(exc).startswith(FENCED):
            raise FencedError(f"partition {partition}: cannot open, {exc}") from exc
        raise
    # The snapshot script trims atomically, so the stream holds exactly the later records.
    stream = keys.journal(partition)
    records: list[bytes] = []
    start = "-"
    while True:
        page: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(  # binary client
            stream, start, "+", count=_PAGE
        )  # type: ignore[assignment]  # redis-py types replies as bytes | str | None
        for entry_id, fields in page:
            record = fields.get(b"r")
            if record is None:
                raise JournalError(f"{stream} entry {entry_id!r} has no record field")
            records.append(record)
        if len(page) < _PAGE:
            break
        start = "(" + page[-1][0].decode()
    return payload, last_id.decode() if last_id is not None else None, records
