"""Which warnings changed, for watchers that want to follow the engine live (the console).

Why a feed of ids and not of states: a watcher (one browser tab on the board) needs to know
*which* warnings to look at again, and reads their current state itself, through its own
access rules. The engine records the id of every warning a loop turn touched, once per turn,
with a version number; a watcher remembers the last version it saw and asks for what changed
since. The log is bounded: a watcher that falls further behind is told to start over.

Cost on the hot path: one ``list.append`` per step, and one small tuple per loop turn.
"""

from __future__ import annotations

from collections import deque

import trio

__all__ = ["StateFeed"]

KEEP_IDS = 65_536
"""Changed ids kept, over the most recent turns (a watcher further behind starts over): about
half a megabyte of references, whatever the load."""


class StateFeed:
    """Versions of the engine's warning states: ``version`` grows by one per loop turn that
    changed at least one warning."""

    def __init__(self, keep: int = KEEP_IDS) -> None:
        self.version = 0
        self._keep = keep
        self._kept = 0
        self._turns: deque[tuple[int, tuple[str, ...]]] = deque()
        self._turn: list[str] = []
        self._changed = trio.Event()

    def touch(self, warning_id: str) -> None:
        """This warning's state changed (or it was forgotten) in the current loop turn."""
        self._turn.append(warning_id)

    def end_turn(self) -> None:
        """Publish the turn's ids under a new version and wake the watchers."""
        if not self._turn:
            return
        ids, self._turn = tuple(dict.fromkeys(self._turn)), []
        self.version += 1
        self._turns.append((self.version, ids))
        self._kept += len(ids)
        while self._kept > self._keep and len(self._turns) > 1:
            self._kept -= len(self._turns.popleft()[1])
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    async def wait_after(self, version: int) -> None:
        """Return once the feed has a version newer than ``version``."""
        while self.version <= version:
            await self._changed.wait()

    def since(self, version: int) -> tuple[int, list[str] | None]:
        """(current version, ids changed after ``version``), each once; None for the ids
        when ``version`` is older than the log keeps (the watcher must reload everything)."""
        current = self.version
        if version >= current:
            return current, []
        turns = self._turns
        if not turns or turns[0][0] > version + 1:
            return current, None
        out: dict[str, None] = {}
        for v, ids in reversed(turns):
            if v <= version:
                break
            out.update(dict.fromkeys(ids))
        return current, list(out)
