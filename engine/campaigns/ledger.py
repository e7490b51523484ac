"""Per-resident send history: frequency caps and "same content once", as numpy arrays.

Caps: a :class:`CapRing` keeps, per resident, the last K routine sends of one kind (all routine
content, or one category) as uint32 seconds since the ledger's epoch, in a (n, K) array with K =
the cap. A slot is EMPTY (0), a time, or PENDING: a send that is planned but not yet sent.
PENDING counts as inside every window, so a planned send holds its place from the moment it is
planned until it is sent (then it takes its real time) or dropped (then it is freed). That makes
the cap hold over actual send times whatever the order of planning, confirming and sending:
in any window of ``window_s`` seconds a resident gets at most K routine sends. Times are rounded
down to the second and compared with ``>=``, so rounding errs towards capping.

Content: a :class:`ContentSet` is a dense bitset (one bit per resident) of who has, or is about
to get, one content. Both grow with the registry.
"""

from __future__ import annotations

import math

import numpy as np

EMPTY = np.uint32(0)
PENDING = np.uint32(0xFFFF_FFFF)


def _capacity(n: int, have: int) -> int:
    return max(n, 2 * have, 1024)


class CapRing:
    """The last ``k`` sends per resident of one kind; see the module docstring."""

    __slots__ = ("k", "times")

    def __init__(self, k: int, n: int = 0) -> None:
        self.k = k
        self.times = np.zeros((n, k), dtype=np.uint32)

    def ensure(self, n: int) -> None:
        if n > self.times.shape[0]:
            grown = np.zeros((_capacity(n, self.times.shape[0]), self.k), dtype=np.uint32)
            grown[: self.times.shape[0]] = self.times
            self.times = grown

    def used(self, ids: np.ndarray, threshold: int) -> np.ndarray:
        """Per id: how many slots are pending or stamped at or after ``threshold``."""
        self.ensure(int(ids[-1]) + 1 if ids.size else 0)
        return np.count_nonzero(self.times[ids] >= threshold, axis=1)

    def reserve(self, ids: np.ndarray) -> None:
        """Mark one slot PENDING per id (ids unique, each with room: ``used < k``)."""
        if not ids.size:
            return
        self.ensure(int(ids.max()) + 1)
        j = np.argmin(self.times[ids], axis=1)  # EMPTY or the oldest stamp: outside the window
        self.times[ids, j] = PENDING

    def _pending_slot(self, ids: np.ndarray) -> np.ndarray:
        rows = self.times[ids] == PENDING
        if not rows.any(axis=1).all():
            raise AssertionError("ledger: a send was committed or released without a reservation")
        return np.argmax(rows, axis=1)

    def commit(self, ids: np.ndarray, stamp: int) -> None:
        """Turn one PENDING slot per id into the real send time."""
        if ids.size:
            self.times[ids, self._pending_slot(ids)] = stamp

    def release(self, ids: np.ndarray) -> None:
        """Free one PENDING slot per id (a planned send that will not happen)."""
        if ids.size:
            self.times[ids, self._pending_slot(ids)] = EMPTY

    @property
    def nbytes(self) -> int:
        return int(self.times.nbytes)


class ContentSet:
    """Who has (or is about to get) one content: one bit per resident."""

    __slots__ = ("last_used", "words")

    def __init__(self, n: int = 0) -> None:
        self.words = np.zeros(-(-n // 64), dtype=np.uint64)
        self.last_used = -math.inf

    def _ensure(self, n: int) -> None:
        need = -(-n // 64)
        if need > self.words.size:
            grown = np.zeros(_capacity(need, self.words.size), dtype=np.uint64)
            grown[: self.words.size] = self.words
            self.words = grown

    def has(self, ids: np.ndarray) -> np.ndarray:
        """A bool per id."""
        out = np.zeros(ids.size, dtype=np.bool_)
        inside = (ids >> 6) < self.words.size
        sub = ids[inside]
        out[inside] = ((self.words[sub >> 6] >> (sub & 63).astype(np.uint64)) & np.uint64(1)) == 1
        return out

    def _bits(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        words = ids >> 6
        bits = np.left_shift(np.uint64(1), (ids & 63).astype(np.uint64))
        return words, bits

    def add(self, ids: np.ndarray) -> None:
        if ids.size:
            self._ensure(int(ids.max()) + 1)
            np.bitwise_or.at(self.words, *self._bits(ids))

    def remove(self, ids: np.ndarray) -> None:
        if ids.size:
            self._ensure(int(ids.max()) + 1)
            words, bits = self._bits(ids)
            np.bitwise_and.at(self.words, words, ~bits)

    @property
    def nbytes(self) -> int:
        return int(self.words.nbytes)


class Ledger:
    """Caps (all routine content, and per category) and per-content dedupe for one county.

    ``epoch`` is the trio time that stamps count from; stamps are uint32 seconds, good for 136
    years. Reading never changes what the ledger means (it may grow arrays).
    """

    def __init__(
        self,
        window_s: float,
        routine_cap: int,
        category_caps: dict[str, int] | None = None,
        *,
        epoch: float = 0.0,
        dedupe_s: float = math.inf,
    ) -> None:
        self.window_s = window_s
        self.epoch = epoch
        self.dedupe_s = dedupe_s
        self.total = CapRing(routine_cap)
        self.category = {c: CapRing(k) for c, k in (category_caps or {}).items()}
        self.contents: dict[str, ContentSet] = {}

    def stamp(self, t: float) -> int:
        """A time as stored: whole seconds since the epoch, plus one (0 is EMPTY)."""
        return max(math.floor(t - self.epoch), 0) + 1

    def threshold(self, now: float) -> int:
        """Stamps at or above this are inside the cap window ending ``now``."""
        return max(self.stamp(now - self.window_s), 1)

    def ensure(self, n: int) -> None:
        """Room for resident ids below ``n`` (call as the registry grows; reads grow too)."""
        self.total.ensure(n)
        for ring in self.category.values():
            ring.ensure(n)

    # -- reads (planning) --
    def capped(self, ids: np.ndarray, category: str, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Bool masks over ``ids``: over the total cap, over the category's cap."""
        thr = self.threshold(now)
        total = self.total.used(ids, thr) >= self.total.k
        ring = self.category.get(category)
        cat = ring.used(ids, thr) >= ring.k if ring else np.zeros(ids.size, dtype=np.bool_)
        return total, cat

    def has_content(self, key: str, ids: np.ndarray) -> np.ndarray:
        s = self.contents.get(key)
        return s.has(ids) if s is not None else np.zeros(ids.size, dtype=np.bool_)

    # -- writes (dispatch) --
    def reserve(self, ids: np.ndarray, key: str, category: str | None, now: float) -> None:
        """Planned sends: content bits set; for routine (``category`` given) cap slots PENDING."""
        s = self.contents.get(key)
        if s is None:
            s = self.contents[key] = ContentSet()
        s.add(ids)
        s.last_used = now
        if category is not None:
            self.total.reserve(ids)
            ring = self.category.get(category)
            if ring:
                ring.reserve(ids)

    def commit(self, ids: np.ndarray, category: str | None, t: float) -> None:
        """Planned sends went out at ``t``."""
        if category is not None:
            st = self.stamp(t)
            self.total.commit(ids, st)
            ring = self.category.get(category)
            if ring:
                ring.commit(ids, st)

    def release(self, ids: np.ndarray, key: str, category: str | None) -> None:
        """Planned sends that will not happen: free their cap slots and content bits."""
        s = self.contents.get(key)
        if s is not None:
            s.remove(ids)
        if category is not None:
            self.total.release(ids)
            ring = self.category.get(category)
            if ring:
                ring.release(ids)

    def forget_contents(self, now: float, keep: set[str] | frozenset[str] = frozenset()) -> int:
        """Drop content sets unused for ``dedupe_s`` (except ``keep``); returns how many."""
        old = [
            k
            for k, s in self.contents.items()
            if now - s.last_used > self.dedupe_s and k not in keep
        ]
        for k in old:
            del self.contents[k]
        return len(old)

    @property
    def nbytes(self) -> int:
        rings = self.total.nbytes + sum(r.nbytes for r in self.category.values())
        return rings + sum(s.nbytes for s in self.contents.values())
