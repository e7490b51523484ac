"""How the group talks to Redis: redis-py's sync client, each call on a trio worker thread.

The same choice and the same rule as :mod:`engine.transport.redis_clients`: a thread is never
abandoned on cancel (``abandon_on_cancel=False``), because an abandoned call still runs. For a
lease or a journal batch that would mean a write landing after we stopped waiting for it; a
cancel therefore waits for the call in flight, which every socket timeout bounds.

Keep ``socket_timeout`` well below the lease TTL (:data:`DEFAULT_SOCKET_TIMEOUT_S` against
:data:`engine.group.lease.DEFAULT_TTL_MS`): a renewal stuck longer than the lease is worthless,
and must fail in time for the owner to stop acting on the partition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import redis
import trio

__all__ = ["DEFAULT_SOCKET_TIMEOUT_S", "check_binary", "connect", "run_sync"]

T = TypeVar("T")

DEFAULT_SOCKET_TIMEOUT_S = 2.0
"""How long one Redis call may block before it fails (reads and writes alike)."""


def connect(
    url: str = "redis://127.0.0.1:6379/0",
    *,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_S,
    socket_connect_timeout: float = DEFAULT_SOCKET_TIMEOUT_S,
    **options: Any,
) -> redis.Redis:
    """A redis-py client for the group (binary replies, bounded socket waits)."""
    if options.get("decode_responses"):
        raise ValueError("the group stores binary records: decode_responses must stay False")
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        **options,
    )


def check_binary(client: redis.Redis) -> None:
    """Refuse a client that decodes replies to ``str``: journal records are binary."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if kwargs.get("decode_responses"):
        raise ValueError("the group stores binary records: use a client with decode_responses off")


async def run_sync(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` on a worker thread; a cancel waits for it rather than abandoning it."""
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=False)
