"""The few Redis Streams commands the transport needs, behind one small async interface,
with two implementations: redis-py's sync client on worker threads (the default: already a
dependency, and as fast where it matters, see benchmarks/RESULTS.md "Transports") and coredis
(native on trio; optional, imported only when asked for, kept for comparison).

Why an interface of our own: the transport's delivery guarantees (what happens on cancel,
on restart, on a claim) are written once, above it, and both clients are measured through the
same code (``benchmarks/transport.py``).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, NamedTuple, Protocol, TypeVar, TypeVarTuple

import trio

from engine.errors import WarnDispatchError

Entry = tuple[str, dict[bytes, bytes] | None]
"""A stream entry: its id and its fields (None if the entry was deleted while pending)."""

ClientName = Literal["coredis", "redis-py"]


class PendingEntry(NamedTuple):
    """One entry of a group's pending list, as extended ``XPENDING`` reports it: who holds it,
    for how long since its last delivery, and how often it was delivered (poison detection)."""

    id: str
    consumer: str
    idle_ms: int
    times_delivered: int


T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class StreamClient(Protocol):
    """The stream commands, async, cancellation-safe: a cancelled call has either not taken
    anything from the server, or what it took stays in this consumer's pending list."""

    name: ClientName

    async def create_group(self, stream: str, group: str) -> bool:
        """XGROUP CREATE ... 0 MKSTREAM; False if the group already existed."""
        ...

    async def read_group(
        self, stream: str, group: str, consumer: str, start: str, count: int, block_ms: int | None
    ) -> list[Entry]: ...

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int: ...

    async def autoclaim(
        self, stream: str, group: str, consumer: str, min_idle_ms: int, start: str, count: int
    ) -> tuple[str, list[Entry], list[str]]:
        """(next cursor, claimed entries, ids that were pending but are gone from the stream)."""
        ...

    async def pending(self, stream: str, group: str, ids: Sequence[str]) -> list[PendingEntry]:
        """Extended XPENDING for exactly ``ids`` (``XPENDING stream group id id 1`` each, in one
        pipelined round trip), in the order given; an id no longer pending is left out."""
        ...

    async def pending_range(
        self,
        stream: str,
        group: str,
        start: str,
        count: int,
        *,
        consumer: str | None = None,
        min_idle_ms: int | None = None,
    ) -> list[PendingEntry]:
        """``XPENDING stream group [IDLE min_idle_ms] start + count [consumer]``: the pending
        list as it is *before* a read or a claim resets who holds an entry and its idle time."""
        ...

    async def add_many(
        self, stream: str, entries: Sequence[Mapping[str, bytes]], maxlen: int | None
    ) -> list[str]:
        """Pipelined XADD (no transaction), ``MAXLEN ~ maxlen`` if given."""
        ...

    async def add_and_ack(
        self,
        stream: str,
        fields: Mapping[str, bytes],
        maxlen: int | None,
        ack_stream: str,
        group: str,
        ack_id: str,
    ) -> None:
        """MULTI; XADD stream fields; XACK ack_stream group ack_id; EXEC (dead-lettering)."""
        ...


COMMAND_TIMEOUT_S = 10.0
"""How long a Redis command may take (beyond its BLOCK time) before we give up on it."""


class RedisCommandTimeout(WarnDispatchError, TimeoutError):
    """Redis did not answer within :data:`COMMAND_TIMEOUT_S`."""


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


async def _sliced(
    read: Callable[[int], Awaitable[list[Entry]]], block_ms: int, slice_ms: int
) -> list[Entry]:
    """A BLOCK of ``block_ms`` as uncancellable reads of at most ``slice_ms`` each, with a trio
    checkpoint between them: a cancel waits for at most one slice, and is only delivered after
    an empty slice, so an entry the server hands us is always returned, never dropped."""
    deadline = trio.current_time() + block_ms / 1000
    while True:
        left_ms = (deadline - trio.current_time()) * 1000
        got = await read(max(1, min(slice_ms, math.ceil(left_ms))))  # BLOCK 0 means forever
        if got or trio.current_time() >= deadline:
            return got
        await trio.lowlevel.checkpoint()


# --- coredis ------------------------------------------------------------------------------


class CoredisClient:
    """coredis on trio (via anyio).

    coredis itself cancels cleanly (a cancelled command drops its connection), but measured
    here, cancelling a command while coredis is opening the replacement connection leaks anyio
    streams and logs "Connection attempt failed", and every cancel costs a reconnect. So, as
    with redis-py, a command is never cancelled mid-flight: each runs shielded (bounded by
    :data:`COMMAND_TIMEOUT_S`), blocking reads are sliced into ``slice_ms`` BLOCKs, and a
    cancel is delivered between commands.
    """

    name: ClientName = "coredis"

    def __init__(self, client: object, *, slice_ms: int = 100) -> None:
        import coredis

        self._coredis = coredis
        self._client: coredis.Redis[bytes] = client  # type: ignore[assignment]
        self.slice_ms = slice_ms

    async def _run(self, fn: Callable[[], Awaitable[T]], block_ms: int = 0) -> T:
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + COMMAND_TIMEOUT_S + block_ms / 1000
            return await fn()
        raise RedisCommandTimeout(f"redis did not answer within {COMMAND_TIMEOUT_S:g} s")

    @classmethod
    @asynccontextmanager
    async def open(
        cls, host: str, port: int, db: int = 0, *, slice_ms: int = 100
    ) -> AsyncIterator[CoredisClient]:
        """coredis runs a task group inside the client, so it must be entered and left by one
        ``async with`` in one task (entering it by hand breaks trio's nursery; TOOLCHAIN.md)."""
        import coredis

        async with coredis.Redis(host=host, port=port, db=db, decode_responses=False) as c:
            yield cls(c, slice_ms=slice_ms)

    async def create_group(self, stream: str, group: str) -> bool:
        try:
            await self._run(
                lambda: self._client.xgroup_create(stream, group, identifier="0", mkstream=True)
            )
        except self._coredis.exceptions.StreamDuplicateConsumerGroupError:
            return False
        return True

    @staticmethod
    def _entries(raw: object) -> list[Entry]:
        return [(_s(e.identifier), dict(e.field_values) if e.field_values else None) for e in raw]  # type: ignore[attr-defined]

    async def read_group(
        self, stream: str, group: str, consumer: str, start: str, count: int, block_ms: int | None
    ) -> list[Entry]:
        async def op(block: int | None) -> list[Entry]:
            res = await self._client.xreadgroup(
                group, consumer, {stream: start}, count=count, block=block
            )
            out: list[Entry] = []
            for entries in (res or {}).values():
                out.extend(self._entries(entries))
            return out

        if block_ms is None:
            return await self._run(lambda: op(None))
        return await _sliced(lambda b: self._run(lambda: op(b), b), block_ms, self.slice_ms)

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        return int(await self._run(lambda: self._client.xack(stream, group, list(ids))))

    async def autoclaim(
        self, stream: str, group: str, consumer: str, min_idle_ms: int, start: str, count: int
    ) -> tuple[str, list[Entry], list[str]]:
        res = await self._run(
            lambda: self._client.xautoclaim(stream, group, consumer, min_idle_ms, start, count)
        )
        cursor, entries = res[0], res[1]
        deleted = [_s(i) for i in res[2]] if len(res) > 2 else []
        return _s(cursor), self._entries(entries), deleted

    @staticmethod
    def _pending(rows: object) -> list[PendingEntry]:
        return [
            PendingEntry(_s(r.identifier), _s(r.consumer), int(r.idle), int(r.delivered))
            for r in rows or ()  # type: ignore[attr-defined]
        ]

    async def pending(self, stream: str, group: str, ids: Sequence[str]) -> list[PendingEntry]:
        async def op() -> list[PendingEntry]:
            async with self._client.pipeline(transaction=False) as pipe:
                reqs = [pipe.xpending(stream, group, i, i, 1) for i in ids]
            return [p for r in reqs for p in self._pending(await r)]

        if not ids:
            await trio.lowlevel.checkpoint()
            return []
        return await self._run(op)

    async def pending_range(
        self,
        stream: str,
        group: str,
        start: str,
        count: int,
        *,
        consumer: str | None = None,
        min_idle_ms: int | None = None,
    ) -> list[PendingEntry]:
        rows = await self._run(
            lambda: self._client.xpending(
                stream, group, start, "+", count, idle=min_idle_ms, consumer=consumer
            )
        )
        return self._pending(rows)

    def _trim(self, maxlen: int | None) -> dict[str, object]:
        if maxlen is None:
            return {}
        pt = self._coredis.PureToken
        return {
            "trim_strategy": pt.MAXLEN,
            "threshold": maxlen,
            "trim_operator": pt.APPROXIMATELY,
        }

    async def add_many(
        self, stream: str, entries: Sequence[Mapping[str, bytes]], maxlen: int | None
    ) -> list[str]:
        trim = self._trim(maxlen)

        async def op() -> list[str]:
            async with self._client.pipeline(transaction=False) as pipe:
                reqs = [pipe.xadd(stream, dict(fields), **trim) for fields in entries]  # type: ignore[arg-type]
            return [_s(await r) for r in reqs]  # type: ignore[arg-type]

        return await self._run(op)

    async def add_and_ack(
        self,
        stream: str,
        fields: Mapping[str, bytes],
        maxlen: int | None,
        ack_stream: str,
        group: str,
        ack_id: str,
    ) -> None:
        async def op() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xadd(stream, dict(fields), **self._trim(maxlen))  # type: ignore[arg-type]
                pipe.xack(ack_stream, group, [ack_id])

        await self._run(op)


# --- redis-py on threads --------------------------------------------------------------------


class RedisPyClient:
    """redis-py's sync client on trio worker threads.

    The hazard (TOOLCHAIN.md): a thread abandoned while blocked in XREADGROUP still takes the
    next message into our pending list. So threads are never abandoned
    (``abandon_on_cancel=False``) and a long BLOCK is cut into ``slice_ms`` slices with a trio
    checkpoint between them: a cancel waits at most one slice, and whatever the slice returned
    is handed back (trio delivers the cancel at the next checkpoint, after we have it).
    """

    name: ClientName = "redis-py"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        db: int = 0,
        *,
        slice_ms: int = 100,
        client: Any = None,
    ) -> None:
        import redis
        import redis.cluster

        self._redis = redis
        self._client = client or redis.Redis(
            host=host, port=port, db=db, max_connections=64, socket_timeout=COMMAND_TIMEOUT_S
        )
        # Redis Cluster refuses MULTI over keys of different slots: there a dead letter is
        # stored, then acked (a crash between the two repeats the dead letter, loses nothing).
        self._atomic = not isinstance(self._client, redis.cluster.RedisCluster)
        self.slice_ms = slice_ms

    @classmethod
    def over(cls, client: Any, *, slice_ms: int = 100) -> RedisPyClient:
        """Streams over a client made elsewhere (Sentinel, Cluster: see
        :func:`engine.group.client.connect`); its owner closes it."""
        return cls(client=client, slice_ms=slice_ms)

    @classmethod
    @asynccontextmanager
    async def open(
        cls, host: str, port: int, db: int = 0, *, slice_ms: int = 100
    ) -> AsyncIterator[RedisPyClient]:
        self = cls(host, port, db, slice_ms=slice_ms)
        try:
            await self._run(self._client.ping)
            yield self
        finally:
            with trio.CancelScope(shield=True):
                await self._run(self._client.close)

    @staticmethod
    async def _run(fn: Callable[[*Ts], T], *args: *Ts) -> T:
        return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=False)

    async def create_group(self, stream: str, group: str) -> bool:
        try:
            await self._run(lambda: self._client.xgroup_create(stream, group, "0", mkstream=True))
        except self._redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    @staticmethod
    def _entries(raw: object) -> list[Entry]:
        return [(_s(i), dict(f) if f else None) for i, f in raw]  # type: ignore[attr-defined]

    async def read_group(
        self, stream: str, group: str, consumer: str, start: str, count: int, block_ms: int | None
    ) -> list[Entry]:
        def op(block: int | None) -> list[Entry]:
            res = self._client.xreadgroup(group, consumer, {stream: start}, count, block)
            if isinstance(res, dict):  # {stream: entries}: RESP3 or legacy_responses=False
                batches = list(res.values())
            else:  # [[stream, entries], ...], what this client (RESP2, legacy replies) gets
                batches = [entries for _name, entries in res or ()]
            out: list[Entry] = []
            for entries in batches:
                out.extend(self._entries(entries))
            return out

        if block_ms is None:
            return await self._run(op, None)
        return await _sliced(lambda b: self._run(op, b), block_ms, self.slice_ms)

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        return int(await self._run(lambda: self._client.xack(stream, group, *ids)))

    async def autoclaim(
        self, stream: str, group: str, consumer: str, min_idle_ms: int, start: str, count: int
    ) -> tuple[str, list[Entry], list[str]]:
        def op() -> object:
            # redis-py's high-level xautoclaim drops the list of deleted ids (Redis 7 reply).
            return self._client.execute_command(
                "XAUTOCLAIM", stream, group, consumer, min_idle_ms, start, "COUNT", count
            )

        res = await self._run(op)
        cursor, entries = res[0], res[1]  # type: ignore[index]
        deleted = [_s(i) for i in res[2]] if len(res) > 2 else []  # type: ignore[arg-type, index]
        claimed: list[Entry] = []
        for item in entries:
            eid, flat = item[0], item[1]
            if isinstance(flat, dict) or not flat:
                fields = dict(flat) if flat else None
            else:
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
            claimed.append((_s(eid), fields))
        return _s(cursor), claimed, deleted

    @staticmethod
    def _pending(rows: object) -> list[PendingEntry]:
        return [
            PendingEntry(
                _s(r["message_id"]),
                _s(r["consumer"]),
                int(r["time_since_delivered"]),
                int(r["times_delivered"]),
            )
            for r in rows or ()  # type: ignore[attr-defined]
        ]

    async def pending(self, stream: str, group: str, ids: Sequence[str]) -> list[PendingEntry]:
        def op() -> list[object]:
            pipe = self._client.pipeline(transaction=False)
            for i in ids:
                pipe.xpending_range(stream, group, i, i, 1)
            return pipe.execute()

        if not ids:
            await trio.lowlevel.checkpoint()
            return []
        return [p for rows in await self._run(op) for p in self._pending(rows)]

    async def pending_range(
        self,
        stream: str,
        group: str,
        start: str,
        count: int,
        *,
        consumer: str | None = None,
        min_idle_ms: int | None = None,
    ) -> list[PendingEntry]:
        rows = await self._run(
            lambda: self._client.xpending_range(
                stream, group, start, "+", count, consumername=consumer, idle=min_idle_ms
            )
        )
        return self._pending(rows)

    async def add_many(
        self, stream: str, entries: Sequence[Mapping[str, bytes]], maxlen: int | None
    ) -> list[str]:
        def op() -> list[bytes]:  # the new ids (replies are not decoded)
            pipe = self._client.pipeline(transaction=False)
            for fields in entries:
                pipe.xadd(stream, dict(fields), maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
            return pipe.execute()

        return [_s(i) for i in await self._run(op)]

    async def add_and_ack(
        self,
        stream: str,
        fields: Mapping[str, bytes],
        maxlen: int | None,
        ack_stream: str,
        group: str,
        ack_id: str,
    ) -> None:
        def op() -> None:
            pipe = self._client.pipeline(transaction=self._atomic)
            pipe.xadd(stream, dict(fields), maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
            pipe.xack(ack_stream, group, ack_id)
            pipe.execute()

        await self._run(op)


@asynccontextmanager
async def open_client(
    client: ClientName = "redis-py", host: str = "127.0.0.1", port: int = 6379, db: int = 0
) -> AsyncIterator[StreamClient]:
    """A connected client of the named kind, closed when the block is left."""
    if client == "coredis":
        async with CoredisClient.open(host, port, db) as c:
            yield c
    else:
        async with RedisPyClient.open(host, port, db) as r:
            yield r
