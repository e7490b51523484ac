"""Transport-neutral contracts between the engine and whatever carries its messages.

Transports move bytes and acknowledgements; they never decode warnings. The engine drives them:

    batch = await intake.receive_batch()        # list[Delivery], raw bytes
    good, bad = decode each (the engine's job)
    for d, reason in bad: await intake.dead_letter(d, reason)   # stores reason + raw, then acks
    journal.append(good) ; fsync                 # the journal's job
    await intake.ack([d.id for d in good])        # only now may the transport forget them
    ...
    await outbox.send(actions)                    # at-least-once; repeats carry the same key

Why Protocols and not a base class: the three implementations share no code worth inheriting,
and the engine (and tests) should be able to plug in anything with these four methods.
Why msgspec Structs for what crosses a boundary: cheap, immutable, and encodable as is.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal, Protocol, runtime_checkable

import msgspec

from engine.model import Action

ActionEncoding = Literal["json", "msgpack"]


class Delivery(msgspec.Struct, frozen=True, gc=False):
    """One raw message as received. ``id`` is only meaningful to the source that made it
    (a stream entry id, a line number, a sequence number) and is what :meth:`IntakeSource.ack`
    takes. ``redelivered`` is True when the source cannot rule out that it was handed out before
    (reclaimed after a crash): the engine must deduplicate by warning id anyway."""

    id: str
    raw: bytes
    source: str
    redelivered: bool = False

    def __repr__(self) -> str:  # raw payloads may hold phone numbers: never show them
        return f"Delivery(id={self.id!r}, source={self.source!r}, {len(self.raw)} bytes)"


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """What a dead-letter place stores: why, the payload exactly as received, and where from."""

    reason: str
    raw: bytes
    source: str
    source_id: str
    at: str = ""
    """Wall-clock time of dead-lettering, ISO 8601 UTC (for operators, not for logic)."""

    def __repr__(self) -> str:
        return f"DeadLetter(source={self.source!r}, id={self.source_id!r}, reason={self.reason!r})"


def dead_letter_for(delivery: Delivery, reason: str) -> DeadLetter:
    """The record for ``delivery``, stamped now."""
    return DeadLetter(
        reason=reason,
        raw=delivery.raw,
        source=delivery.source,
        source_id=delivery.id,
        at=datetime.now(UTC).isoformat(timespec="milliseconds"),
    )


def raw_as_text(raw: bytes) -> dict[str, str]:
    """A payload for a text format: ``{"raw": text}`` if it is UTF-8, else ``{"raw_b64": ...}``,
    so a dead letter never loses or mangles the bytes that were received."""
    try:
        return {"raw": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"raw_b64": base64.b64encode(raw).decode("ascii")}


@runtime_checkable
class IntakeSource(Protocol):
    """Raw messages in (warning instructions or feedback events), in batches, with acks.

    Contract:
    - ``receive_batch`` waits for at least one delivery and returns at most the source's batch
      size, in the order the producer sent them; it raises ``trio.EndOfChannel`` when the source
      is finished (end of file, closed channel). Cancelling it loses nothing: a message it had
      not returned yet is returned by a later call (or, for Redis, after a restart).
    - ``ack(ids)`` is called only after the engine has made those messages durable; a durable
      source may redeliver anything not acked (after a restart or a claim timeout).
    - ``dead_letter(delivery, reason)`` stores the reason and the raw payload, then acks it.
    """

    name: str

    async def receive_batch(self) -> list[Delivery]: ...

    async def ack(self, ids: Sequence[str]) -> None: ...

    async def dead_letter(self, delivery: Delivery, reason: str) -> None: ...

    async def aclose(self) -> None: ...


FeedbackSource = IntakeSource
"""Feedback events arrive exactly like warnings: raw, batched, acked once journaled."""


@runtime_checkable
class DeadLetterSink(Protocol):
    """Where dead letters are kept (a JSON-lines file, the ``wd:dead`` stream): write one.
    A service sends the engine's own rejections here, beside its sources' dead letters."""

    async def write(self, record: DeadLetter) -> None: ...


@runtime_checkable
class OutboxSink(Protocol):
    """Actions out. ``send`` returns once the batch is handed over (written and flushed, or
    stored in Redis). Delivery is at-least-once: after an error the engine sends the batch
    again, and every repeat carries the same :attr:`Action.key`, so adapters deduplicate."""

    name: str

    async def send(self, actions: Sequence[Action]) -> None: ...

    async def aclose(self) -> None: ...


_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()


def encode_action(action: Action, encoding: ActionEncoding = "json") -> bytes:
    """An action as bytes for the wire; JSON by default so adapters in any language can read it."""
    if encoding == "json":
        return _json_encoder.encode(action)
    return _msgpack_encoder.encode(action)


def decode_action(data: bytes, encoding: ActionEncoding = "json") -> Action:
    """The inverse of :func:`encode_action` (for adapters and tests)."""
    if encoding == "json":
        return msgspec.json.decode(data, type=Action)
    return msgspec.msgpack.decode(data, type=Action)
