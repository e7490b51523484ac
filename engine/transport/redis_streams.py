"""Redis Streams: intake and feedback through consumer groups, actions to an outbox stream.

Guarantees, and how they are kept:

- **Ack after durability.** Entries are read with ``XREADGROUP`` into this consumer's pending
  list (PEL) and only ``XACK``-ed when the engine calls :meth:`RedisStreamSource.ack`, after
  its journal has them. A crash before that leaves them pending.
- **Restart.** On start the source first re-reads its *own* PEL (``XREADGROUP ... 0``): with a
  stable consumer name a restarted engine gets its unacked entries back at once. Then it
  ``XAUTOCLAIM``-s entries of any consumer pending longer than ``claim_idle_s`` (a dead
  engine's work), and repeats that every ``claim_every_s``.
- **Poison entries.** Both of those paths raise an entry's delivery count, so a message that
  crashes or stalls the engine would come back at every restart. Before handing such entries
  out the source asks ``XPENDING`` (one pipelined call for exactly those ids) how often each
  was delivered; one delivered more than ``max_deliveries`` times goes to the dead-letter
  stream with its history (count, last holder, idle time) and is ``XACK``-ed instead.
- **Clean cancellation.** Whatever the server delivered to us but we did not return (a read
  cancelled in flight, a batch interrupted half way) is, by Redis' rules, in our PEL; any
  exception inside ``receive_batch`` therefore schedules a PEL rescan before the next read.
  Entries already handed out and not acked are remembered (``outstanding``) and skipped by
  rescans and claims, so nothing is handed out twice by one source.
- **Dead letters.** ``XADD wd:dead {reason, raw, source_id, stream, consumer, at}`` and the
  ``XACK`` run in one ``MULTI``/``EXEC``: a dead letter is never acked without being stored.
  A retired poison entry adds ``times_delivered``, ``last_consumer`` and ``idle_ms`` (who held
  it before this source took it back, and for how long since its last delivery).
- **Outbox.** One pipelined ``XADD wd:outbox {key, action}`` per action (optionally
  ``MAXLEN ~``); at-least-once, and a repeat carries the same ``key``.

Logs carry entry ids, stream names and reasons, never payloads (they hold phone numbers).
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import trio

from engine.model import Action
from engine.transport.base import ActionEncoding, DeadLetter, Delivery, encode_action
from engine.transport.redis_clients import (
    ClientName,
    Entry,
    PendingEntry,
    StreamClient,
    open_client,
)

log = logging.getLogger("engine.transport.redis")

DEFAULT_GROUP = "wd-engine"


class StreamNames(msgspec.Struct, frozen=True, kw_only=True):
    """Stream keys; override per deployment (a shard's prefix, a test's namespace)."""

    intake: str = "wd:intake"
    feedback: str = "wd:feedback"
    campaigns: str = "wd:campaigns"
    outbox: str = "wd:outbox"
    dead: str = "wd:dead"


class SourceOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Tuning of a stream source. Times in seconds.

    ``block_s``: longest single ``XREADGROUP BLOCK`` (a wait for new entries is a loop of these).
    ``claim_idle_s``: an entry pending this long belongs to a dead consumer and is claimed.
    ``payload_field``: the entry field holding the raw message (producers ``XADD s raw <json>``).
    ``max_deliveries``: an entry taken back (own backlog at start, or claimed) that Redis has
    delivered more than this many times without an ack is retired to the dead-letter stream
    instead of handed out: it is what crashed or stalled the engine each time (at least 1).
    """

    group: str = DEFAULT_GROUP
    consumer: str = ""
    batch_size: int = 512
    block_s: float = 2.0
    claim_idle_s: float = 60.0
    claim_every_s: float = 30.0
    payload_field: str = "raw"
    dead_maxlen: int | None = 1_000_000
    max_deliveries: int = 5

    def __post_init__(self) -> None:
        if self.max_deliveries < 1:
            raise ValueError(f"max_deliveries must be at least 1, not {self.max_deliveries}")


def default_consumer() -> str:
    """The host name: stable across restarts, so a restarted engine finds its own pending
    entries at once. Run two engines on one host? Give each its own ``consumer``."""
    return socket.gethostname() or "engine"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class RedisStreamSource:
    """An :class:`~engine.transport.base.IntakeSource` over one stream and consumer group.

    Use :meth:`open` (creates the group with ``MKSTREAM`` if missing, from id 0 so entries
    written before the group existed are read too). Used for intake and for feedback alike.
    """

    def __init__(
        self,
        client: StreamClient,
        stream: str,
        dead_stream: str,
        options: SourceOptions | None = None,
    ) -> None:
        self.options = opts = options or SourceOptions()
        self.client = client
        self.stream = stream
        self.dead_stream = dead_stream
        self.consumer = opts.consumer or default_consumer()
        self.name = f"redis:{stream}"
        self.outstanding: set[str] = set()
        """Handed out, not acked yet (skipped by rescans and claims)."""
        self._field = opts.payload_field.encode()
        self._rescan = True  # read our own PEL first: entries a previous run never acked
        self._pel_cursor = "0"
        self._next_claim = -math.inf
        self._claim_cursor = "0-0"
        self.claimed = 0
        """Entries taken over from other consumers by XAUTOCLAIM (a health signal)."""
        self.retired = 0
        self.dead_lettered = 0
        """Entries this source dead-lettered on its own (no payload, retired as poison), which
        the engine never saw; a service adds them to its count of dead letters."""
        """Poison entries (delivered more than ``max_deliveries`` times) dead-lettered."""

    @classmethod
    async def open(
        cls,
        client: StreamClient,
        stream: str,
        dead_stream: str = "wd:dead",
        options: SourceOptions | None = None,
    ) -> RedisStreamSource:
        self = cls(client, stream, dead_stream, options)
        if await client.create_group(stream, self.options.group):
            log.info("created consumer group %s on %s", self.options.group, stream)
        return self

    async def receive_batch(self) -> list[Delivery]:
        """The next batch: own unacked entries after a restart or cancel, then claimed ones,
        then new ones (blocking). Never raises ``EndOfChannel``: a stream does not end."""
        try:
            while True:
                batch = await self._step()
                if batch:
                    return batch
        except BaseException:
            # Anything the server gave us that we did not return is in our PEL: rescan it.
            self._rescan, self._pel_cursor = True, "0"
            raise

    async def _step(self) -> list[Delivery]:
        opts, client = self.options, self.client
        if self._rescan:
            # The same page of our PEL as the read below, taken first: the read resets idle time.
            held = await client.pending_range(
                self.stream,
                opts.group,
                f"({self._pel_cursor}",
                opts.batch_size,
                consumer=self.consumer,
            )
            entries = await client.read_group(
                self.stream, opts.group, self.consumer, self._pel_cursor, opts.batch_size, None
            )
            if not entries:
                self._rescan = False
                return []
            self._pel_cursor = entries[-1][0]
            return await self._accept(entries, redelivered=True, held=held)
        now = trio.current_time()
        if now >= self._next_claim:
            idle_ms = int(opts.claim_idle_s * 1000)
            # What XAUTOCLAIM is about to take, with its holder: after the claim it is ours.
            held = await client.pending_range(
                self.stream, opts.group, self._claim_cursor, opts.batch_size, min_idle_ms=idle_ms
            )
            cursor, entries, deleted = await client.autoclaim(
                self.stream,
                opts.group,
                self.consumer,
                idle_ms,
                self._claim_cursor,
                opts.batch_size,
            )
            if deleted:
                log.warning(
                    "%d pending entries of %s were deleted before ack", len(deleted), self.stream
                )
            self._claim_cursor = cursor
            if cursor in ("0-0", "0"):  # a full pass: rest until the next one
                self._next_claim = now + opts.claim_every_s
            batch = await self._accept(entries, redelivered=True, held=held)
            if batch:
                self.claimed += len(batch)
                log.info("claimed %d idle entries of %s", len(batch), self.stream)
            return batch
        block_ms = max(1, min(int(opts.block_s * 1000), math.ceil((self._next_claim - now) * 1000)))
        entries = await client.read_group(
            self.stream, opts.group, self.consumer, ">", opts.batch_size, block_ms
        )
        return await self._accept(entries, redelivered=False)

    async def _accept(
        self, entries: list[Entry], *, redelivered: bool, held: Sequence[PendingEntry] = ()
    ) -> list[Delivery]:
        """Entries read or claimed, as deliveries; vanished ones acked, malformed and poison
        ones dead-lettered. Shielded (each command is bounded): a cancel between these commands
        would make a rescan read the entries again and count one more delivery for nothing."""
        with trio.CancelScope(shield=True):
            out: list[Delivery] = []
            for eid, fields in entries:
                if eid in self.outstanding:
                    continue
                if fields is None:  # trimmed or XDEL-ed while pending: nothing left to process
                    log.warning(
                        "entry %s of %s vanished while pending; acking it", eid, self.stream
                    )
                    await self.client.ack(self.stream, self.options.group, [eid])
                    continue
                raw = fields.get(self._field)
                if raw is None:
                    names = sorted(k.decode(errors="replace") for k in fields)
                    reason = f"entry has no {self.options.payload_field!r} field (fields: {names})"
                    await self._store_dead(eid, msgspec.json.encode(fields_as_text(fields)), reason)
                    self.dead_lettered += 1
                    continue
                out.append(Delivery(eid, bytes(raw), self.name, redelivered))
            if redelivered and out:
                out = await self._retire_poison(out, held)
        # Only now, after the last await: an entry marked outstanding is one we return.
        self.outstanding.update(d.id for d in out)
        return out

    async def _retire_poison(
        self, batch: list[Delivery], held: Sequence[PendingEntry]
    ) -> list[Delivery]:
        """``batch`` less the entries delivered more than ``max_deliveries`` times, which are
        dead-lettered with their history and acked: each delivery of such an entry ended in a
        crash or a stall, so handing it out again would only repeat that at every restart.

        ``held`` is the pending list before our read or claim (who held each entry, idle how
        long); the delivery counts come from XPENDING after it, which includes this delivery.
        """
        opts = self.options
        limit = opts.max_deliveries
        now = {
            p.id: p
            for p in await self.client.pending(self.stream, opts.group, [d.id for d in batch])
        }
        before = {p.id: p for p in held}
        keep: list[Delivery] = []
        for d in batch:
            p = now.get(d.id)
            if p is None or p.times_delivered <= limit:  # not pending: acked elsewhere, hand out
                keep.append(d)
                continue
            last = before.get(d.id, p)
            reason = (
                f"delivered {p.times_delivered} times without being acknowledged "
                f"(limit {limit}): retired as poison"
            )
            history = {
                "times_delivered": str(p.times_delivered).encode(),
                "last_consumer": last.consumer.encode(),
                "idle_ms": str(last.idle_ms).encode(),
            }
            await self._store_dead(d.id, d.raw, reason, history)
            self.retired += 1
            self.dead_lettered += 1
        return keep

    async def ack(self, ids: Sequence[str]) -> None:
        """XACK; call only once the engine's journal holds these entries."""
        if not ids:
            await trio.lowlevel.checkpoint()
            return
        await self.client.ack(self.stream, self.options.group, ids)
        self.outstanding.difference_update(ids)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Store reason and raw payload in the dead-letter stream and XACK, atomically."""
        await self._store_dead(delivery.id, delivery.raw, reason)

    async def _store_dead(
        self, eid: str, raw: bytes, reason: str, extra: Mapping[str, bytes] | None = None
    ) -> None:
        """XADD to the dead stream and XACK in one MULTI/EXEC; ``extra`` adds fields (the
        history of a poison entry). The log line has the id and the reason, not the payload."""
        fields = {
            "reason": reason.encode(),
            "raw": raw,
            "source_id": eid.encode(),
            "stream": self.stream.encode(),
            "consumer": self.consumer.encode(),
            "at": _now_iso().encode(),
            **(extra or {}),
        }
        await self.client.add_and_ack(
            self.dead_stream, fields, self.options.dead_maxlen, self.stream, self.options.group, eid
        )
        self.outstanding.discard(eid)
        log.warning("dead letter %s#%s: %s", self.stream, eid, reason)

    async def aclose(self) -> None:
        """Nothing to release: the client is shared and closed by its owner."""
        await trio.lowlevel.checkpoint()


class RedisDeadLetters:
    """The engine's own rejections (feedback for an unknown warning, ...) into the dead-letter
    stream, with the same fields as a source's dead letters; ``stream`` names where the
    message had come from (``engine:feedback``). Nothing to acknowledge: the message's own
    entry is acked by its source once this write has returned."""

    def __init__(self, client: StreamClient, stream: str, maxlen: int | None = None) -> None:
        self.client = client
        self.stream = stream
        self.maxlen = maxlen

    async def write(self, record: DeadLetter) -> None:
        fields = {
            "reason": record.reason.encode(),
            "raw": record.raw,
            "source_id": record.source_id.encode(),
            "stream": record.source.encode(),
            "at": (record.at or _now_iso()).encode(),
        }
        await self.client.add_many(self.stream, [fields], self.maxlen)
        log.warning("dead letter %s#%s: %s", record.source, record.source_id, record.reason)


def fields_as_text(fields: dict[bytes, bytes]) -> dict[str, str]:
    """Stream fields as a JSON-able mapping (for dead-lettering an entry of the wrong shape)."""
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}


class RedisOutbox:
    """An :class:`~engine.transport.base.OutboxSink`: ``XADD stream * key <key> action <bytes>``
    per action, pipelined; ``maxlen`` bounds the stream (``MAXLEN ~``)."""

    PIPELINE = 1024
    """Commands per round trip: large enough to amortise it, small enough to bound buffers."""

    def __init__(
        self,
        client: StreamClient,
        stream: str = "wd:outbox",
        *,
        maxlen: int | None = None,
        encoding: ActionEncoding = "json",
    ) -> None:
        self.client = client
        self.stream = stream
        self.maxlen = maxlen
        self.encoding: ActionEncoding = encoding
        self.name = f"redis:{stream}"

    async def send(self, actions: Sequence[Action]) -> None:
        if not actions:
            await trio.lowlevel.checkpoint()
            return
        enc = self.encoding
        for i in range(0, len(actions), self.PIPELINE):
            chunk = actions[i : i + self.PIPELINE]
            entries = [{"key": a.key.encode(), "action": encode_action(a, enc)} for a in chunk]
            await self.client.add_many(self.stream, entries, self.maxlen)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


@dataclass(frozen=True)
class RedisTransport:
    """Intake, feedback and outbox on one client (see :func:`open_redis_transport`)."""

    client: StreamClient
    intake: RedisStreamSource
    feedback: RedisStreamSource
    campaigns: RedisStreamSource
    outbox: RedisOutbox
    names: StreamNames
    dead: RedisDeadLetters


@asynccontextmanager
async def open_redis_transport(
    host: str = "127.0.0.1",
    port: int = 6379,
    *,
    db: int = 0,
    client: ClientName = "redis-py",
    names: StreamNames | None = None,
    options: SourceOptions | None = None,
    outbox_maxlen: int | None = None,
    encoding: ActionEncoding = "json",
) -> AsyncIterator[RedisTransport]:
    """Connect, create the consumer groups if missing, and close the client on exit."""
    names = names or StreamNames()
    async with open_client(client, host, port, db) as c:
        intake = await RedisStreamSource.open(c, names.intake, names.dead, options)
        feedback = await RedisStreamSource.open(c, names.feedback, names.dead, options)
        campaigns = await RedisStreamSource.open(c, names.campaigns, names.dead, options)
        outbox = RedisOutbox(c, names.outbox, maxlen=outbox_maxlen, encoding=encoding)
        dead = RedisDeadLetters(c, names.dead, (options or SourceOptions()).dead_maxlen)
        yield RedisTransport(c, intake, feedback, campaigns, outbox, names, dead)
