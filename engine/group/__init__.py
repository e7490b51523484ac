"""A group of engines over Redis: partitions, leases with fencing tokens, and a fenced journal.

Several ``serve`` processes share the warnings. Each of ``P`` partitions (a stable hash of the
warning id, :func:`partition_of`) has one owner at a time, held by a lease with a fencing token
(:mod:`engine.group.lease`); its journal and snapshot live in Redis (:class:`RedisJournal`), so
a survivor can take a dead engine's partitions over, and a stalled former owner can never write
them again. :func:`plan_assignment` spreads the partitions evenly over the live engines.

Layer: beside ``engine.durability``, below the scheduler (today it imports only
``engine.journal``; ``engine.model``, ``engine.durability``, ``engine.transport`` and
``engine.errors`` are allowed), so the scheduler and the service can build on it.
"""

from engine.group.client import connect
from engine.group.journal import FencedError, RedisJournal, RedisJournalStats, ReplicationError
from engine.group.lease import DEFAULT_TTL_MS, AsyncLeases, LeaseInfo, Leases
from engine.group.partitions import Keys, partition_of, plan_assignment, targets

__all__ = [
    "DEFAULT_TTL_MS",
    "AsyncLeases",
    "FencedError",
    "Keys",
    "LeaseInfo",
    "Leases",
    "RedisJournal",
    "RedisJournalStats",
    "ReplicationError",
    "connect",
    "partition_of",
    "plan_assignment",
    "targets",
]
