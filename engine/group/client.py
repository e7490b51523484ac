"""How the group talks to Redis: redis-py's sync client, each call on a trio worker thread.

The same choice and the same rule as :mod:`engine.transport.redis_clients`: a thread is never
abandoned on cancel (``abandon_on_cancel=False``), because an abandoned call still runs. For a
lease or a journal batch that would mean a write landing after we stopped waiting for it; a
cancel therefore waits for the call in flight, which every socket timeout bounds.

Keep ``socket_timeout`` well below the lease TTL (:data:`DEFAULT_SOCKET_TIMEOUT_S` against
:data:`engine.group.lease.DEFAULT_TTL_MS`): a renewal stuck longer than the lease is worthless,
and must fail in time for the owner to stop acting on the partition.

:func:`connect` takes three URL forms, so one ``--redis`` option reaches any deployment:

- ``redis://HOST:PORT/DB`` (and what else ``redis.Redis.from_url`` takes): one server.
- ``redis+sentinel://H1:P1,H2:P2[,...]/SERVICE[/DB]``: the primary Sentinel names for
  SERVICE; the client's pool asks the sentinels again after a failover.
- ``redis+cluster://H1:P1[,H2:P2,...]``: a Redis Cluster (every key of a partition shares
  one hash tag, :class:`engine.group.partitions.Keys`, so its scripts run on one node).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

import redis
import trio
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

__all__ = [
    "DEFAULT_SOCKET_TIMEOUT_S",
    "AnyClient",
    "check_binary",
    "connect",
    "connect_redis",
    "run_sync",
]

T = TypeVar("T")

AnyClient: TypeAlias = redis.Redis | RedisCluster
"""What :func:`connect` returns: one server or Sentinel's primary, or a Cluster."""

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
URL_FORMS = (
    "redis://HOST:PORT/DB, redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB] "
    "or redis+cluster://HOST:PORT[,HOST:PORT...]"
)

DEFAULT_SOCKET_TIMEOUT_S = 2.0
"""How long one Redis call may block before it fails (reads and writes alike)."""


def connect(
    url: str = "redis://127.0.0.1:6379/0",
    *,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_S,
    socket_connect_timeout: float = DEFAULT_SOCKET_TIMEOUT_S,
    **options: Any,
) -> AnyClient:
    """A redis-py client for the group (binary replies, bounded socket waits), for any of the
    three URL forms; a ``redis+cluster://`` URL gives a ``RedisCluster``. Raises ValueError
    naming the expected forms for a URL it cannot use."""
    _refuse_decoding(options)
    scheme = _scheme(url)
    if scheme == CLUSTER_SCHEME:
        nodes, path = _hosts(url, scheme)
        if path.strip("/") not in ("", "0"):
            raise ValueError(f"a Redis Cluster has only database 0, not {path!r}: {url!r}")
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in nodes],
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            **options,
        )
    return connect_redis(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        **options,
    )


def connect_redis(
    url: str = "redis://127.0.0.1:6379/0",
    *,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_S,
    socket_connect_timeout: float = DEFAULT_SOCKET_TIMEOUT_S,
    **options: Any,
) -> redis.Redis:
    """:func:`connect` for the forms that give a ``redis.Redis`` (one server, or Sentinel's
    primary), for callers that need that type; a cluster URL raises ValueError."""
    _refuse_decoding(options)
    scheme = _scheme(url)
    if scheme == CLUSTER_SCHEME:
        raise ValueError(f"{url!r} is a Redis Cluster: use connect(), which returns RedisCluster")
    if scheme == SENTINEL_SCHEME:
        sentinels, path = _hosts(url, scheme)
        service, db = _service_and_db(path, url)
        sentinel = Sentinel(
            sentinels,
            socket_timeout=socket_timeout,
            sentinel_kwargs={
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": socket_connect_timeout,
            },
        )
        client: redis.Redis = sentinel.master_for(
            service,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            db=db,
            **options,
        )
        return client
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        **options,
    )


def _refuse_decoding(options: dict[str, Any]) -> None:
    if options.get("decode_responses"):
        raise ValueError("the group stores binary records: decode_responses must stay False")


def _scheme(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in (
        "redis",
        "rediss",
        "unix",
        SENTINEL_SCHEME,
        CLUSTER_SCHEME,
    ):
        raise ValueError(f"expected {URL_FORMS}, not {url!r}")
    return scheme.lower()


def _hosts(url: str, scheme: str) -> tuple[list[tuple[str, int]], str]:
    """The ``HOST:PORT`` list of a sentinel or cluster URL, and the path after it."""
    rest = url.split("://", 1)[1]
    if any(c in rest for c in "?#@"):
        raise ValueError(
            f"{scheme}:// URLs take no credentials, query or fragment (expected {URL_FORMS}): "
            f"{url!r}"
        )
    netloc, _, path = rest.partition("/")
    if not netloc:
        raise ValueError(
            f"{scheme}:// needs at least one HOST:PORT (expected {URL_FORMS}): {url!r}"
        )
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        host, sep, port = item.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1]
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected HOST:PORT, not {item!r}, in {url!r} ({URL_FORMS})")
        hosts.append((host, int(port)))
    return hosts, path


def _service_and_db(path: str, url: str) -> tuple[str, int]:
    """``SERVICE`` or ``SERVICE/DB`` from a sentinel URL's path."""
    parts = path.split("/") if path else []
    if parts and parts[-1] == "":
        parts.pop()  # one trailing slash
    if not parts or not parts[0] or len(parts) > 2:
        raise ValueError(f"expected redis+sentinel://HOST:PORT[,...]/SERVICE[/DB], not {url!r}")
    if len(parts) == 2 and not parts[1].isdigit():
        raise ValueError(f"the database must be a number >= 0, not {parts[1]!r}, in {url!r}")
    return parts[0], int(parts[1]) if len(parts) == 2 else 0


def check_binary(client: AnyClient) -> None:
    """Refuse a client that decodes replies to ``str``: journal records are binary.

    ``get_connection_kwargs`` is the pool's settings on ``redis.Redis`` and the nodes' on
    ``RedisCluster`` (which has no ``connection_pool``); the encoder decides what replies are.
    """
    kwargs = client.get_connection_kwargs()
    if kwargs.get("decode_responses") or client.get_encoder().decode_responses:
        raise ValueError("the group stores binary records: use a client with decode_responses off")


async def run_sync(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` on a worker thread; a cancel waits for it rather than abandoning it."""
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=False)
