"""Partition leases in Redis, each grant stamped with a fencing token.

Why leases and fencing rather than a consensus protocol of our own: Redis is already the one
place every engine reads and writes, and a single Redis primary executes each Lua script
atomically. A lease (``SET ... PX ttl``) decides who *should* own a partition; it cannot stop a
process that stalled (GC pause, frozen VM, a laptop lid) from waking up still believing it owns
it. The fencing token closes that gap: every grant increments a per-partition counter that is
never reset, and every durable write (:mod:`engine.group.journal`) runs in a script that first
checks the lease still holds *this* owner and token. A stale owner's write is refused by Redis
itself, no matter how late it arrives, so correctness never depends on clocks or on a process
noticing in time that it lost the lease. Writing our own consensus (Raft over our engines)
would duplicate what Redis plus fencing gives, with far more ways to get it wrong.

What the TTL bounds:

- **Failover time.** A dead owner's partitions become free at most ``ttl`` after its last
  renewal; a survivor takes them on its next planning round. So ``ttl`` plus the planning
  interval bounds how long a partition's deadlines can be late after a crash.
- **Renewal.** An owner renews every ``ttl / 3`` or so; with ``socket_timeout`` well below
  ``ttl`` (:mod:`engine.group.client`), a failed renewal is noticed while the lease still runs.
- **Side effects Redis cannot fence** (actions handed to an outbox). An owner should stop
  producing them once ``ttl`` has passed since it *sent* its last successful renewal, minus a
  margin for clock-rate drift. Actions carry idempotency keys, so the overlap this leaves is a
  repeat with the same key, never a lost warning.

What it does not cover: an asynchronously replicated Redis can lose acknowledged writes on
failover (a lease, or a token increment, with them). ``RedisJournal``'s ``wait_replicas`` makes
journal writes wait for replicas; a fully fault-tolerant lease needs ``WAIT`` too, or a Redis
deployment that does not lose acknowledged writes.

Owner names must be unique per live process. ``acquire`` by the owner already named in the
lease takes it over with a new token: a restarted engine (same name) gets its partitions back at
once, and its previous incarnation, if still alive somewhere, is fenced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.group.client import AnyClient, run_sync
from engine.group.partitions import Keys

__all__ = ["DEFAULT_TTL_MS", "AsyncLeases", "LeaseInfo", "Leases", "holder"]

DEFAULT_TTL_MS = 10_000
"""A lease's lifetime without renewal; renew about every third of it."""

# KEYS[1] lease, KEYS[2] fence; ARGV[1] owner, ARGV[2] ttl_ms. Free (or ours): INCR the fence
# and SET the lease to "owner token" with PX; returns the token. Held by another: nil.
ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local who = string.match(cur, '^(.*) %d+$')
  if who ~= ARGV[1] then return false end
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
return token
"""

# KEYS[1] lease; ARGV[1] "owner token", ARGV[2] ttl_ms. Extend only if it is exactly ours.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] lease; ARGV[1] "owner token". Delete only if it is exactly ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


def holder(owner: str, token: int) -> str:
    """The lease value naming ``owner`` with ``token``, as the scripts compare it."""
    return f"{owner} {token}"


def _check_owner(owner: str) -> None:
    if not owner or owner != owner.strip() or "\n" in owner:
        raise ValueError(f"an owner name must be non-empty, one line, unpadded: {owner!r}")


def _check_ttl(ttl_ms: int) -> None:
    if ttl_ms < 1:
        raise ValueError(f"a lease TTL must be at least 1 ms, not {ttl_ms}")


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """One partition's lease as read for ``group status``; ``owner`` None means free.

    ``fence`` is the last token ever issued for the partition (0: never leased).
    """

    partition: int
    owner: str | None
    token: int | None
    expires_in_ms: int | None
    fence: int


class Leases:
    """Blocking lease operations over a redis-py client (thread-safe, as the client is).

    A ``RedisCluster`` works as well: each script's keys share the partition's hash tag, so
    redis-py routes the call by its first key, and ``read_many``'s pipeline (no transaction)
    is split per node."""

    def __init__(self, client: AnyClient, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys if keys is not None else Keys()
        self._acquire = client.register_script(ACQUIRE)
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)

    def acquire(self, partition: int, owner: str, ttl_ms: int = DEFAULT_TTL_MS) -> int | None:
        """A new fencing token if the lease was free (or already ``owner``'s), else None."""
        _check_owner(owner)
        _check_ttl(ttl_ms)
        k = self.keys
        args: list[str | int] = [owner, ttl_ms]
        token = self._acquire(keys=[k.lease(partition), k.fence(partition)], args=args)
        return None if token is None else int(token)

    def renew(self, partition: int, owner: str, token: int, ttl_ms: int = DEFAULT_TTL_MS) -> bool:
        """Extend the lease to ``ttl_ms`` from now, only if it still holds (owner, token)."""
        _check_ttl(ttl_ms)
        args: list[str | int] = [holder(owner, token), ttl_ms]
        return bool(self._renew(keys=[self.keys.lease(partition)], args=args))

    def release(self, partition: int, owner: str, token: int) -> bool:
        """Give the lease up, only if it still holds (owner, token); the fence stays."""
        return bool(self._release(keys=[self.keys.lease(partition)], args=[holder(owner, token)]))

    def read(self, partition: int) -> LeaseInfo:
        """One partition's lease."""
        return self.read_many([partition])[0]

    def read_all(self, partitions: int) -> list[LeaseInfo]:
        """Every partition's lease, in partition order (one pipelined round trip)."""
        return self.read_many(range(partitions))

    def read_many(self, partitions: Sequence[int]) -> list[LeaseInfo]:
        """These partitions' leases. GET and PTTL are pipelined, not atomic: a lease that
        expires between them reads as free."""
        pipe = self.client.pipeline(transaction=False)
        for p in partitions:
            pipe.get(self.keys.lease(p))
            pipe.pttl(self.keys.lease(p))
            pipe.get(self.keys.fence(p))
        replies = pipe.execute()
        out: list[LeaseInfo] = []
        for i, p in enumerate(partitions):
            value, pttl, fence = replies[3 * i : 3 * i + 3]
            fence_n = int(fence) if fence is not None else 0
            if value is None or pttl is None or int(pttl) == -2:
                out.append(LeaseInfo(p, None, None, None, fence_n))
                continue
            owner, _, token = value.decode().rpartition(" ")
            ttl = int(pttl) if int(pttl) >= 0 else None  # -1: no expiry (set by hand)
            out.append(LeaseInfo(p, owner, int(token), ttl, fence_n))
        return out


class AsyncLeases:
    """:class:`Leases` for trio: each call on a worker thread, never abandoned on cancel."""

    def __init__(self, leases: Leases) -> None:
        self.sync = leases

    @classmethod
    def over(cls, client: AnyClient, keys: Keys | None = None) -> AsyncLeases:
        """Async leases over ``client`` (make it with :func:`engine.group.client.connect`)."""
        return cls(Leases(client, keys))

    @property
    def keys(self) -> Keys:
        return self.sync.keys

    async def acquire(self, partition: int, owner: str, ttl_ms: int = DEFAULT_TTL_MS) -> int | None:
        """See :meth:`Leases.acquire`."""
        return await run_sync(self.sync.acquire, partition, owner, ttl_ms)

    async def renew(
        self, partition: int, owner: str, token: int, ttl_ms: int = DEFAULT_TTL_MS
    ) -> bool:
        """See :meth:`Leases.renew`."""
        return await run_sync(self.sync.renew, partition, owner, token, ttl_ms)

    async def release(self, partition: int, owner: str, token: int) -> bool:
        """See :meth:`Leases.release`."""
        return await run_sync(self.sync.release, partition, owner, token)

    async def read_all(self, partitions: int) -> list[LeaseInfo]:
        """See :meth:`Leases.read_all`."""
        return await run_sync(self.sync.read_all, partitions)

    async def read_many(self, partitions: Sequence[int]) -> list[LeaseInfo]:
        """See :meth:`Leases.read_many`."""
        return await run_sync(self.sync.read_many, partitions)
