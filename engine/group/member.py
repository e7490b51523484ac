"""A member of a group of engines: heartbeats, leases, one engine per owned partition.

Each ``serve --group`` process runs one :class:`GroupMember`. Every round (a sixth of the
lease TTL) it

1. heartbeats into ``{wd}:members`` (a sorted set scored by when the heartbeat lapses, stamped
   by Redis' own clock in a script, so members' clocks never need to agree), and reads who is
   live;
2. renews the lease of every partition it owns; a partition whose renewal is refused (another
   member holds it now) is stopped at once, and so is one whose lease may have lapsed because
   renewals kept failing (the watchdog: ``ttl`` after the last renewal that *succeeded*, counted
   from when it was *sent*, less a margin);
3. reads every partition's lease and applies :func:`plan_assignment`: releases its extras
   (a clean stop: drain, snapshot, then release, so the taker replays little) and acquires its
   share of the free ones.

An owned partition runs a whole engine (:func:`engine.app.open_app`) over that partition's
:class:`RedisJournal` and streams (``{wd:pN}:intake``, ``:feedback``, ``:campaigns``), under the
consumer name ``pN``: whoever owns the partition reads the same pending list, so entries the
previous owner took and never acked are read again by the next one. Restoring the journal fires
the deadlines that fell due while nobody owned the partition, and re-sends the actions that
were produced but not confirmed sent, with their original keys.

Correctness rests on the fencing tokens, never on this loop's timing: a member that stalls past
its lease and wakes up can still try to write, and Redis refuses it (:class:`FencedError`).
What the timing bounds is how late a deadline can fire after a member dies: at most the TTL
(the lease lapses) plus one round (a survivor notices) plus the replay.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
import trio

from engine.app import AppConfig, open_app
from engine.errors import WarnDispatchError
from engine.group.board import BoardPublisher, publish_stats
from engine.group.client import run_sync
from engine.group.journal import RedisJournal
from engine.group.lease import AsyncLeases
from engine.group.partitions import Keys, plan_assignment
from engine.group.registry_feed import RegistryFollower
from engine.group.router import ROUTER_GROUP, Kind, RouterStats, run_router
from engine.journal import FsyncPolicy, JournalError
from engine.registry.registry import Registry
from engine.registry.responders import RegistryDirectory
from engine.rules.escalation import EscalationRules
from engine.scheduler import Engine
from engine.stats import Stats
from engine.transport.base import OutboxSink
from engine.transport.redis_clients import RedisPyClient
from engine.transport.redis_streams import (
    DEFAULT_GROUP,
    RedisDeadLetters,
    RedisOutbox,
    RedisStreamSource,
    SourceOptions,
)
from engine.window_tags import RecentTags

log = logging.getLogger("engine.group")

__all__ = ["DEFAULT_GROUP_TTL_MS", "GroupConfig", "GroupMember", "OwnedInfo", "default_member"]

DEFAULT_GROUP_TTL_MS = 6000
"""A group's default lease TTL: a dead member's partitions are taken over within about
``ttl + ttl/6`` plus replay, under the 10 s the issue asks for."""

WATCHDOG_MARGIN = 0.2
"""Stop a partition this fraction of the TTL before its lease could have lapsed (clock-rate
drift between us and Redis, and the time to stop)."""

STATS_EVERY_S = 5.0
"""How often a member publishes its statistics to the board."""

SLICE_MS = 1000
"""Longest single blocking read of a partition's streams. A member blocks three readers per
partition; at trio's usual 100 ms slices, 16 idle partitions wake ~500 times a second, and
every wake takes the GIL from the engines. A stop waits at most one slice."""

THREADS_BASE = 32
"""Worker threads beyond four per partition (routers, journal writers, renewals)."""

# KEYS[1] members; ARGV[1] member, ARGV[2] ttl_ms. Redis' clock stamps the heartbeat, so members
# whose clocks disagree still agree on who is live. Returns the live members.
HEARTBEAT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[2] ~= '0' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def default_member() -> str:
    """``<host>-<pid>``: unique per live process. Give a stable ``--member`` instead to get
    one's partitions back at once after a restart (same name, new token)."""
    return f"{socket.gethostname() or 'engine'}-{os.getpid()}"


@dataclass(frozen=True, kw_only=True)
class GroupConfig:
    """How a member takes part. ``name`` is the key prefix the whole group shares."""

    member: str
    name: str = "wd"
    partitions: int = 16
    lease_ttl_ms: int = DEFAULT_GROUP_TTL_MS
    wait_replicas: int = 0
    wait_timeout_ms: int = 1000
    fsync: FsyncPolicy = field(default_factory=FsyncPolicy.always)
    snapshot_every: int = 50_000
    claim_idle_s: float = 10.0
    routers: bool = True
    board: bool = True
    """Publish owned partitions' states and this member's statistics to the group's board
    (:mod:`engine.group.board`), so any member can answer the API for the whole group."""

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError(f"partitions must be at least 1, not {self.partitions}")
        if self.lease_ttl_ms < 600:
            raise ValueError(f"a lease TTL under 600 ms is not workable: {self.lease_ttl_ms}")
        if self.wait_replicas < 0:
            raise ValueError(f"wait_replicas must be >= 0, not {self.wait_replicas}")

    @property
    def keys(self) -> Keys:
        return Keys(self.name)

    @property
    def round_s(self) -> float:
        return self.lease_ttl_ms / 6000


@dataclass
class _Owned:
    partition: int
    token: int
    valid_until: float
    stop: trio.Event = field(default_factory=trio.Event)
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    started_at: float = 0.0
    engine: Engine | None = None
    """The partition's engine while it runs (for reloads)."""


@dataclass(frozen=True)
class OwnedInfo:
    """A partition this member owns, for status and tests."""

    partition: int
    token: int
    valid_for_s: float


class GroupMember:
    """One process' part of the group. ``client`` is a binary redis-py client (plain,
    Sentinel or Cluster: :func:`engine.group.client.connect`)."""

    def __init__(
        self,
        config: GroupConfig,
        client: Any,
        registry: Registry,
        rules: EscalationRules | None = None,
        *,
        outbox: OutboxSink | None = None,
        engine_options: dict[str, Any] | None = None,
        campaign_wall_clock: Callable[[float], datetime] | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.registry = registry
        self.rules = rules
        self.keys = config.keys
        self.streams = RedisPyClient.over(client, slice_ms=SLICE_MS)
        self.outbox = outbox or RedisOutbox(self.streams, self.keys.stream("outbox"))
        self.dead = RedisDeadLetters(self.streams, self.keys.stream("dead"), 1_000_000)
        self.leases = AsyncLeases.over(client, self.keys)
        self.stats = Stats.from_registry(registry, start=time.time())
        self.window_tags = RecentTags(registry)
        self.directory = RegistryDirectory(registry)
        self.engine_options = engine_options or {}
        self.campaign_wall_clock = campaign_wall_clock
        self.registry_follower = RegistryFollower(
            client, self.keys.stream("registry"), registry, self.dead, config.member
        )
        self.router_stats: dict[Kind, RouterStats] = {
            k: RouterStats() for k in ("intake", "feedback", "campaigns")
        }
        self.owned: dict[int, _Owned] = {}
        self.live: list[str] = []
        self.takeovers = 0
        self.lost = 0
        self._heartbeat = client.register_script(HEARTBEAT)
        self._nursery: trio.Nursery | None = None

    # -- what the member holds ----------------------------------------------------------------

    def reload(self, load: Callable[[], EscalationRules]) -> bool:
        """SIGHUP for a group member: load the rules once; a bad file keeps the old rules in
        every partition (logged, and counted in each partition engine's reload metrics);
        good rules go into every running partition's engine and into those taken later."""
        try:
            rules = load()
        except WarnDispatchError as exc:
            log.error("rules reload refused, the old rules stay in force: %s", exc)
            for o in self.owned.values():
                if o.engine is not None:
                    o.engine.reload_refused(exc)
            return False
        self.rules = rules
        ok = True
        for o in list(self.owned.values()):
            if o.engine is not None:
                ok = o.engine.reload_from(lambda: rules) and ok
        return ok

    def owned_info(self) -> list[OwnedInfo]:
        now = trio.current_time()
        return [
            OwnedInfo(o.partition, o.token, o.valid_until - now)
            for o in sorted(self.owned.values(), key=lambda o: o.partition)
        ]

    # -- the member's life --------------------------------------------------------------------

    async def run(
        self, stop: trio.Event, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Take part until ``stop``; then hand every partition back cleanly and leave."""
        cfg = self.config
        log.info(
            "member %s joins group %s: %d partitions, lease %d ms, wait %d replicas",
            cfg.member,
            cfg.name,
            cfg.partitions,
            cfg.lease_ttl_ms,
            cfg.wait_replicas,
        )
        # Each owned partition blocks three worker threads in its stream reads (and the routers
        # three more): with trio's default of 40, lease renewals would queue behind them.
        limiter = trio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, THREADS_BASE + 5 * cfg.partitions)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            # The registry first: warnings for residents added since the files were written
            # need them. Then follow it, route, and take partitions.
            await self.registry_follower.catch_up()
            log.info("registry: %d changes applied on start", self.registry_follower.applied)
            nursery.start_soon(self._supervised, "registry", self.registry_follower.run)
            if cfg.routers:
                for kind in ("intake", "feedback", "campaigns"):
                    nursery.start_soon(
                        self._supervised, f"router {kind}", functools.partial(self._route, kind)
                    )
            if cfg.board:
                nursery.start_soon(self._supervised, "board statistics", self._publish_stats)
            task_status.started()
            await self._rounds(stop)
            await self._leave()
            nursery.cancel_scope.cancel()

    async def _rounds(self, stop: trio.Event) -> None:
        cfg = self.config
        while not stop.is_set():
            started = trio.current_time()
            self._watchdog()  # first: after a long stall (SIGSTOP) nothing runs on a lapsed lease
            try:
                await self._round()
            except (redis.RedisError, OSError) as exc:
                log.warning("member %s: round failed (%s); retrying", cfg.member, exc)
            self._watchdog()
            with trio.move_on_at(started + cfg.round_s):
                await stop.wait()

    async def _round(self) -> None:
        cfg = self.config
        live = await run_sync(
            self._heartbeat, [self.keys.members()], [cfg.member, cfg.lease_ttl_ms]
        )
        self.live = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in live)
        for o in list(self.owned.values()):
            if o.done.is_set():  # the engine stopped by itself (fenced, a Redis error)
                self._forget(o)
                await self._release(o)
                continue
            sent = trio.current_time()
            if await self.leases.renew(o.partition, cfg.member, o.token, cfg.lease_ttl_ms):
                o.valid_until = sent + cfg.lease_ttl_ms / 1000 * (1 - WATCHDOG_MARGIN)
            else:
                log.warning("partition %d: lease lost to another member; stopping", o.partition)
                self.lost += 1
                o.cancel.cancel()
                self._forget(o)
        infos = await self.leases.read_all(cfg.partitions)
        owners = {i.partition: i.owner for i in infos}
        acquire, release = plan_assignment(cfg.partitions, cfg.member, set(self.live), owners)
        extras = [self.owned[p] for p in release if p in self.owned]
        if extras:
            async with trio.open_nursery() as n:  # stopped side by side: each waits a read
                for extra in extras:
                    n.start_soon(self._hand_back, extra)
        # Leases in our name that we do not run: an earlier incarnation of this member (same
        # name, restarted) held them. Take them back at once rather than wait for them to lapse.
        orphans = [
            p
            for p, who in owners.items()
            if who == cfg.member and p not in self.owned and p not in release
        ]
        for p in sorted(set(acquire) | set(orphans)):
            await self._take(p)

    def _watchdog(self) -> None:
        now = trio.current_time()
        for o in list(self.owned.values()):
            if now >= o.valid_until:
                log.error(
                    "partition %d: lease may have lapsed (renewals failing); stopping", o.partition
                )
                self.lost += 1
                o.cancel.cancel()
                self._forget(o)

    def _forget(self, o: _Owned) -> None:
        if self.owned.get(o.partition) is o:
            del self.owned[o.partition]

    async def _take(self, p: int) -> None:
        cfg = self.config
        sent = trio.current_time()
        token = await self.leases.acquire(p, cfg.member, cfg.lease_ttl_ms)
        if token is None:
            return
        if cfg.wait_replicas:
            # A grant that a failover loses could be granted again to another member.
            await run_sync(
                self.client.execute_command, "WAIT", cfg.wait_replicas, cfg.wait_timeout_ms
            )
        o = _Owned(p, token, sent + cfg.lease_ttl_ms / 1000 * (1 - WATCHDOG_MARGIN))
        o.started_at = sent
        self.owned[p] = o
        self.takeovers += 1
        assert self._nursery is not None
        self._nursery.start_soon(self._run_partition, o)

    async def _hand_back(self, o: _Owned) -> None:
        """Stop the partition's engine cleanly (drain, snapshot), then release its lease."""
        o.stop.set()
        with trio.move_on_after(self.config.lease_ttl_ms / 2000):
            await o.done.wait()
        if not o.done.is_set():
            o.cancel.cancel()
        self._forget(o)
        await self._release(o)

    async def _release(self, o: _Owned) -> None:
        try:
            await self.leases.release(o.partition, self.config.member, o.token)
        except (redis.RedisError, OSError) as exc:
            log.warning("partition %d: release failed (%s); it lapses instead", o.partition, exc)

    async def _leave(self) -> None:
        with trio.CancelScope(shield=True):
            for o in list(self.owned.values()):
                o.stop.set()
            for o in list(self.owned.values()):
                with trio.move_on_after(self.config.lease_ttl_ms / 1000):
                    await o.done.wait()
                await self._release(o)
                self._forget(o)
            with contextlib.suppress(redis.RedisError, OSError):
                await run_sync(self._heartbeat, [self.keys.members()], [self.config.member, 0])
        log.info("member %s left group %s", self.config.member, self.config.name)

    # -- one partition ------------------------------------------------------------------------

    def _source_options(self, consumer: str, group: str = DEFAULT_GROUP) -> SourceOptions:
        idle = self.config.claim_idle_s
        return SourceOptions(
            group=group, consumer=consumer, claim_idle_s=idle, claim_every_s=idle / 2
        )

    async def _sources(
        self, p: int
    ) -> tuple[RedisStreamSource, RedisStreamSource, RedisStreamSource]:
        """The partition's intake, feedback and campaign streams, read as consumer ``pN``."""
        keys, opts = self.keys, self._source_options(f"p{p}")
        dead = keys.stream("dead")
        return (
            await RedisStreamSource.open(self.streams, keys.intake(p), dead, opts),
            await RedisStreamSource.open(self.streams, keys.feedback(p), dead, opts),
            await RedisStreamSource.open(self.streams, keys.campaigns(p), dead, opts),
        )

    async def _run_partition(self, o: _Owned) -> None:
        cfg, keys, p = self.config, self.keys, o.partition
        try:
            with o.cancel:
                async with RedisJournal.open(
                    self.client,
                    p,
                    cfg.member,
                    o.token,
                    keys=keys,
                    policy=cfg.fsync,
                    wait_replicas=cfg.wait_replicas,
                    wait_timeout_ms=cfg.wait_timeout_ms,
                ) as journal:
                    app_config = AppConfig(
                        registry=self.registry,
                        rules=self.rules,
                        journal=journal,
                        snapshot_every=cfg.snapshot_every,
                        stats=self.stats,
                        window_tags=self.window_tags,
                        directory=self.directory,
                        engine_options=self.engine_options,
                        campaign_wall_clock=self.campaign_wall_clock,
                    )
                    async with open_app(app_config) as app:
                        o.engine = app.engine
                        intake, fb, camp = await self._sources(p)
                        log.info(
                            "partition %d taken (token %d): %d warnings restored, %d active, "
                            "%d actions to re-send",
                            p,
                            o.token,
                            app.engine.known,
                            app.engine.pending,
                            app.engine.unsent,
                        )
                        async with trio.open_nursery() as board:
                            if cfg.board:
                                publisher = BoardPublisher(self.client, keys, o.token)
                                board.start_soon(
                                    self._supervised,
                                    f"board p{p}",
                                    functools.partial(publisher.run, app),
                                )
                            await app.serve(
                                intake,
                                self.outbox,
                                feedback=fb,
                                campaigns=camp,
                                dead_letters=self.dead,
                                stop=o.stop,
                                handle_signals=False,
                            )
                            board.cancel_scope.cancel()
                        log.info("partition %d handed back (token %d)", p, o.token)
        except* JournalError as group:
            log.warning("partition %d (token %d) stopped: %s", p, o.token, group.exceptions[0])
        except* (redis.RedisError, OSError) as group:
            log.warning("partition %d (token %d) stopped: %r", p, o.token, group.exceptions[0])
        except* Exception as group:
            log.error(
                "partition %d (token %d) failed: %s",
                p,
                o.token,
                type(group.exceptions[0]).__name__,
                exc_info=group.exceptions[0],
            )
        finally:
            o.done.set()

    # -- routers ------------------------------------------------------------------------------

    async def _route(self, kind: Kind) -> None:
        cfg, keys = self.config, self.keys
        source = await RedisStreamSource.open(
            self.streams,
            keys.stream(kind),
            keys.stream("dead"),
            self._source_options(cfg.member, ROUTER_GROUP),
        )
        await run_router(
            kind,
            source,
            self.client,
            keys,
            cfg.partitions,
            wait_replicas=cfg.wait_replicas,
            wait_timeout_ms=cfg.wait_timeout_ms,
            stats=self.router_stats[kind],
        )

    async def _publish_stats(self) -> None:
        """This member's statistics (its partitions') onto the board, every few seconds."""
        while True:
            await publish_stats(
                self.client, self.keys, self.config.member, self.stats.summary(until=time.time())
            )
            await trio.sleep(STATS_EVERY_S)

    async def _supervised(self, what: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run`` forever; after an error (Redis failing over, a connection reset) start
        it again after a pause, so a router or the registry follower never stays down."""
        pause = 0.1
        while True:
            began = trio.current_time()
            try:
                await run()
            except Exception as exc:
                if trio.current_time() - began > 10:
                    pause = 0.1
                log.warning("%s: %s; restarting in %.1f s", what, type(exc).__name__, pause)
                await trio.sleep(pause)
                pause = min(pause * 2, 2.0)
