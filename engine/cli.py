"""The ``warn-dispatch`` command."""

from __future__ import annotations

import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import click
import msgspec
import trio
from rich.console import Console
from rich.table import Table

from engine.audience.expr import AudienceError
from engine.journal import FsyncPolicy
from engine.registry.registry import Registry
from engine.registry.snapshot import SnapshotError
from engine.registry.units import RegistryError
from engine.rules.loading import RuleError, load_toml

console = Console()

#: Audiences a county admin actually sends, from broad to pinpoint.
DEMO_AUDIENCES: tuple[str, ...] = (
    "elderly_alone",
    "elderly & ~antifraud_app",
    "elderly & grid:03-17 & ~warned_7d",
    "(elderly | disabled) & station:05 - antifraud_msg_7d",
    "student & (village:12-v03 | village:12-v04)",
    "key_vehicle_driver | school_bus_driver | truck_driver",
    "fraud_high_risk & elderly & ~antifraud_app & ~warned_30d & ~antifraud_msg_7d & renter"
    " & ebike_rider & migrant_worker",
    "officer:P0312 & elderly",
    "all - (student | elderly)",
)


def cache_dir() -> Path:
    """Where generated counties are kept: ``$WARN_DISPATCH_HOME`` or the user's cache folder."""
    if home := os.environ.get("WARN_DISPATCH_HOME"):
        return Path(home)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "warn-dispatch"


def _fail(message: str) -> None:
    """Explain and exit with status 2; never wrapped, so messages stay greppable."""
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _median_us(fn: Callable[[], object], repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1000


def _county_spec(residents: int | None, seed: int | None, spec_file: Path | None) -> object:
    from simulator.county import CountySpec

    spec = load_toml(spec_file, CountySpec) if spec_file else CountySpec()
    changes = {k: v for k, v in {"residents": residents, "seed": seed}.items() if v is not None}
    if "residents" in changes and changes["residents"] < spec.contacts:
        changes["contacts"] = int(changes["residents"] * spec.contacts / spec.residents)
    return msgspec.structs.replace(spec, **changes)


def open_county(
    county: Path | None,
    residents: int | None,
    seed: int | None,
    spec_file: Path | None = None,
    *,
    out: Console | None = None,
) -> Registry:
    """Load a county snapshot, generating and saving it the first time. Progress goes to
    ``out`` (stdout by default; ``serve`` passes stderr, its stdout carries actions)."""
    from simulator.county import GENERATOR_VERSION, generate_county

    say = out or console
    if county is not None and (county / "meta.msgpack").exists():
        return Registry.load(county)
    spec = _county_spec(residents, seed, spec_file)
    name = f"county-v{GENERATOR_VERSION}-{spec.residents}-{spec.seed}"  # type: ignore[attr-defined]
    path = county or cache_dir() / name
    if (path / "meta.msgpack").exists():
        t0 = time.perf_counter()
        reg = Registry.load(path)
        say.print(f"loaded county snapshot {path} in {time.perf_counter() - t0:.3f} s")
        return reg
    say.print(f"generating a county of {spec.residents:,} residents (seed {spec.seed})...")  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    reg = generate_county(spec)  # type: ignore[arg-type]
    t1 = time.perf_counter()
    reg.save(path)
    say.print(f"generated in {t1 - t0:.1f} s, saved to {path} in {time.perf_counter() - t1:.1f} s")
    return reg


county_option = click.option(
    "--county",
    type=click.Path(path_type=Path, file_okay=False),
    help="County snapshot folder (generated there if missing).",
)
residents_option = click.option(
    "--residents", type=click.IntRange(min=1), help="Residents to generate [1,300,000]."
)
seed_option = click.option("--seed", type=int, help="Random seed for the generated county.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="warn-dispatch")
def main() -> None:
    """warn-dispatch: warnings that escalate by deadline, and broadcasts to tag audiences."""


@main.command()
@county_option
@residents_option
@seed_option
@click.option("--repeats", default=25, show_default=True, help="Timed runs per audience.")
def demo(county: Path | None, residents: int | None, seed: int | None, repeats: int) -> None:
    """Open (or generate) a sample county and resolve typical audiences, with timings."""
    try:
        reg = open_county(county, residents, seed)
    except (SnapshotError, RuleError, RegistryError) as exc:
        _fail(str(exc))
        return
    table = Table(title=f"audiences over {len(reg):,} residents (median of {repeats} runs)")
    table.add_column("audience expression", overflow="fold")
    table.add_column("residents", justify="right")
    table.add_column("count µs", justify="right")
    table.add_column("ids µs", justify="right")
    for text in DEMO_AUDIENCES:
        try:
            audience = reg.audience(text)
        except AudienceError as exc:
            table.add_row(text, "-", "-", f"skipped: {exc.message}")
            continue
        table.add_row(
            text,
            f"{audience.count():,}",
            f"{_median_us(audience.count, repeats):,.0f}",
            f"{_median_us(audience.ids, repeats):,.0f}",
        )
    console.print(table)
    console.print(
        f"index memory: {reg.index_nbytes() / 2**20:,.0f} MiB for {len(reg.taxonomy)} tags, "
        f"{sum(len(v) for v in reg.jurisdiction.units.values()):,} units, "
        f"{len(reg.officers):,} officers"
    )


@main.group()
def county() -> None:
    """Generate and inspect synthetic counties."""


@county.command("generate")
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@residents_option
@seed_option
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="TOML file with CountySpec fields (residents, contacts, officers, stations, ...).",
)
def county_generate(
    out: Path, residents: int | None, seed: int | None, spec_file: Path | None
) -> None:
    """Generate a county and save it as a registry snapshot in OUT."""
    if (out / "meta.msgpack").exists():
        _fail(f"{out} already holds a county snapshot; remove it first")
    try:
        open_county(out, residents, seed, spec_file)
    except (RuleError, ValueError) as exc:
        _fail(str(exc))


@county.command("info")
@click.argument("path", type=click.Path(path_type=Path, file_okay=False, exists=True))
def county_info(path: Path) -> None:
    """Summarise a county snapshot."""
    try:
        t0 = time.perf_counter()
        reg = Registry.load(path)
        elapsed = time.perf_counter() - t0
    except (SnapshotError, RuleError) as exc:
        _fail(str(exc))
        return
    units = reg.jurisdiction.units
    contacts = int((reg.officer[: reg.n_ids] >= 0).sum())
    console.print(
        f"{path}: loaded in {elapsed * 1000:.0f} ms\n"
        f"  residents {len(reg):,} live ({reg.n_ids:,} ids), contacts {contacts:,}\n"
        f"  stations {len(units['station'])}, villages {len(units['village'])}, "
        f"grids {len(units['grid'])}, officers {len(reg.officers):,}\n"
        f"  audience index {reg.index_nbytes() / 2**20:,.0f} MiB"
    )


@main.command()
@click.argument("expression")
@county_option
@residents_option
@seed_option
@click.option("--ids", "show_ids", default=0, show_default=True, help="Print up to N resident ids.")
@click.option("--officer", help="Evaluate as this officer sees it (their jurisdiction only).")
def audience(
    expression: str,
    county: Path | None,
    residents: int | None,
    seed: int | None,
    show_ids: int,
    officer: str | None,
) -> None:
    """Resolve an audience EXPRESSION, e.g. 'elderly & grid:03-17 & ~warned_7d'."""
    try:
        reg = open_county(county, residents, seed)
        source = reg.view_for(officer) if officer else reg
        compiled = source.audience(expression)
    except AudienceError as exc:
        _fail(str(exc))
        return
    except (SnapshotError, RuleError, RegistryError) as exc:
        _fail(str(exc))
        return
    t0 = time.perf_counter_ns()
    n = compiled.count()
    elapsed = (time.perf_counter_ns() - t0) / 1000
    console.print(f"{n:,} residents  ({elapsed:,.0f} µs)")
    if show_ids:
        console.print(" ".join(str(i) for i in compiled.ids()[:show_ids]))


@main.group()
def campaign() -> None:
    """Preview broadcast campaigns."""


@campaign.command("plan")
@click.argument("expression")
@county_option
@residents_option
@seed_option
@click.option(
    "--priority", type=click.Choice(["routine", "urgent"]), default="routine", show_default=True
)
@click.option("--category", default="general", show_default=True, help="Cap category.")
@click.option("--officers", "top", default=5, show_default=True, help="Busiest officers to list.")
@click.option(
    "--rules",
    "rules_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Campaign rules file [rules/campaigns.toml].",
)
def campaign_plan(
    expression: str,
    county: Path | None,
    residents: int | None,
    seed: int | None,
    priority: str,
    category: str,
    top: int,
    rules_file: Path | None,
) -> None:
    """Dry run: who would get a campaign to EXPRESSION, by which channel, and why not.

    Plans against an empty send history (no caps reached yet); nothing is sent.
    """
    from datetime import UTC, datetime

    from engine.campaigns import Campaign, CampaignError
    from engine.campaigns.campaign import REASON_TEXT, Reason
    from engine.campaigns.ledger import Ledger
    from engine.campaigns.planning import plan_campaign
    from engine.campaigns.policy import load_campaign_policy

    try:
        reg = open_county(county, residents, seed)
        policy = load_campaign_policy(rules_file)
        c = Campaign(
            id="dry-run",
            title="dry run",
            text="(preview)",
            audience=expression,
            priority=priority,
            issuer="cli",
            category=category,  # type: ignore[arg-type]
        )
        ledger = Ledger(policy.cap_window_s, policy.routine_cap, policy.category_caps)
        t0 = time.perf_counter()
        # Planned at noon, so quiet hours do not defer the preview.
        noon = datetime.now(UTC).replace(hour=4, minute=0, second=0, microsecond=0)
        plan = plan_campaign(c, reg, ledger, policy, now=0.0, wall_now=noon)
        elapsed = time.perf_counter() - t0
    except (CampaignError, AudienceError, SnapshotError, RuleError, RegistryError) as exc:
        _fail(getattr(exc, "detail", str(exc)))
        return
    console.print(f"{plan.ids.size:,} residents resolved, planned in {elapsed * 1000:.1f} ms")
    for reason in Reason:
        if n := plan.count(reason):
            console.print(f"  {n:>9,}  {REASON_TEXT[reason]}")
    table = Table(title=f"busiest of {len(plan.tasks):,} send tasks")
    table.add_column("officer")
    table.add_column("residents", justify="right")
    for task in sorted(plan.tasks, key=lambda t: -t.ids.size)[:top]:
        table.add_row(task.officer, f"{task.ids.size:,}")
    console.print(table)


#: The messages that cross the engine's edges, by the name ``schema`` takes.
MESSAGES: dict[str, str] = {
    "warning": "engine.model:WarningInstruction",
    "feedback": "engine.model:FeedbackEvent",
    "action": "engine.model:Action",
    "campaign": "engine.campaigns.campaign:Campaign",
    "campaign-action": "engine.campaigns.campaign:CampaignAction",
}


@main.command()
@click.argument("message", type=click.Choice(list(MESSAGES)))
def schema(message: str) -> None:
    """Print the JSON Schema of a MESSAGE the engine reads or writes (generated from the
    structs that decode it, so it cannot drift from what the engine accepts)."""
    import importlib

    module, name = MESSAGES[message].split(":")
    type_ = getattr(importlib.import_module(module), name)
    click.echo(msgspec.json.format(msgspec.json.encode(msgspec.json.schema(type_))).decode())


@main.command()
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--tags/--no-tags", default=False, help="List every tag, not just categories.")
def taxonomy(file: Path | None, tags: bool) -> None:
    """Validate and summarise a taxonomy file (default: the shipped rules/taxonomy.toml)."""
    from engine.rules.taxonomy import load_taxonomy

    try:
        tax = load_taxonomy(file)
    except RuleError as exc:
        _fail(str(exc))
        return
    table = Table(title=f"{len(tax)} tags in {len(tax.categories)} categories")
    table.add_column("category")
    table.add_column("label")
    table.add_column("tags", justify="right")
    for cat in tax.categories:
        table.add_row(cat.key, cat.label, str(len(cat.tags)))
    console.print(table)
    if tags:
        for key in tax.keys:
            t = tax.tag(key)
            console.print(f"{key:40} {t.label}{'  (dynamic)' if t.dynamic else ''}")


# --- the engine as a service ------------------------------------------------------------------

LOCAL_TZ = timezone(timedelta(hours=8), "UTC+8")
"""Timelines are shown in the county's local time."""


def _parse_fsync(text: str) -> FsyncPolicy:
    if text in ("always", "none"):
        return FsyncPolicy(text)  # type: ignore[arg-type]
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


@main.command()
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
) -> None:
    """Run the engine: warnings in, actions out, every accepted warning journaled.

    JSON lines by default (warnings on stdin, actions on stdout, dead letters in a file), or
    Redis Streams with --redis (wd:intake, wd:feedback -> wd:outbox, wd:dead). Stops cleanly on
    SIGINT/SIGTERM; the journal makes a restart continue where it stopped.
    """
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    policy = _parse_fsync(fsync)
    redis_at = _parse_redis(redis_url) if redis_url else None
    try:
        reg = open_county(county, residents, seed, out=Console(stderr=True))
    except (SnapshotError, RuleError, RegistryError) as exc:
        _fail(str(exc))
        return
    from engine.journal import JournalError

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
        )
    except JournalError as exc:
        _fail(str(exc))


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
) -> None:
    from engine.campaigns import CampaignService
    from engine.journal import Journal
    from engine.registry.responders import RegistryDirectory
    from engine.scheduler import Engine
    from engine.service import CampaignFeed, ServiceStats, serve
    from engine.stats import Stats
    from engine.transport import (
        JsonLinesDeadLetters,
        JsonLinesIntake,
        JsonLinesOutbox,
        SourceOptions,
        open_redis_transport,
    )
    from engine.window_tags import RecentTags

    log = logging.getLogger("engine.serve")
    t0 = time.monotonic()
    stats: ServiceStats
    campaign_send, campaign_recv = trio.open_memory_channel[object](65536)
    async with (
        Journal.open(path, fsync=policy) as journal,
        Engine.open(RegistryDirectory(reg), journal=journal, snapshot_every=snapshot_every) as eng,
        CampaignService.open(
            reg,
            campaign_send,  # type: ignore[arg-type]
            on_ended=lambda campaign_id, _state: eng.end_campaign(campaign_id),
        ) as campaign_service,
    ):
        log.info(
            "serving: journal %s (fsync %s), %d warnings restored (%d active), %s",
            path,
            policy.mode,
            eng.known,
            eng.pending,
            f"redis {redis_at[0]}:{redis_at[1]}/{redis_at[2]}" if redis_at else "JSON lines",
        )
        # The engine's own statistics and window tags (warned_7d ...), fed from its edges.
        recorder = Stats.from_registry(reg, start=eng.now())
        recent = RecentTags(reg)
        watch = {
            "observers": [recorder.observe_actions, recent.observe_actions],
            "input_observers": [recorder.observe_inputs],
        }

        def campaigns(source: object) -> CampaignFeed:
            return CampaignFeed(
                source,  # type: ignore[arg-type]
                campaign_service,
                campaign_recv,
                observers=[recorder.observe_campaign_many, recent.observe_campaign],
                on_issued=lambda c: (
                    recorder.observe_campaign_issued(c),
                    recent.observe_campaign_issued(c),
                ),
            )

        if redis_at is not None:
            host, port, db = redis_at
            opts = SourceOptions(consumer=consumer or "")
            async with open_redis_transport(host, port, db=db, options=opts) as t:
                stats = await serve(
                    eng,
                    t.intake,
                    t.outbox,
                    feedback=t.feedback,
                    campaigns=campaigns(t.campaigns),
                    dead_letters=t.dead,
                    **watch,  # type: ignore[arg-type]
                )
        else:
            dead_path = dead_file if dead_file is not None else path.parent / "dead-letters.jsonl"
            dead = JsonLinesDeadLetters(dead_path)
            log.info("dead letters: %s", "stderr" if str(dead_path) == "-" else dead_path)
            intake = await JsonLinesIntake.open(None, dead_letters=dead)
            fb = (
                await JsonLinesIntake.open(feedback_file, dead_letters=dead)
                if feedback_file
                else None
            )
            camp = (
                await JsonLinesIntake.open(campaigns_file, dead_letters=dead)
                if campaigns_file
                else None
            )
            out = JsonLinesOutbox(None)
            try:
                stats = await serve(
                    eng,
                    intake,
                    out,
                    feedback=fb,
                    campaigns=campaigns(camp),
                    dead_letters=dead,
                    **watch,  # type: ignore[arg-type]
                )
            finally:
                for closing in (intake, fb, camp, out, dead):
                    if closing is not None:
                        await closing.aclose()
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
            journal.stats.records,
            journal.stats.snapshots,
            stats.campaigns,
        )
        if stats_out is not None:
            stats_out.write_bytes(msgspec.json.encode(recorder.summary(until=eng.now())))
            log.info("statistics of this run written to %s", stats_out)


@main.command()
@click.argument("warning_id")
@journal_option
def status(warning_id: str, journal_dir: Path | None) -> None:
    """Print a warning's state and timeline from the journal (read-only; safe beside serve)."""
    from engine.durability import JournalFormatError, rebuild
    from engine.journal import JournalError
    from engine.journal.reader import read_journal
    from engine.model import describe_target
    from engine.rules.escalation import load_escalation

    path = journal_dir or cache_dir() / "journal"
    try:
        image = read_journal(path)
        rebuilt = rebuild(image.snapshot_payload, image.records, load_escalation())
    except (JournalError, JournalFormatError) as exc:
        _fail(str(exc))
        return
    state = rebuilt.states.get(warning_id)
    if state is None:
        _fail(f"no warning {warning_id!r} in the journal at {path}")
        return

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


@main.command()
@click.option("--days", type=click.IntRange(1, 366), help="Simulated days [30].")
@click.option("--seed", type=int, help="Traffic seed (the county keeps its own).")
@county_option
@click.option(
    "--residents",
    type=click.IntRange(min=1000),
    help="Generate a county of this size instead of 1.3 M; traffic scales with it.",
)
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="TOML file of TrafficSpec fields (simulator/traffic.py).",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Change one spec field, e.g. --set actors.ack_probability=0.8 (TOML value).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("sim-report"),
    show_default=True,
    help="Folder for summary.json and report.html.",
)
@click.option("--officers", type=click.IntRange(min=1), help="What-if: a county with N officers.")
@click.option("--ack-deadline", help="What-if: first-rung ack deadline of every ladder (5m, 90s).")
@click.option(
    "--journal",
    "journal_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Run the engine with its journal in this (new) folder, one subfolder per run.",
)
@click.option("--progress/--no-progress", default=True, help="Show the progress bar.")
def simulate(
    days: int | None,
    seed: int | None,
    county: Path | None,
    residents: int | None,
    spec_file: Path | None,
    settings: tuple[str, ...],
    out: Path,
    officers: int | None,
    ack_deadline: str | None,
    journal_dir: Path | None,
    progress: bool,
) -> None:
    """Replay a month of a county's traffic through the engine, with statistics and a report.

    What-if options (--officers, --ack-deadline) also run the baseline and compare them.
    """
    import logging

    from engine.rules.escalation import load_escalation
    from simulator.replay import SimResult
    from simulator.report import print_summary, write_reports
    from simulator.traffic import (
        TrafficSpec,
        ack_deadline_rules,
        load_traffic_spec,
        parse_duration,
        scaled,
        spec_with,
    )

    try:
        spec = load_traffic_spec(spec_file) if spec_file else TrafficSpec()
        changes: dict[str, object] = {}
        for item in settings:
            key, sep, value = item.partition("=")
            if not sep:
                raise RuleError("--set", item, "KEY=VALUE")
            try:
                changes[key.strip()] = msgspec.toml.decode(f"v = {value}")["v"]
            except msgspec.DecodeError:
                changes[key.strip()] = value
        if days is not None:
            changes["days"] = days
        if seed is not None:
            changes["seed"] = seed
        if changes:
            spec = spec_with(spec, changes)
        rules = load_escalation()
        variant_rules = rules
        if ack_deadline is not None:
            variant_rules = ack_deadline_rules(rules, parse_duration(ack_deadline))  # type: ignore[assignment]
        reg = open_county(county, residents, None)
        variant_reg = reg
        if officers is not None:
            if county is not None:
                raise ValueError("--officers generates its own county; leave out --county")
            variant_reg = _county_with_officers(residents, officers)
    except (RuleError, SnapshotError, RegistryError, ValueError) as exc:
        _fail(str(exc))
        return
    if len(reg) != 1_300_000 and not spec_file:
        spec = scaled(spec, len(reg))
        console.print(f"traffic scaled to {len(reg):,} residents (x{len(reg) / 1_300_000:.3g})")

    runs = [("baseline", reg, rules)]
    if officers is not None or ack_deadline is not None:
        what = [
            f"{officers} officers" if officers else "",
            f"ack {ack_deadline}" if ack_deadline else "",
        ]
        runs.append((", ".join(w for w in what if w), variant_reg, variant_rules))
    if journal_dir is not None and journal_dir.exists() and any(journal_dir.iterdir()):
        _fail(f"{journal_dir} is not empty: the simulation needs a fresh journal folder")
        return
    results: list[SimResult] = []
    engine_log = logging.getLogger("engine")
    level = engine_log.level
    engine_log.setLevel(logging.ERROR)  # simulated people send late feedback: dead letters
    try:
        for k, (label, registry, r) in enumerate(runs):
            journal = journal_dir / f"run{k}" if journal_dir is not None else None
            results.append(_simulate_one(registry, spec, r, label, progress, journal))  # type: ignore[arg-type]
    finally:
        engine_log.setLevel(level)
    print_summary(results, console)
    json_path, html_path = write_reports(results, out)
    console.print(f"wrote {json_path} and {html_path}")


def _county_with_officers(residents: int | None, officers: int) -> Registry:
    """The default county (or one of ``residents``) generated with another officer count."""
    from simulator.county import GENERATOR_VERSION, generate_county

    spec = _county_spec(residents, None, None)
    spec = msgspec.structs.replace(spec, officers=officers)  # type: ignore[type-var]
    name = f"county-v{GENERATOR_VERSION}-{spec.residents}-{spec.seed}-officers{officers}"  # type: ignore[attr-defined]
    path = cache_dir() / name
    if (path / "meta.msgpack").exists():
        return Registry.load(path)
    console.print(f"generating the county with {officers:,} officers...")
    reg = generate_county(spec)  # type: ignore[arg-type]
    reg.save(path)
    return reg


def _simulate_one(
    registry: Registry,
    spec: object,
    rules: object,
    label: str,
    progress: bool,
    journal: Path | None = None,
) -> object:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from simulator.replay import replay

    days = spec.days  # type: ignore[attr-defined]
    if not progress:
        return replay(registry, spec, rules=rules, label=label, journal_dir=journal)  # type: ignore[arg-type]
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("day {task.completed:.1f}/{task.total:.0f}"),
        TextColumn("{task.fields[events]:>10,} events"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=days, events=0)

        def hook(sim_s: float, events: int) -> None:
            bar.update(task, completed=min(days, sim_s / 86400), events=events)

        result = replay(registry, spec, rules=rules, label=label, hook=hook, journal_dir=journal)  # type: ignore[arg-type]
        bar.update(task, completed=days, events=result.events)
    return result


if __name__ == "__main__":
    main()
