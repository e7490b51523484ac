"""Real Redis topologies for tests: a primary with a replica under Sentinel, and a small Cluster.

Why real processes: what the group must survive (a failover that moves the primary, a slot that
lives on one node of several) is Redis' own behaviour, which no mock reproduces faithfully. Both
topologies are built from :class:`engine.testing.redis_server.RedisServer` children, so they
share its rules: loopback only, free ports, no ``--daemonize``, no libfaketime in the child,
every process killed and every temp dir removed when the ``with`` block ends.

    with SentinelTopology() as topo:
        r = topo.client()          # follows failovers (redis-py's Sentinel pool)
        r.set("k", "v"); r.wait(1, 1000)
        topo.failover()            # the replica is the primary now
        engine_client = connect(topo.url())

    with ClusterTopology() as cluster:
        rc = cluster.client()      # redis.cluster.RedisCluster

Every wait has a deadline and fails with :class:`TopologyError` carrying the processes' log
tails; a missing binary fails with an install hint, never a skip.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from engine.testing.redis_server import (
    INSTALL_HINT,
    LOOPBACK,
    RedisServer,
    RedisServerError,
    find_redis_server,
    server_env,
)

__all__ = [
    "ClusterTopology",
    "SentinelTopology",
    "TopologyError",
    "find_redis_cli",
    "sentinel_command",
]

T = TypeVar("T")

Address = tuple[str, int]

SENTINEL_HINT = (
    "run `bash tests/run.sh`, which installs Debian's redis-sentinel (or put a redis-server "
    "that supports --sentinel on PATH)"
)

#: Sentinel's internal timers, sped up for tests (``SENTINEL DEBUG``, Redis >= 7.0). Defaults
#: are tuned for production: INFO every 10 s (how soon a sentinel sees a replica, or that a
#: demoted primary still claims to be one) and hello messages every 2 s (how soon sentinels
#: find each other, and the 4-period grace before a stale primary is turned into a replica).
_SENTINEL_TIMERS = {"info-period": 500, "publish-period": 500, "ask-period": 500}

_POLL_S = 0.05


class TopologyError(RedisServerError):
    """A topology could not be built, or did not reach the state waited for, in time."""


def sentinel_command() -> tuple[str, tuple[str, ...]]:
    """How to run a sentinel: Debian's ``redis-sentinel``, else ``redis-server --sentinel``."""
    path = shutil.which("redis-sentinel")
    if path is not None:
        return path, ()
    try:
        return find_redis_server(), ("--sentinel",)
    except RuntimeError as exc:
        raise RuntimeError(
            f"neither redis-sentinel nor redis-server is on PATH: {SENTINEL_HINT}"
        ) from exc


def find_redis_cli() -> str:
    """Path of ``redis-cli`` (it creates the cluster), or a RuntimeError telling how to get it."""
    path = shutil.which("redis-cli")
    if path is None:
        raise RuntimeError(f"redis-cli was not found on PATH: {INSTALL_HINT} (and redis-tools)")
    return path


def _probe(port: int) -> redis.Redis:
    """A client for polling: short socket timeouts, no retries (we retry ourselves)."""
    return redis.Redis(
        host=LOOPBACK,
        port=port,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def _tails(servers: Sequence[RedisServer], title: str) -> str:
    """Every listed process' log tail, labelled, for an error message."""
    return "\n".join(f"=== {title} :{s.port} ===\n{s.log_tail(15)}" for s in servers)


class _Topology:
    """What both topologies share: probe clients, bounded waits, tracked clients, teardown."""

    def __init__(self) -> None:
        self._probes: dict[int, redis.Redis] = {}
        self._closeables: list[Any] = []

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _probe(self, port: int) -> redis.Redis:
        c = self._probes.get(port)
        if c is None:
            c = self._probes[port] = _probe(port)
        return c

    def _watched(self) -> list[tuple[str, RedisServer]]:
        """Processes that must stay alive while we wait, with a label for the log."""
        raise NotImplementedError

    def _wait(self, what: str, check: Callable[[], T | None], timeout: float) -> T:
        """Poll ``check`` until it returns something truthy; Redis errors count as "not yet".

        Fails at once if a watched process exits, and after ``timeout`` s otherwise, with the
        last error and every process' log tail: a test must fail loudly, never hang."""
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while True:
            for label, s in self._watched():
                if not s.running:
                    raise TopologyError(
                        f"{label} on :{s.port} exited while waiting for {what}\n"
                        + _tails([s], label)
                    )
            try:
                value = check()
                if value:
                    return value
            except (redis.RedisError, OSError, TopologyError) as exc:
                last = exc
            if time.monotonic() > deadline:
                detail = f" (last error: {type(last).__name__}: {last})" if last else ""
                tails = "\n".join(_tails([s], label) for label, s in self._watched())
                raise TopologyError(
                    f"timed out after {timeout:g} s waiting for {what}{detail}\n{tails}"
                )
            time.sleep(_POLL_S)

    def _track(self, client: T) -> T:
        self._closeables.append(client)
        return client

    def _close_clients(self) -> None:
        for c in [*self._closeables, *self._probes.values()]:
            with contextlib.suppress(Exception):
                c.close()
        self._closeables.clear()
        self._probes.clear()


class SentinelTopology(_Topology):
    """A primary, one replica and ``sentinels`` Redis Sentinels watching them as ``service``.

    ``config`` adds redis.conf settings to both data servers (``{"appendonly": "yes"}``); the
    replica's ``replicaof`` is set here. ``startup_timeout`` bounds each wait of ``start``.
    Handles stay valid across failovers: :meth:`primary` and :meth:`replica` ask the sentinels
    which server plays which role now.
    """

    def __init__(
        self,
        service: str = "wd",
        *,
        config: Mapping[str, str | list[str]] | None = None,
        sentinels: int = 3,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        startup_timeout: float = 20.0,
    ) -> None:
        super().__init__()
        extra = dict(config or {})
        if any(k.lower() in ("replicaof", "slaveof") for k in extra):
            raise ValueError("SentinelTopology sets replicaof itself")
        if not 1 <= quorum <= sentinels:
            raise ValueError(f"quorum must be within 1..{sentinels}, not {quorum}")
        self.service = service
        # A replica's first sync starts at once rather than after the default 5 s delay.
        self.config: dict[str, str | list[str]] = {"repl-diskless-sync-delay": "0", **extra}
        self.sentinel_count = sentinels
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.startup_timeout = startup_timeout
        self.servers: list[RedisServer] = []
        """The data servers, primary first at start; roles change with failovers."""
        self.sentinels: list[RedisServer] = []
        self._killed: set[int] = set()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> SentinelTopology:
        """Start primary, replica (in sync) and sentinels (knowing the replica and each other)."""
        if self.servers:
            raise TopologyError("this SentinelTopology was already started")
        binary, args = sentinel_command()  # fail before starting anything
        try:
            primary = RedisServer(self.config, startup_timeout=self.startup_timeout)
            self.servers.append(primary)
            primary.start()
            replica = RedisServer(
                {**self.config, "replicaof": f"{LOOPBACK} {primary.port}"},
                startup_timeout=self.startup_timeout,
            )
            self.servers.append(replica)
            replica.start()
            self._wait(
                "the replica's first sync",
                lambda: self._replicates(replica, primary),
                self.startup_timeout,
            )
            # Sentinels start after the sync, so their first INFO already lists the replica.
            for _ in range(self.sentinel_count):
                self._start_sentinel(binary, args, primary.port)
            self._wait(
                "the sentinels to know the replica and each other",
                self._sentinels_ready,
                self.startup_timeout,
            )
            return self
        except BaseException:
            self.stop()
            raise

    def _start_sentinel(self, binary: str, args: tuple[str, ...], primary_port: int) -> None:
        name, down, ft = self.service, str(self.down_after_ms), str(self.failover_timeout_ms)
        s = RedisServer(
            startup_timeout=self.startup_timeout,
            binary=binary,
            args=args,
            directives=[
                ("sentinel", "monitor", name, LOOPBACK, str(primary_port), str(self.quorum)),
                ("sentinel", "down-after-milliseconds", name, down),
                ("sentinel", "failover-timeout", name, ft),
                ("sentinel", "parallel-syncs", name, "1"),
                ("sentinel", "announce-ip", LOOPBACK),
            ],
        )
        self.sentinels.append(s)
        s.start()
        timers = [str(x) for kv in _SENTINEL_TIMERS.items() for x in kv]
        self._probe(s.port).execute_command("SENTINEL", "DEBUG", *timers)

    def stop(self) -> None:
        """Stop the sentinels first (no failover during teardown), then the data servers."""
        self._close_clients()
        for s in [*self.sentinels, *reversed(self.servers)]:
            with contextlib.suppress(Exception):
                s.stop()

    def __repr__(self) -> str:
        return f"<SentinelTopology {self.url() if self.sentinels else self.service}>"

    # -- addresses and clients ----------------------------------------------------------------

    def sentinel_addresses(self) -> list[Address]:
        """``(host, port)`` of every sentinel, as redis-py's ``Sentinel`` takes them."""
        return [(LOOPBACK, s.port) for s in self.sentinels]

    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,.../SERVICE`` for
        :func:`engine.group.client.connect`."""
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinel_addresses())
        return f"redis+sentinel://{hosts}/{self.service}"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A client of the current primary through Sentinel; its pool follows failovers.

        A command in flight during a failover may fail (ConnectionError, ReadOnlyError); the
        next one asks the sentinels again. Closed when the topology stops."""
        kwargs.setdefault("socket_timeout", 5.0)
        kwargs.setdefault("socket_connect_timeout", 2.0)
        sentinel = Sentinel(
            self.sentinel_addresses(),
            sentinel_kwargs={"socket_timeout": 1.0, "socket_connect_timeout": 1.0},
        )
        for s in sentinel.sentinels:
            self._track(s)
        client: redis.Redis = sentinel.master_for(self.service, **kwargs)
        return self._track(client)

    def primary_address(self) -> Address:
        """The primary's address as the first answering sentinel reports it."""
        last: BaseException | None = None
        for s in self.sentinels:
            if not s.running:
                continue
            try:
                return self._reported_by(s)
            except (redis.RedisError, OSError, TopologyError) as exc:
                last = exc
        raise TopologyError(f"no sentinel reported the primary of {self.service!r}: {last}")

    def primary(self) -> RedisServer:
        """The data server the sentinels name as primary now."""
        _, port = self.primary_address()
        for s in self.servers:
            if s.port == port and s.running:
                return s
        raise TopologyError(f"the sentinels name :{port} as primary, which is not running")

    def replica(self) -> RedisServer:
        """A running data server that is not the primary (there is one unless it was killed)."""
        _, port = self.primary_address()
        for s in self.servers:
            if s.port != port and s.running:
                return s
        raise TopologyError("no replica is running")

    # -- failures -----------------------------------------------------------------------------

    def failover(self, timeout: float = 30.0, *, resync: bool = True) -> Address:
        """Promote the replica (``SENTINEL FAILOVER``) and return the new primary's address.

        Returns once every sentinel reports the new address and that server answers as
        master; with ``resync`` (the default), also once the old primary was turned into its
        replica and is in sync, so ``WAIT 1`` works again. Bounded by ``timeout`` s."""
        deadline = time.monotonic() + timeout
        old = self.primary()
        candidate = self.replica()

        def ask() -> bool:
            # NOGOODSLAVE/INPROG right after start or a previous failover: try again shortly.
            self._probe(self.sentinels[0].port).execute_command(
                "SENTINEL", "FAILOVER", self.service
            )
            return True

        self._wait(f"SENTINEL FAILOVER {self.service} to be accepted", ask, timeout)
        new = self._wait_for_new_primary(old.port, deadline)
        if new != (LOOPBACK, candidate.port):
            raise TopologyError(f"sentinels promoted {new}, not the replica :{candidate.port}")
        if resync:
            self._wait(
                f"the old primary :{old.port} to replicate from :{candidate.port}",
                lambda: self._replicates(old, candidate),
                max(0.1, deadline - time.monotonic()),
            )
        return new

    def kill_primary(self, timeout: float = 30.0) -> Address:
        """SIGKILL the primary and wait until the sentinels agree on the promoted replica
        (``down-after-milliseconds``, a quorum, a leader election, then the failover).
        Returns the new primary's address; the killed server stays down."""
        deadline = time.monotonic() + timeout
        old = self.primary()
        assert old.process is not None
        self._killed.add(old.port)
        old.process.kill()
        old.process.wait(timeout=10)
        return self._wait_for_new_primary(old.port, deadline)

    def _wait_for_new_primary(self, old_port: int, deadline: float) -> Address:
        def agreed() -> Address | None:
            seen = {self._reported_by(s) for s in self.sentinels if s.running}
            if len(seen) != 1:
                return None
            (address,) = seen
            if address[1] == old_port:
                return None
            role = self._probe(address[1]).execute_command("ROLE")
            return address if role and role[0] == "master" else None

        return self._wait(
            f"every sentinel to report a primary other than :{old_port}",
            agreed,
            max(0.1, deadline - time.monotonic()),
        )

    # -- state checks -------------------------------------------------------------------------

    def _watched(self) -> list[tuple[str, RedisServer]]:
        # A killed primary is expected to be down; only what runs now must stay up.
        servers = [("redis-server", s) for s in self.servers if s.port not in self._killed]
        return servers + [("sentinel", s) for s in self.sentinels]

    def _reported_by(self, sentinel: RedisServer) -> Address:
        reply = self._probe(sentinel.port).execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
        )
        if not reply:
            raise TopologyError(f"sentinel :{sentinel.port} does not know {self.service!r}")
        return str(reply[0]), int(reply[1])

    def _replicates(self, replica: RedisServer, primary: RedisServer) -> bool:
        """``replica`` follows ``primary`` with its link up, and ``primary`` sees it online."""
        r = self._probe(replica.port).info("replication")
        if r.get("role") != "slave" or int(r.get("master_port", -1)) != primary.port:
            return False
        if r.get("master_link_status") != "up":
            return False
        p = self._probe(primary.port).info("replication")
        return any(
            isinstance(v, dict)
            and int(v.get("port", -1)) == replica.port
            and v.get("state") == "online"
            for k, v in p.items()
            if k.startswith("slave")
        )

    def _sentinels_ready(self) -> bool:
        """Each sentinel lists the replica as healthy, knows every other sentinel, and can
        reach a quorum (``SENTINEL CKQUORUM``), so a kill of the primary fails over too."""
        replica_port = self.servers[1].port
        for s in self.sentinels:
            probe = self._probe(s.port)
            replicas = [
                _state(x) for x in probe.execute_command("SENTINEL", "REPLICAS", self.service)
            ]
            if not any(int(r["port"]) == replica_port and _healthy(r) for r in replicas):
                return False
            others = probe.execute_command("SENTINEL", "SENTINELS", self.service)
            if len(others) != self.sentinel_count - 1:
                return False
            probe.execute_command("SENTINEL", "CKQUORUM", self.service)  # raises if not
        return True


def _state(reply: Any) -> dict[str, Any]:
    """A sentinel's instance description as a dict (redis-py parses some replies, not all)."""
    if isinstance(reply, dict):
        return reply
    return {str(reply[i]): reply[i + 1] for i in range(0, len(reply) - 1, 2)}


def _healthy(state: Mapping[str, Any]) -> bool:
    """No down or disconnected flag (``flags`` is a string, or a set under RESP3)."""
    flags = state.get("flags", "")
    names = set(flags.split(",")) if isinstance(flags, str) else set(flags)
    return not names & {"s_down", "o_down", "disconnected"}


class ClusterTopology(_Topology):
    """``masters`` Redis Cluster nodes (no replicas) owning all 16384 slots between them.

    Created by ``redis-cli --cluster create`` (bounded by ``create_timeout``), then waited for
    until every node says ``cluster_state:ok``. ``config`` adds redis.conf settings to every
    node. Each node has its own ``cluster-config-file`` in its temp dir and its own cluster bus
    port (``cluster-port``, a free port, since ``port + 10000`` may not be free or valid).
    """

    def __init__(
        self,
        masters: int = 3,
        *,
        config: Mapping[str, str | list[str]] | None = None,
        node_timeout_ms: int = 2000,
        startup_timeout: float = 20.0,
        create_timeout: float = 60.0,
    ) -> None:
        super().__init__()
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.masters = masters
        self.config: dict[str, str | list[str]] = {
            "cluster-enabled": "yes",
            "cluster-config-file": "nodes.conf",  # relative to the node's own dir
            "cluster-node-timeout": str(node_timeout_ms),
            **dict(config or {}),
        }
        self.startup_timeout = startup_timeout
        self.create_timeout = create_timeout
        self.nodes: list[RedisServer] = []

    def start(self) -> ClusterTopology:
        """Start the nodes, join them into one cluster, and wait until it serves every slot."""
        if self.nodes:
            raise TopologyError("this ClusterTopology was already started")
        cli = find_redis_cli()
        try:
            for _ in range(self.masters):
                node = RedisServer(
                    self.config,
                    startup_timeout=self.startup_timeout,
                    port_settings=["cluster-port"],
                )
                self.nodes.append(node)
                node.start()
            self._create(cli)
            self._wait("cluster_state:ok on every node", self._cluster_ok, self.startup_timeout)
            return self
        except BaseException:
            self.stop()
            raise

    def _create(self, cli: str) -> None:
        command = [
            cli,
            "--cluster",
            "create",
            *(f"{h}:{p}" for h, p in self.addresses()),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]
        try:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.create_timeout,
                env=server_env(),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode(errors="replace")[-2000:]
            raise TopologyError(
                f"redis-cli --cluster create did not finish in {self.create_timeout:g} s\n{out}\n"
                + _tails(self.nodes, "cluster node")
            ) from exc
        if done.returncode != 0:
            out = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
            raise TopologyError(
                f"redis-cli --cluster create failed ({done.returncode})\n{out}\n"
                + _tails(self.nodes, "cluster node")
            )

    def _cluster_ok(self) -> bool:
        for node in self.nodes:
            info = self._probe(node.port).execute_command("CLUSTER", "INFO")
            fields = dict(line.split(":", 1) for line in str(info).splitlines() if ":" in line)
            if fields.get("cluster_state") != "ok":
                return False
            if int(fields.get("cluster_known_nodes", 0)) != self.masters:
                return False
        return True

    def stop(self) -> None:
        """Close clients, stop every node, remove their dirs."""
        self._close_clients()
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()

    def __repr__(self) -> str:
        return f"<ClusterTopology {self.url() if self.nodes else self.masters}>"

    def _watched(self) -> list[tuple[str, RedisServer]]:
        return [("cluster node", n) for n in self.nodes]

    def addresses(self) -> list[Address]:
        """``(host, port)`` of every node."""
        return [(LOOPBACK, n.port) for n in self.nodes]

    def url(self) -> str:
        """``redis+cluster://127.0.0.1:A,127.0.0.1:B,...`` for
        :func:`engine.group.client.connect`."""
        return "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in self.addresses())

    def client(self, **kwargs: Any) -> RedisCluster:
        """A ``RedisCluster`` client (bounded socket waits); closed when the topology stops."""
        kwargs.setdefault("socket_timeout", 5.0)
        kwargs.setdefault("socket_connect_timeout", 2.0)
        return self._track(RedisCluster(host=LOOPBACK, port=self.nodes[0].port, **kwargs))
