"""Routing: producers write to one stream each; every message reaches its partition's owner.

The warning centre keeps ``XADD wd:intake``, officers' apps ``XADD wd:feedback`` and admins
``XADD wd:campaigns``, exactly as for a single engine. Every member of the group runs a router
for each of those streams in one consumer group (``wd-router``), so the routing work is shared
and survives the loss of any member (a dead router's pending entries are claimed by the others
once idle for ``claim_idle_s``). A router reads a batch, takes each message's routing key
without validating the rest (the owner's engine validates and dead-letters with the full
reason), ``XADD``s it to ``{wd:pN}:intake`` / ``:feedback`` / ``:campaigns``, optionally
``WAIT``s for replicas on the same connection, and only then ``XACK``s the batch.

At-least-once, and why that is enough: a router that dies between the ``XADD`` and the
``XACK`` routes the message again. A repeated warning is a duplicate instruction the machine
counts and ignores; a repeated feedback event meets a state that has already moved on; a
repeated campaign is refused as a reused id. Nothing is ever dropped.

The routing key: a warning's ``id``, a feedback event's ``warning_id``, a campaign's ``id``
or a campaign control message's ``campaign_id``. :func:`route` is pure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import trio

from engine.group.client import run_sync
from engine.group.partitions import Keys, partition_of
from engine.service import MAX_MESSAGE, TOO_LONG
from engine.transport.base import Delivery
from engine.transport.redis_streams import RedisStreamSource

log = logging.getLogger("engine.group.router")

__all__ = ["ROUTER_GROUP", "Kind", "RouterStats", "route", "run_router"]

ROUTER_GROUP = "wd-router"
"""The consumer group every member's routers share on the producers' streams."""

Kind = Literal["intake", "feedback", "campaigns"]


class _Keyed(msgspec.Struct):
    """Only the fields routing reads; every other field is left for the owner to validate."""

    id: Any = None
    warning_id: Any = None
    campaign_id: Any = None


_decoder = msgspec.json.Decoder(_Keyed)

_FIELD: dict[Kind, tuple[str, ...]] = {
    "intake": ("id",),
    "feedback": ("warning_id",),
    "campaigns": ("campaign_id", "id"),
}


def route(kind: Kind, raw: bytes, partitions: int) -> int | str:
    """The partition ``raw`` belongs to, or the reason it cannot be routed (dead-lettered)."""
    if len(raw) > MAX_MESSAGE:
        return TOO_LONG
    try:
        keyed = _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return f"(message): not a JSON object ({exc})"
    for name in _FIELD[kind]:
        value = getattr(keyed, name)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            return f"{name}: expected a non-empty string"
        return partition_of(value, partitions)
    return f"{' or '.join(_FIELD[kind])}: required to route the message"


@dataclass
class RouterStats:
    """Counters of one router (a health signal for ``group status`` and the logs)."""

    routed: int = 0
    dead_letters: int = 0
    batches: int = 0


async def run_router(
    kind: Kind,
    source: RedisStreamSource,
    client: Any,
    keys: Keys,
    partitions: int,
    *,
    wait_replicas: int = 0,
    wait_timeout_ms: int = 1000,
    stats: RouterStats | None = None,
) -> None:
    """Route ``source`` (a producers' stream in :data:`ROUTER_GROUP`) into the partitions'
    streams, forever. ``client`` is the redis-py client the partition streams are written
    with (a plain, Sentinel or Cluster client)."""
    stats = stats if stats is not None else RouterStats()
    target = {"intake": keys.intake, "feedback": keys.feedback, "campaigns": keys.campaigns}[kind]
    cluster = type(client).__name__ == "RedisCluster"
    while True:
        batch = await source.receive_batch()
        # Shielded: a cancel between the XADD and the XACK would only repeat the batch, but
        # a batch cut in half would be acked while part of it was never written.
        with trio.CancelScope(shield=True):
            plan: list[tuple[str, bytes]] = []
            bad: list[tuple[Delivery, str]] = []
            for d in batch:
                where = route(kind, d.raw, partitions)
                if isinstance(where, str):
                    bad.append((d, where))
                else:
                    plan.append((target(where), d.raw))
            if plan:
                await run_sync(
                    _write, client, plan, 0 if cluster else wait_replicas, wait_timeout_ms
                )
            for d, reason in bad:
                await source.dead_letter(d, reason)  # dead-lettering acks the entry too
            refused = {d.id for d, _ in bad}
            await source.ack([d.id for d in batch if d.id not in refused])
            stats.routed += len(plan)
            stats.dead_letters += len(bad)
            stats.batches += 1


def _write(client: Any, plan: Sequence[tuple[str, bytes]], wait: int, timeout_ms: int) -> None:
    """XADD every message to its partition stream, in one pipeline (one connection, so a
    trailing ``WAIT`` covers every write); raise if fewer replicas than ``wait`` acknowledged,
    so the batch stays unacked and is routed again."""
    pipe = client.pipeline(transaction=False)
    for stream, raw in plan:
        pipe.xadd(stream, {"raw": raw})
    if wait:
        pipe.execute_command("WAIT", wait, timeout_ms)
    replies = pipe.execute()
    if wait and int(replies[-1]) < wait:
        raise ReplicasBehind(f"{replies[-1]} of {wait} replicas acknowledged a routed batch")


class ReplicasBehind(RuntimeError):
    """A routed batch reached fewer replicas than asked; it is routed again (not acked)."""
