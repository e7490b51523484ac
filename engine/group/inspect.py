"""Read a group's state from Redis without taking part: ``group status`` and ``status ID``.

Reading never writes and never needs a lease, so it is safe beside running members. A
partition's state is its snapshot plus the journal records after it; a snapshot taken between
the two reads trims the stream, so the read is repeated until the snapshot it started from is
still the one in place (each read is a moment of the partition, never a mix of two).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.durability import Rebuilt, rebuild
from engine.group.client import run_sync
from engine.group.lease import LeaseInfo, Leases
from engine.group.partitions import Keys
from engine.group.router import ROUTER_GROUP
from engine.journal import JournalError
from engine.rules.escalation import EscalationRules
from engine.transport.redis_streams import DEFAULT_GROUP

__all__ = [
    "GroupStatus",
    "MemberInfo",
    "PartitionStatus",
    "StreamLag",
    "partition_records",
    "partition_state",
    "read_status",
    "status_now",
]

_ATTEMPTS = 5


def partition_records(client: Any, keys: Keys, partition: int) -> tuple[bytes | None, list[bytes]]:
    """The partition's snapshot payload (None: none yet) and the journal records after it."""
    snap, stream = keys.snapshot(partition), keys.journal(partition)
    for _ in range(_ATTEMPTS):
        before = client.hget(snap, "last_id")
        payload = client.hget(snap, "payload")
        entries = client.xrange(stream, "-", "+")
        if client.hget(snap, "last_id") != before:
            continue  # a snapshot landed meanwhile: read again
        records: list[bytes] = []
        for entry_id, fields in entries:
            record = fields.get(b"r")
            if record is None:
                raise JournalError(f"{stream} entry {entry_id!r} has no record field")
            records.append(record)
        return payload, records
    raise JournalError(f"partition {partition}: snapshots kept landing while reading it")


def partition_state(client: Any, keys: Keys, partition: int, rules: EscalationRules) -> Rebuilt:
    """The partition's warnings as its owner holds them (as of its last durable write)."""
    payload, records = partition_records(client, keys, partition)
    return rebuild(payload, records, rules)


@dataclass(frozen=True, slots=True)
class StreamLag:
    """A stream read by a consumer group: entries not yet delivered, and delivered unacked."""

    length: int
    lag: int | None
    pending: int


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    """One partition as ``group status`` shows it."""

    lease: LeaseInfo
    journal_records: int
    intake: StreamLag
    feedback: StreamLag


@dataclass(frozen=True, slots=True)
class MemberInfo:
    name: str
    heartbeat_ms: int
    """How long until this member's heartbeat lapses (negative: lapsed, not yet swept)."""


@dataclass(frozen=True, slots=True)
class GroupStatus:
    members: list[MemberInfo]
    partitions: list[PartitionStatus]
    routers: dict[str, StreamLag]

    def partitions_leases(self) -> list[LeaseInfo]:
        return [p.lease for p in self.partitions]

    def owned_by(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {m.name: [] for m in self.members}
        for p in self.partitions:
            if p.lease.owner is not None:
                out.setdefault(p.lease.owner, []).append(p.lease.partition)
        return out


def _lag(client: Any, stream: str, group: str) -> StreamLag:
    length = int(client.xlen(stream))
    if length == 0 and not client.exists(stream):
        return StreamLag(0, 0, 0)
    for g in client.xinfo_groups(stream):
        name = g.get("name", g.get(b"name"))
        if (name.decode() if isinstance(name, bytes) else name) == group:
            lag = g.get("lag", g.get(b"lag"))
            return StreamLag(length, None if lag is None else int(lag), int(g["pending"]))
    return StreamLag(length, length, 0)  # no reader yet: everything is waiting


def status_now(client: Any, keys: Keys, partitions: int) -> GroupStatus:
    now_s, now_us = client.time()
    now_ms = int(now_s) * 1000 + int(now_us) // 1000
    members = [
        MemberInfo(name.decode(), int(score) - now_ms)
        for name, score in client.zrange(keys.members(), 0, -1, withscores=True)
    ]
    leases = Leases(client, keys).read_all(partitions)
    rows = [
        PartitionStatus(
            lease,
            int(client.xlen(keys.journal(p))),
            _lag(client, keys.intake(p), DEFAULT_GROUP),
            _lag(client, keys.feedback(p), DEFAULT_GROUP),
        )
        for p, lease in enumerate(leases)
    ]
    routers = {
        kind: _lag(client, keys.stream(kind), ROUTER_GROUP)
        for kind in ("intake", "feedback", "campaigns")
    }
    return GroupStatus(members, rows, routers)


async def read_status(client: Any, keys: Keys, partitions: int) -> GroupStatus:
    """Members, every partition's lease, journal length and stream lag, and the routers'."""
    return await run_sync(status_now, client, keys, partitions)
