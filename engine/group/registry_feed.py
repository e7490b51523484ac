"""Registry changes reach every engine: each member follows ``wd:registry`` from its start.

Every member holds the whole resident registry (audiences need all of it), so a change (a tag
set or cleared, a resident added, moved or removed) must reach all of them, unlike warnings,
which reach one owner. A consumer group would split the changes between members; instead each
member reads the stream itself with plain ``XREAD``, from the first entry, after loading the
registry files: replaying changes the files already hold is harmless (see
:mod:`engine.registry.changes` for why each change applies idempotently), and reading from the
start means a member that was down misses nothing. Trim the stream (``XTRIM``) only after
folding its changes into the registry files every member loads.

A change that cannot be applied (malformed, an unknown resident or tag) is logged by entry id
and reason, never by content, written to the dead-letter stream by the members that see it,
and skipped: the registry never stops following because of one bad change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import trio

from engine.errors import WarnDispatchError
from engine.group.client import run_sync
from engine.registry.changes import apply_change, decode_change
from engine.registry.registry import Registry
from engine.transport.base import DeadLetter
from engine.transport.redis_streams import RedisDeadLetters

log = logging.getLogger("engine.group.registry")

__all__ = ["RegistryFollower"]

BLOCK_MS = 200
"""Longest single wait for new changes (a cancel waits at most this long)."""
PAGE = 1000


@dataclass
class RegistryFollower:
    """Applies ``stream``'s changes to ``registry`` in order, from the first entry."""

    client: Any
    stream: str
    registry: Registry
    dead: RedisDeadLetters | None = None
    member: str = ""
    applied: int = 0
    refused: int = 0
    last_id: str = "0-0"

    async def catch_up(self) -> int:
        """Apply every change in the stream now; returns how many were read."""
        total = 0
        while True:
            n = await self._page(block_ms=None)
            total += n
            if n < PAGE:
                return total

    async def run(self) -> None:
        """Follow the stream forever (after :meth:`catch_up`)."""
        while True:
            await self._page(block_ms=BLOCK_MS)
            await trio.lowlevel.checkpoint()

    async def _page(self, block_ms: int | None) -> int:
        reply = await run_sync(self._read, block_ms)
        if not reply:
            return 0
        entries = reply[0][1]
        for entry_id, fields in entries:
            eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            raw = fields.get(b"raw")
            try:
                if raw is None:
                    raise _NoPayload(f"entry has no 'raw' field (fields: {sorted(fields)})")
                apply_change(self.registry, decode_change(raw))
                self.applied += 1
            except (WarnDispatchError, ValueError) as exc:
                self.refused += 1
                log.warning("registry change %s of %s refused: %s", eid, self.stream, exc)
                if self.dead is not None:
                    await self.dead.write(
                        DeadLetter(
                            reason=f"registry change not applied by {self.member}: {exc}",
                            raw=bytes(raw or b""),
                            source=self.stream,
                            source_id=eid,
                            at=datetime.now(UTC).isoformat(timespec="milliseconds"),
                        )
                    )
            self.last_id = eid
        return len(entries)

    def _read(self, block_ms: int | None) -> Any:
        return self.client.xread({self.stream: self.last_id}, count=PAGE, block=block_ms)


class _NoPayload(WarnDispatchError):
    """A registry stream entry without the ``raw`` field."""
