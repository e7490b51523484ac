"""What the commands share: the console, the cache folder, failing with one line, opening
(or generating, the first time) the county a command works on, and the site's rules."""

from __future__ import annotations

import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

import click
import msgspec
import trio
from rich.console import Console

from engine.errors import WarnDispatchError
from engine.registry.registry import Registry
from engine.registry.synthetic import GENERATOR_VERSION, CountySpec, generate_county
from engine.rules.escalation import EscalationRules
from engine.rules.loading import load_toml
from engine.rules.sources import load_rules

console = Console()


def cache_dir() -> Path:
    """Where generated counties are kept: ``$WARN_DISPATCH_HOME`` or the user's cache folder."""
    if home := os.environ.get("WARN_DISPATCH_HOME"):
        return Path(home)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "warn-dispatch"


def fail(message: str) -> NoReturn:
    """Explain and exit with status 2; never wrapped, so messages stay greppable."""
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def median_us(fn: Callable[[], object], repeats: int) -> float:
    """Median time of ``fn`` in microseconds, after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1000


def county_spec(residents: int | None, seed: int | None, spec_file: Path | None) -> CountySpec:
    """The default county spec, from a TOML file if given, with these changes."""
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
    say = out or console
    if county is not None and (county / "meta.msgpack").exists():
        return Registry.load(county)
    spec = county_spec(residents, seed, spec_file)
    path = county or cache_dir() / f"county-v{GENERATOR_VERSION}-{spec.residents}-{spec.seed}"
    if (path / "meta.msgpack").exists():
        t0 = time.perf_counter()
        reg = Registry.load(path)
        say.print(f"loaded county snapshot {path} in {time.perf_counter() - t0:.3f} s")
        return reg
    say.print(f"generating a county of {spec.residents:,} residents (seed {spec.seed})...")
    t0 = time.perf_counter()
    reg = generate_county(spec)
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


# --- a group of engines -----------------------------------------------------------------------


def parse_ms(text: str, flag: str) -> int:
    """``6s``, ``500ms`` or a bare number of milliseconds, as milliseconds."""
    raw = text.strip().lower()
    scale = 1.0
    if raw.endswith("ms"):
        raw = raw[:-2]
    elif raw.endswith("s"):
        raw, scale = raw[:-1], 1000.0
    try:
        value = float(raw) * scale
    except ValueError:
        raise click.BadParameter(
            f"{flag}: expected a duration like 6s or 500ms, not {text!r}"
        ) from None
    if not 0 < value < 86_400_000:
        raise click.BadParameter(f"{flag}: expected a duration between 1 ms and a day: {text!r}")
    return int(value)


def group_options(fn: Callable[..., object]) -> Callable[..., object]:
    """The options that make ``serve`` one member of a group of engines."""
    options = [
        click.option(
            "--group",
            help="Join the group of engines of this name (its Redis key prefix, e.g. wd); "
            "needs --redis. Journals then live in Redis, one per partition.",
        ),
        click.option(
            "--member",
            help="This member's name, unique in the group [host-pid]. Give a stable one to "
            "get its partitions back at once after a restart.",
        ),
        click.option(
            "--partitions",
            type=click.IntRange(1, 4096),
            default=16,
            show_default=True,
            help="Partitions of the group; fixed for the group's lifetime.",
        ),
        click.option(
            "--lease-ttl",
            default="6s",
            show_default=True,
            help="A partition lease's lifetime: a dead member's partitions move after it.",
        ),
        click.option(
            "--wait-replicas",
            type=click.IntRange(0, 16),
            default=0,
            show_default=True,
            help="Acknowledge intake only once this many Redis replicas have it (WAIT).",
        ),
        click.option(
            "--wait-timeout",
            default="1000ms",
            show_default=True,
            help="How long one WAIT for replicas may take.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


redis_url_option = click.option(
    "--redis",
    "redis_url",
    help="redis://HOST:PORT/DB, redis+sentinel://H:P,H:P/SERVICE or redis+cluster://H:P,H:P.",
)


def open_group_client(url: str) -> Any:
    """A binary redis-py client for ``url``, or one line saying what is wrong with it."""
    from engine.group.client import connect

    try:
        return connect(url)
    except ValueError as exc:
        fail(f"--redis: {exc}")


async def watch_signals(stop: trio.Event) -> None:
    """Set ``stop`` at the first SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            stop.set()
            return


def parse_at(text: str | None, tz: ZoneInfo) -> datetime:
    """``--at``: an ISO 8601 time, local to ``tz`` when it has no offset; now if not given."""
    if text is None:
        return datetime.now(tz)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            "an ISO 8601 time such as 2026-12-24T21:30 or 2026-12-24T21:30+08:00",
            param_hint="--at",
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=tz)


rules_option = click.option(
    "--rules",
    "rules_path",
    type=click.Path(path_type=Path, exists=True),
    help="The site's rules folder: each of escalation.toml, rosters.toml, silences.toml, "
    "correlation.toml, taxonomy.toml, campaigns.toml found there replaces the packaged one "
    "(a single escalation file is accepted too) [the packaged rules].",
)


def rule_sources(path: Path | None) -> tuple[Path | None, dict[str, Path]]:
    """``--rules``: a folder is the site's rules; a file (the older form) is its escalation
    file alone."""
    if path is None:
        return None, {}
    if path.is_file():
        return None, {"escalation.toml": path}
    return path, {}


def site_rules(path: Path | None) -> EscalationRules:
    """The machine's rules for ``--rules`` (packaged, then the site's, then flags), or exit
    with one line naming the file, the key and what was expected."""
    try:
        return load_rules(*rule_sources(path))
    except WarnDispatchError as exc:
        fail(str(exc))
