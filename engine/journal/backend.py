"""What the engine needs of a journal, so the disk journal and a partition's journal in Redis
(:class:`engine.group.RedisJournal`) are interchangeable under one :class:`Engine`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from engine.journal.journal import FsyncPolicy, Payload

__all__ = ["JournalBackend", "JournalCounters"]


class JournalCounters(Protocol):
    """Counters every journal keeps (for the shutdown summary)."""

    @property
    def records(self) -> int: ...

    @property
    def snapshots(self) -> int: ...


class JournalBackend(Protocol):
    """The engine's view of a journal: queue records, wait until durable, snapshot, replay."""

    @property
    def snapshot_payload(self) -> bytes | None: ...

    @property
    def policy(self) -> FsyncPolicy: ...

    @property
    def stats(self) -> JournalCounters: ...

    def replay(self) -> Iterator[bytes]: ...

    def write_nowait(self, payloads: Iterable[Payload]) -> None: ...

    async def sync(self) -> None: ...

    async def snapshot(self, payload: Payload) -> None: ...
