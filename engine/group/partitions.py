"""Where a warning lives in a group of engines, and who should own which partition (pure).

A group of ``serve`` processes splits the warnings into ``P`` partitions by a stable hash of the
warning id (:func:`partition_of`). Each partition has one owner at a time (a lease, see
:mod:`engine.group.lease`), and everything the owner needs to take over after a crash lives in
Redis under that partition's keys (:class:`Keys`).

Every key of one partition carries the same Redis Cluster hash tag (``{wd:p3}``), so they all
land in one slot: the fenced Lua scripts touch several of them atomically, which Cluster allows
only within one slot, and a partition moves between cluster nodes as a whole.

:func:`plan_assignment` decides, from a shared view (who is live, who owns what), which
partitions this engine should acquire and which it should release. It is deterministic, so
engines agree without talking to each other: each computes every engine's target and every
engine's share of the free partitions, and acts only on its own part. Correctness never rests
on the plan (a lease is the only thing that grants ownership, and two engines can never both
hold one); the plan only makes the spread even and quick to converge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Keys", "partition_of", "plan_assignment", "targets"]


def partition_of(key: str, partitions: int) -> int:
    """The partition of ``key`` (a warning id): BLAKE2b-64 of its UTF-8 bytes, mod ``partitions``.

    This function, and the group's partition count, must never change for existing data: the
    partition decides where a warning's journal and snapshot live, so a different answer would
    send a warning's later messages to an owner whose state does not hold it. (Python's
    ``hash()`` is salted per process, so it cannot be used.) ``tests/test_group_foundation.py``
    pins a few values so an accidental change fails loudly.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


@dataclass(frozen=True, slots=True)
class Keys:
    """Redis key names of the group, each hash-tagged by partition: ``{<prefix>:p<n>}:<what>``.

    The prefix may not contain braces (they would move or break the hash tag).
    """

    prefix: str = "wd"

    def __post_init__(self) -> None:
        if not self.prefix or "{" in self.prefix or "}" in self.prefix:
            raise ValueError(f"a key prefix must be non-empty and brace-free: {self.prefix!r}")

    def tag(self, partition: int) -> str:
        """The hash tag shared by every key of ``partition``, braces included."""
        if partition < 0:
            raise ValueError(f"partition must be >= 0, not {partition}")
        return f"{{{self.prefix}:p{partition}}}"

    def lease(self, partition: int) -> str:
        """String ``"<owner> <token>"`` with a TTL: who owns the partition, until when."""
        return f"{self.tag(partition)}:lease"

    def fence(self, partition: int) -> str:
        """Counter: the last fencing token issued for the partition (never reset, no TTL)."""
        return f"{self.tag(partition)}:fence"

    def journal(self, partition: int) -> str:
        """Stream: the journal records written since the last snapshot, in order."""
        return f"{self.tag(partition)}:journal"

    def snapshot(self, partition: int) -> str:
        """Hash: ``payload``, ``last_id`` (the last journal entry it covers), ``token``."""
        return f"{self.tag(partition)}:snapshot"

    def commit(self, partition: int) -> str:
        """String: the marker of the last journal batch written, so a retried batch is a no-op."""
        return f"{self.tag(partition)}:commit"

    def intake(self, partition: int) -> str:
        """Stream: warnings routed to the partition."""
        return f"{self.tag(partition)}:intake"

    def feedback(self, partition: int) -> str:
        """Stream: feedback events routed to the partition."""
        return f"{self.tag(partition)}:feedback"

    def campaigns(self, partition: int) -> str:
        """Stream: campaigns and campaign control (confirm, cancel) routed to the partition."""
        return f"{self.tag(partition)}:campaigns"

    def members(self) -> str:
        """Sorted set: live members of the group, scored by when their heartbeat lapses (ms)."""
        return f"{{{self.prefix}}}:members"

    def stream(self, what: str) -> str:
        """A stream every producer writes to and every member reads (``intake``, ``feedback``,
        ``campaigns``, ``registry``, ``outbox``, ``dead``): ``<prefix>:<what>``, no hash tag,
        so a single-process engine and a group share the producers' stream names."""
        return f"{self.prefix}:{what}"

    def all(self, partition: int) -> tuple[str, ...]:
        """Every key of ``partition`` (for tests, cleanup and slot checks)."""
        return (
            self.lease(partition),
            self.fence(partition),
            self.journal(partition),
            self.snapshot(partition),
            self.commit(partition),
            self.intake(partition),
            self.feedback(partition),
            self.campaigns(partition),
        )


def _held(
    partitions: int, live: frozenset[str], owners: Mapping[int, str | None]
) -> dict[str, list[int]]:
    """Partitions held by each live engine (ascending); others' and unknown are free."""
    held: dict[str, list[int]] = {e: [] for e in live}
    for p in range(partitions):
        owner = owners.get(p)
        if owner is not None and owner in live:
            held[owner].append(p)
    return held


def _ranked(held: Mapping[str, list[int]]) -> list[str]:
    """Engines by how much they hold (most first), then by name: the order targets follow."""
    return sorted(held, key=lambda e: (-len(held[e]), e))


def targets(
    partitions: int, live: Iterable[str], owners: Mapping[int, str | None]
) -> dict[str, int]:
    """How many partitions each live engine should own: ``ceil(P/n)`` for the ``P mod n``
    engines that currently hold the most (ties by name), ``floor(P/n)`` for the rest.

    Giving the larger targets to the engines that already hold most moves the fewest
    partitions when an engine joins or leaves, and is stable: once every engine is at its
    target, the engines at ``ceil`` still rank first, so the targets do not change.
    """
    live_set = frozenset(live)
    if not live_set:
        return {}
    held = _held(partitions, live_set, owners)
    base, extra = divmod(partitions, len(live_set))
    return {e: base + (1 if k < extra else 0) for k, e in enumerate(_ranked(held))}


def plan_assignment(
    partitions: int, me: str, live: set[str], owners: Mapping[int, str | None]
) -> tuple[list[int], list[int]]:
    """``(acquire, release)`` for engine ``me``, both ascending.

    ``owners`` maps a partition to its lease holder (None or absent: free); a partition held by
    an engine not in ``live`` counts as free (its lease is about to lapse, or has). ``me``
    always counts as live. Every engine keeps up to its target (:func:`targets`) of what it
    holds and releases its highest-numbered extras; the free partitions, lowest first, are
    dealt to the engines below target in rank order, each taking its whole shortfall. Every
    engine computes the same deal from the same view, so no two engines go for the same free
    partition. A partition another engine is about to release is not free yet: it is dealt in
    a later round, once the view shows it free.

    With every engine applying its plan each round to a shared view, the group reaches every
    partition owned once, counts within one of each other, in at most two rounds (one to
    release, one to take what was released); tests check this with hypothesis.
    """
    if partitions < 0:
        raise ValueError(f"partitions must be >= 0, not {partitions}")
    live_set = frozenset(live) | {me}
    held = _held(partitions, live_set, owners)
    want = targets(partitions, live_set, owners)
    release = held[me][want[me] :]
    free = [p for p in range(partitions) if owners.get(p) is None or owners.get(p) not in live_set]
    acquire: list[int] = []
    dealt = 0
    for engine in _ranked(held):
        short = max(0, want[engine] - len(held[engine]))
        share = free[dealt : dealt + short]
        dealt += len(share)
        if engine == me:
            acquire = share
            break
    return acquire, release
