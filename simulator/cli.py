"""``warn-dispatch simulate``: a county's month replayed through the engine, with a report.

It lives with the simulator: the engine never imports the simulator. The one ``warn-dispatch``
command finds it through the ``warn_dispatch.commands`` entry point (see pyproject.toml).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
from pathlib import Path

import click
import msgspec
from click.core import ParameterSource
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from engine.cli.common import (
    cache_dir,
    console,
    county_option,
    county_spec,
    fail,
    open_county,
    rules_option,
    site_rules,
)
from engine.errors import WarnDispatchError
from engine.registry.registry import Registry
from engine.registry.synthetic import GENERATOR_VERSION, generate_county
from engine.rules.correlation import NO_CORRELATION
from engine.rules.escalation import EscalationRules
from engine.rules.loading import RuleError
from simulator.duty import county_rosters
from simulator.replay import Live, SimResult, replay
from simulator.report import print_summary, write_reports
from simulator.traffic import (
    TrafficSpec,
    ack_deadline_rules,
    load_traffic_spec,
    parse_duration,
    scaled,
    spec_with,
)


@click.command()
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
@rules_option
@click.option(
    "--no-correlation",
    is_flag=True,
    help="What-if: the same month with correlation, area alerts and inhibition off.",
)
@click.option(
    "--rosters/--no-rosters",
    default=True,
    show_default=True,
    help="Give the county's duty officers day and night shifts, leave and swaps "
    "(simulator/duty.py) when the rules have no rotations of their own.",
)
@click.option("--progress/--no-progress", default=True, help="Show the progress bar.")
@click.option(
    "--serve",
    "serve_at",
    metavar="HOST:PORT",
    help="Watch the month live: replay in real time (times --speed) with the console served "
    "here, e.g. 127.0.0.1:8080; links with a token per role are printed.",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="With --serve: simulated seconds per real second.",
)
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
    rules_path: Path | None,
    no_correlation: bool,
    rosters: bool,
    progress: bool,
    serve_at: str | None,
    speed: float,
) -> None:
    """Replay a month of a county's traffic through the engine, with statistics and a report.

    What-if options (--officers, --ack-deadline, --no-correlation) also run the baseline and
    compare them. --rules DIR runs the site's rules (packaged defaults for files it lacks).
    --serve replays one run live, at --speed, with the console served beside the engine.
    """
    if serve_at is not None:
        if officers is not None or ack_deadline is not None or no_correlation:
            fail(
                "--serve shows one run live: leave out --officers, --ack-deadline and "
                "--no-correlation"
            )
        from engine.web.server import parse_bind  # the web stack, only when serving

        try:
            _check_bind(*parse_bind(serve_at))
        except (ValueError, OSError) as exc:
            fail(f"--serve {serve_at}: {exc}")
    elif click.get_current_context().get_parameter_source("speed") != ParameterSource.DEFAULT:
        fail("--speed is the speed of a live run: give --serve HOST:PORT too")
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
        rules = site_rules(rules_path)
        reg = open_county(county, residents, None)
        if rosters and not rules.rosters.rotations:
            rules = msgspec.structs.replace(rules, rosters=county_rosters(reg, spec))
        variant_rules = rules
        if ack_deadline is not None:
            variant_rules = ack_deadline_rules(rules, parse_duration(ack_deadline))
        if no_correlation:
            variant_rules = msgspec.structs.replace(variant_rules, correlation=NO_CORRELATION)
        variant_reg = reg
        if officers is not None:
            if county is not None:
                raise ValueError("--officers generates its own county; leave out --county")
            variant_reg = _county_with_officers(residents, officers)
    except (WarnDispatchError, ValueError) as exc:
        fail(str(exc))
    if len(reg) != 1_300_000 and not spec_file:
        spec = scaled(spec, len(reg))
        console.print(f"traffic scaled to {len(reg):,} residents (x{len(reg) / 1_300_000:.3g})")

    runs = [("baseline", reg, rules)]
    if officers is not None or ack_deadline is not None or no_correlation:
        what = [
            f"{officers} officers" if officers else "",
            f"ack {ack_deadline}" if ack_deadline else "",
            "no correlation" if no_correlation else "",
        ]
        runs.append((", ".join(w for w in what if w), variant_reg, variant_rules))
    if journal_dir is not None and journal_dir.exists() and any(journal_dir.iterdir()):
        fail(f"{journal_dir} is not empty: the simulation needs a fresh journal folder")
    results: list[SimResult] = []
    engine_log = logging.getLogger("engine")
    level = engine_log.level
    engine_log.setLevel(logging.ERROR)  # simulated people send late feedback: dead letters
    with contextlib.ExitStack() as stack:
        live = None
        if serve_at is not None:
            from simulator.live import LiveConsole  # the web stack, only when serving

            live = stack.enter_context(LiveConsole(serve_at, speed, _say))
        try:
            for k, (label, registry, r) in enumerate(runs):
                journal = journal_dir / f"run{k}" if journal_dir is not None else None
                results.append(_simulate_one(registry, spec, r, label, progress, journal, live))
        finally:
            engine_log.setLevel(level)
        if live is not None and live.interrupted:
            sys.exit(130)  # as a shell reports Ctrl-C
    print_summary(results, console)
    json_path, html_path = write_reports(results, out)
    console.print(f"wrote {json_path} and {html_path}")


def _check_bind(host: str, port: int) -> None:
    """Bind and let go, as hypercorn will (address reuse on), so that a port in use is told
    now, before the county and the traffic are made, rather than as a traceback."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)


def _say(text: str) -> None:
    console.print(text, soft_wrap=True, highlight=False, markup=False)


def _county_with_officers(residents: int | None, officers: int) -> Registry:
    """The default county (or one of ``residents``) generated with another officer count."""
    spec = msgspec.structs.replace(county_spec(residents, None, None), officers=officers)
    name = f"county-v{GENERATOR_VERSION}-{spec.residents}-{spec.seed}-officers{officers}"
    path = cache_dir() / name
    if (path / "meta.msgpack").exists():
        return Registry.load(path)
    console.print(f"generating the county with {officers:,} officers...")
    reg = generate_county(spec)
    reg.save(path)
    return reg


def _simulate_one(
    registry: Registry,
    spec: TrafficSpec,
    rules: EscalationRules,
    label: str,
    progress: bool,
    journal: Path | None = None,
    live: Live | None = None,
) -> SimResult:
    days = spec.days
    if not progress:
        return replay(registry, spec, rules=rules, label=label, journal_dir=journal, live=live)
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

        result = replay(
            registry, spec, rules=rules, label=label, hook=hook, journal_dir=journal, live=live
        )
        if live is None or not live.interrupted:
            bar.update(task, completed=days, events=result.events)
    return result
