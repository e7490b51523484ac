"""``warn-dispatch serve`` and ``status``: the engine as a process, and a warning read back
from its journal. Parsing and printing only: the assembly is :mod:`engine.app`."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import click
import msgspec
import redis
import trio
from rich.console import Console

from engine.app import App, AppConfig, open_app
from engine.cli.common import (
    cache_dir,
    county_option,
    fail,
    group_options,
    open_county,
    open_group_client,
    parse_ms,
    redis_url_option,
    residents_option,
    rule_sources,
    rules_option,
    seed_option,
    site_rules,
    watch_signals,
)
from engine.durability import decode_record, decode_snapshot, rebuild
from engine.errors import WarnDispatchError
from engine.group.inspect import partition_state
from engine.group.member import GroupConfig, GroupMember, default_member
from engine.group.partitions import Keys, partition_of
from engine.journal import FsyncPolicy
from engine.journal.reader import read_journal
from engine.machine import WarningState
from engine.model import describe_target
from engine.registry.registry import Registry
from engine.rules.escalation import EscalationRules
from engine.rules.sources import load_rules
from engine.service import ServiceStats
from engine.transport import (
    JsonLinesDeadLetters,
    JsonLinesIntake,
    JsonLinesOutbox,
    SourceOptions,
    open_redis_transport,
)

LOCAL_TZ = timezone(timedelta(hours=8), "UTC+8")
"""Timelines are shown in the county's local time."""


def _parse_fsync(text: str) -> FsyncPolicy:
    if text == "always":
        return FsyncPolicy.always()
    if text == "none":
        return FsyncPolicy.none()
    mode, _, ms = text.partition(":")
    try:
        if mode == "interval":
            return FsyncPolicy.interval(float(ms))
    except ValueError:
        pass
    raise click.BadParameter("expected always, none or interval:MS (e.g. interval:5)")


def _parse_redis(url: str) -> tuple[str, int, int]:
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise click.BadParameter("expected redis://HOST:PORT/DB")
    try:
        db = int(parts.path.strip("/") or 0)
        return parts.hostname or "127.0.0.1", parts.port or 6379, db
    except ValueError:
        raise click.BadParameter("expected redis://HOST:PORT/DB with a numeric DB") from None


journal_option = click.option(
    "--journal",
    "journal_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Journal folder [<cache>/journal].",
)


@click.command()
@county_option
@residents_option
@seed_option
@journal_option
@click.option("--fsync", default="always", show_default=True, help="always | interval:MS | none.")
@click.option("--redis", "redis_url", help="Use Redis Streams, e.g. redis://127.0.0.1:6379/0.")
@click.option(
    "--feedback",
    "feedback_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="JSON lines of feedback events (a file or FIFO); without --redis only.",
)
@click.option(
    "--dead-letters",
    "dead_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Append dead letters (reason and raw message) here [dead-letters.jsonl beside the "
    "journal; '-' for stderr]; without --redis only. Kept apart from the logs, which never "
    "carry message contents.",
)
@click.option(
    "--snapshot-every",
    type=click.IntRange(min=1),
    default=50_000,
    show_default=True,
    help="Journal records between snapshots.",
)
@click.option("--consumer", help="Redis consumer name [host name]; one per engine.")
@click.option(
    "--campaigns",
    "campaigns_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="CampaignFeed to issue, as JSON lines (a file or FIFO); with --redis: wd:campaigns.",
)
@click.option(
    "--stats-out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write this run's statistics (JSON, as in sim-report/summary.json) at shutdown.",
)
@group_options
@rules_option
@click.option(
    "--http",
    metavar="HOST:PORT",
    help="Serve the API, the console (/console/), /metrics (Prometheus), /healthz and /readyz "
    "here, e.g. 127.0.0.1:9400; with --group, for the whole group.",
)
def serve(
    county: Path | None,
    residents: int | None,
    seed: int | None,
    journal_dir: Path | None,
    fsync: str,
    redis_url: str | None,
    feedback_file: Path | None,
    dead_file: Path | None,
    snapshot_every: int,
    consumer: str | None,
    campaigns_file: Path | None,
    stats_out: Path | None,
    group: str | None,
    member: str | None,
    partitions: int,
    lease_ttl: str,
    wait_replicas: int,
    wait_timeout: str,
    rules_path: Path | None,
    http: str | None,
) -> None:
    """Run the engine: warnings in, actions out, every accepted warning journaled.

    JSON lines by default (warnings on stdin, actions on stdout, dead letters in a file), or
    Redis Streams with --redis (wd:intake, wd:feedback -> wd:outbox, wd:dead). With --group as
    well, this process is one member of a group of engines sharing the work, each partition's
    journal in Redis (see README, "Running a group of engines"). Stops cleanly on
    SIGINT/SIGTERM; the journal makes a restart continue where it stopped. SIGHUP reloads
    the rules (--rules): a bad file keeps the old ones, logged and counted.
    """
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    policy = _parse_fsync(fsync)
    if http is not None:
        from engine.web.server import parse_bind  # the HTTP stack loads only when asked for

        try:
            parse_bind(http)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--http") from None
    if group is not None:
        if redis_url is None:
            raise click.UsageError("--group needs --redis URL: the group's state lives in Redis")
        try:
            config = GroupConfig(
                member=member or default_member(),
                name=group,
                partitions=partitions,
                lease_ttl_ms=parse_ms(lease_ttl, "--lease-ttl"),
                wait_replicas=wait_replicas,
                wait_timeout_ms=parse_ms(wait_timeout, "--wait-timeout"),
                fsync=policy,
                snapshot_every=snapshot_every,
            )
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        try:
            reg = open_county(county, residents, seed, out=Console(stderr=True))
            trio.run(
                _serve_group,
                reg,
                site_rules(rules_path),
                redis_url,
                config,
                stats_out,
                http,
                partial(load_rules, *rule_sources(rules_path)),
            )
        except WarnDispatchError as exc:
            fail(str(exc))
        return
    redis_at = _parse_redis(redis_url) if redis_url else None
    try:
        reg = open_county(county, residents, seed, out=Console(stderr=True))
    except WarnDispatchError as exc:
        fail(str(exc))
    path = journal_dir or cache_dir() / "journal"
    try:
        trio.run(
            _serve,
            reg,
            path,
            policy,
            redis_at,
            feedback_file,
            dead_file,
            snapshot_every,
            consumer,
            campaigns_file,
            stats_out,
            site_rules(rules_path),
            http,
            partial(load_rules, *rule_sources(rules_path)),
        )
    except WarnDispatchError as exc:
        fail(str(exc))


async def _serve(
    reg: Registry,
    path: Path,
    policy: FsyncPolicy,
    redis_at: tuple[str, int, int] | None,
    feedback_file: Path | None,
    dead_file: Path | None,
    snapshot_every: int,
    consumer: str | None,
    campaigns_file: Path | None,
    stats_out: Path | None,
    rules: EscalationRules,
    http: str | None,
    reload: Callable[[], EscalationRules],
) -> None:
    log = logging.getLogger("engine.serve")
    t0 = time.monotonic()
    config = AppConfig(
        registry=reg,
        rules=rules,
        journal=path,
        fsync=policy,
        snapshot_every=snapshot_every,
        metrics=http is not None,
    )
    async with open_app(config) as app:
        eng = app.engine
        log.info(
            "serving: journal %s (fsync %s), %d warnings restored (%d active), %s",
            path,
            policy.mode,
            eng.known,
            eng.pending,
            f"redis {redis_at[0]}:{redis_at[1]}/{redis_at[2]}" if redis_at else "JSON lines",
        )

        async def run() -> ServiceStats:
            if redis_at is None:
                return await _serve_json_lines(
                    app, path, feedback_file, dead_file, campaigns_file, reload
                )
            host, port, db = redis_at
            opts = SourceOptions(consumer=consumer or "")
            async with open_redis_transport(host, port, db=db, options=opts) as t:
                return await app.serve(
                    t.intake,
                    t.outbox,
                    feedback=t.feedback,
                    campaigns=t.campaigns,
                    dead_letters=t.dead,
                    reload=reload,
                )

        stats = await run() if http is None else await _with_http(app, http, run)
        assert app.journal is not None
        log.info(
            "stopped after %.1f s: %d warnings and %d feedback accepted, %d dead letters, "
            "%d actions sent, %d warnings active, journal %d records, %d snapshots, "
            "%d campaigns issued",
            time.monotonic() - t0,
            stats.warnings,
            stats.feedback,
            stats.dead_letters,
            stats.sent,
            eng.pending,
            app.journal.stats.records,
            app.journal.stats.snapshots,
            stats.campaigns,
        )
        if stats_out is not None:
            stats_out.write_bytes(msgspec.json.encode(app.summary()))
            log.info("statistics of this run written to %s", stats_out)


async def _group_reload(member: GroupMember, load: Callable[[], EscalationRules]) -> None:
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        async for _ in signals:
            logging.getLogger("engine.serve").info("received SIGHUP: reloading the rules")
            member.reload(load)


async def _serve_group(
    reg: Registry,
    rules: EscalationRules,
    url: str,
    config: GroupConfig,
    stats_out: Path | None,
    http: str | None = None,
    reload: Callable[[], EscalationRules] | None = None,
) -> None:
    """One member of a group: until SIGINT/SIGTERM, then hand every partition back; SIGHUP
    reloads the rules of every partition it runs. With ``http``, this member also answers the
    API and the console for the whole group."""
    log = logging.getLogger("engine.serve")
    client = open_group_client(url)
    member = GroupMember(config, client, reg, rules)
    stop = trio.Event()
    t0 = time.monotonic()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_signals, stop)
            if reload is not None:
                nursery.start_soon(_group_reload, member, reload)
            if http is not None:
                await nursery.start(_group_http, member, http, stop)
            await member.run(stop)
            nursery.cancel_scope.cancel()
    finally:
        client.close()
    routed = {k: s.routed for k, s in member.router_stats.items()}
    log.info(
        "member %s stopped after %.1f s: %d partitions taken, %d lost, routed %s",
        config.member,
        time.monotonic() - t0,
        member.takeovers,
        member.lost,
        routed,
    )
    if stats_out is not None:
        stats_out.write_bytes(msgspec.json.encode(member.stats.summary(until=time.time())))
        log.info("statistics of this run written to %s", stats_out)


async def _group_http(
    member: GroupMember,
    bind: str,
    stop: trio.Event,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The API and console of a group member, over the group's board (engine.group.desk)."""
    from engine.access.audit import AuditLog
    from engine.access.tokens import TokenStore
    from engine.group.board import BoardMirror
    from engine.group.desk import GroupDesk
    from engine.web.server import desk_app, serve_http

    log = logging.getLogger("engine.serve")
    cfg = member.config
    tokens = TokenStore.load(cache_dir() / "tokens.json")
    audit = AuditLog(cache_dir() / f"audit-{cfg.member}.jsonl")
    mirror = BoardMirror(member.client, member.keys)
    desk = GroupDesk(
        mirror,
        member.client,
        member.keys,
        member.registry,
        member.rules,
        wait_replicas=cfg.wait_replicas,
        wait_timeout_ms=cfg.wait_timeout_ms,
    )
    log.info("api: %d tokens, audit log %s", len(tokens.records), audit.path)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(member._supervised, "board mirror", mirror.run)
            asgi = desk_app(
                desk,
                lambda: mirror.ready.is_set() and not stop.is_set(),
                tokens,
                audit,
                no_metrics="metrics are per engine; a group member does not export them yet",
            )
            addresses = await nursery.start(serve_http, asgi, bind, stop)
            log.info(
                "http: %s (/healthz, /readyz, /api/v1, /console) for group %s",
                ", ".join(addresses),
                cfg.name,
            )
            task_status.started()
            await stop.wait()
            nursery.cancel_scope.cancel()
    finally:
        audit.close()


async def _with_http(
    app: App, bind: str, run: Callable[[], Awaitable[ServiceStats]]
) -> ServiceStats:
    """``run()`` with the HTTP server beside it: ready while it runs, stopped after it."""
    from engine.access.audit import AuditLog
    from engine.access.tokens import TokenStore
    from engine.web.server import serve_http, web_app

    log = logging.getLogger("engine.serve")
    done = trio.Event()
    tokens = TokenStore.load(cache_dir() / "tokens.json")
    journal_dir = app.config.journal
    folder = journal_dir.parent if isinstance(journal_dir, Path) else cache_dir()
    audit = AuditLog(folder / "audit.jsonl")
    log.info("api: %d tokens, audit log %s", len(tokens.records), audit.path)
    try:
        async with trio.open_nursery() as nursery:
            asgi = web_app(app, lambda: not done.is_set(), tokens, audit)
            addresses = await nursery.start(serve_http, asgi, bind, done)
            log.info("http: %s (/metrics, /healthz, /readyz, /api/v1)", ", ".join(addresses))
            try:
                return await run()
            finally:
                done.set()
    finally:
        audit.close()


async def _serve_json_lines(
    app: App,
    path: Path,
    feedback_file: Path | None,
    dead_file: Path | None,
    campaigns_file: Path | None,
    reload: Callable[[], EscalationRules] | None = None,
) -> ServiceStats:
    """Warnings on stdin, actions on stdout, feedback and campaigns from files or FIFOs, dead
    letters in their own file (never beside the logs)."""
    log = logging.getLogger("engine.serve")
    dead_path = dead_file if dead_file is not None else path.parent / "dead-letters.jsonl"
    dead = JsonLinesDeadLetters(dead_path)
    log.info("dead letters: %s", "stderr" if str(dead_path) == "-" else dead_path)
    intake = await JsonLinesIntake.open(None, dead_letters=dead)
    fb = await JsonLinesIntake.open(feedback_file, dead_letters=dead) if feedback_file else None
    camp = await JsonLinesIntake.open(campaigns_file, dead_letters=dead) if campaigns_file else None
    out = JsonLinesOutbox(None)
    try:
        return await app.serve(
            intake, out, feedback=fb, campaigns=camp, dead_letters=dead, reload=reload
        )
    finally:
        for closing in (intake, fb, camp, out, dead):
            if closing is not None:
                await closing.aclose()


@click.command()
@click.argument("warning_id")
@journal_option
@rules_option
@redis_url_option
@click.option("--group", default="wd", show_default=True, help="With --redis: the group's name.")
@click.option(
    "--partitions",
    type=click.IntRange(1, 4096),
    default=16,
    show_default=True,
    help="With --redis: the group's partition count.",
)
def status(
    warning_id: str,
    journal_dir: Path | None,
    rules_path: Path | None,
    redis_url: str | None,
    group: str,
    partitions: int,
) -> None:
    """Print a warning's state and timeline from the journal (read-only; safe beside serve).

    With --redis, from the journal in Redis of the group partition that holds the warning."""
    if redis_url is not None:
        state = _state_in_group(warning_id, site_rules(rules_path), redis_url, group, partitions)
    else:
        state = _state_on_disk(
            warning_id, site_rules(rules_path), journal_dir or cache_dir() / "journal"
        )
    _print_state(state)


def _state_on_disk(warning_id: str, rules: EscalationRules, path: Path) -> WarningState:
    try:
        image = read_journal(path, decode_record, decode_snapshot)
        rebuilt = rebuild(image.snapshot_payload, image.records, rules)
        if image.damaged is not None:
            click.echo(
                f"warning: journal damaged at {image.damaged}; shown as of the record before "
                "it (serve sets the rest aside at its next start)",
                err=True,
            )
    except WarnDispatchError as exc:
        fail(str(exc))
    state = rebuilt.states.get(warning_id)
    if state is None:
        fail(f"no warning {warning_id!r} in the journal at {path}")
    return state


def _state_in_group(
    warning_id: str, rules: EscalationRules, url: str, group: str, partitions: int
) -> WarningState:
    client = open_group_client(url)
    p = partition_of(warning_id, partitions)
    try:
        rebuilt = partition_state(client, Keys(group), p, rules)
    except (WarnDispatchError, redis.RedisError, OSError) as exc:
        fail(f"partition {p} of group {group}: {exc}")
    finally:
        client.close()
    state = rebuilt.states.get(warning_id)
    if state is None:
        fail(
            f"no warning {warning_id!r} in partition {p} of group {group} ({partitions} partitions)"
        )
    return state


def _print_state(state: WarningState) -> None:
    def local(at: float) -> str:
        return datetime.fromtimestamp(at, LOCAL_TZ).strftime("%Y-%m-%d %H:%M:%S")

    w = state.warning
    echo = click.echo
    echo(f"warning {w.id}: {w.kind}, level {w.level} (ladders at level {state.plan_level})")
    echo(f"  target     {describe_target(w.target)}")
    echo(f"  status     {state.status}" + (f", outcome {state.outcome}" if state.outcome else ""))
    echo(f"  expires    {local(state.expires_at)} (UTC+8)")
    echo(f"  notified   {', '.join(state.notified) or '-'}")
    echo(f"  acked by   {state.acked_by or '-'}")
    echo(f"  officer    {state.officer.label}; contact {state.contact.label}")
    if state.duplicates or state.ignored:
        echo(f"  repeats    {state.duplicates} duplicate instructions, {state.ignored} ignored")
    echo("timeline (UTC+8):")
    for t in state.timeline:
        echo(f"  {local(t.at)}  {t.track:<8} {t.frm} -> {t.to}: {t.reason}")
