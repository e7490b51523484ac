"""``warn-dispatch rules check`` and ``rules test``: a site's rules, checked and tried offline.

Why commands of their own: a bad rule file found at start-up stops an engine; found here, it
stops nobody. ``check`` names the file, the key and what was expected for every problem, every
file checked so one run lists them all. ``test`` answers "what would this warning do?" the way
``amtool config routes test`` does for Alertmanager: it runs the real, pure machine over the
rules with nobody answering (or one ack), and prints who is told at which minute, which rungs
are skipped and why, and which rosters and silences apply.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import click
import msgspec

from engine.campaigns.policy import load_campaign_policy
from engine.cli.common import fail, parse_at, rule_sources, rules_option, site_rules
from engine.errors import WarnDispatchError
from engine.machine import TICK, Intake, WarningState, step, validate_warning
from engine.model import (
    Acknowledged,
    Action,
    AreaTarget,
    PhoneTarget,
    ResidentTarget,
    Responders,
    Target,
    WarningInstruction,
    decode_warning,
)
from engine.rules.correlation import load_correlation
from engine.rules.escalation import EscalationRules, load_escalation
from engine.rules.loading import RuleError, default_rules_dir
from engine.rules.roster import load_rosters
from engine.rules.silences import load_silences
from engine.rules.sources import RULE_FILES, load_rules, rule_path
from engine.rules.taxonomy import load_taxonomy

__all__ = ["RULE_LOADERS", "rules"]

RULE_LOADERS: dict[str, Callable[[Path], object]] = {
    "escalation.toml": load_escalation,
    "rosters.toml": load_rosters,
    "silences.toml": load_silences,
    "correlation.toml": load_correlation,
    "taxonomy.toml": load_taxonomy,
    "campaigns.toml": load_campaign_policy,
}
"""The rule files a site may keep in its rules folder, and the loader that validates each."""
assert tuple(RULE_LOADERS) == RULE_FILES


@click.group()
def rules() -> None:
    """Rule files: ladders, rosters, silences, correlation, the tag taxonomy, campaign caps."""


@rules.command()
@click.argument(
    "folder",
    required=False,
    type=click.Path(path_type=Path, file_okay=False, exists=True),
)
@click.option(
    "--rules",
    "rules_dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="The site's rules folder (the same as FOLDER; as serve and simulate take it).",
)
def check(folder: Path | None, rules_dir: Path | None) -> None:
    """Validate the rule files in FOLDER (default: the packaged rules).

    Each file is checked on its own, then the folder as the engine would load it (the
    packaged files standing in for missing ones), which catches what only shows across files:
    a silence or a correlation rule naming a kind the ladders do not define. Exits 0 if all is
    valid, 2 otherwise, with one line per problem: ``error: FILE: KEY: EXPECTED``.
    """
    if folder is not None and rules_dir is not None and folder != rules_dir:
        raise click.UsageError("give the folder once: FOLDER or --rules DIR")
    folder = folder if folder is not None else rules_dir
    where = folder if folder is not None else default_rules_dir()
    present = [name for name in RULE_LOADERS if (where / name).is_file()]
    if not present:
        click.echo(f"error: {where}: none of {', '.join(RULE_LOADERS)} is there", err=True)
        sys.exit(2)
    bad = 0
    for name in present:
        try:
            RULE_LOADERS[name](where / name)
        except RuleError as exc:
            bad += 1
            click.echo(f"error: {exc}", err=True)
        else:
            click.echo(f"ok: {where / name}")
    if not bad:
        site = where if folder is not None else None
        try:
            machine = load_rules(site)
            _check_area_campaign(machine, rule_path("campaigns.toml", site), site)
        except RuleError as exc:
            bad += 1
            click.echo(f"error: {exc}", err=True)
    if bad:
        sys.exit(2)


def _check_area_campaign(machine: EscalationRules, campaigns_file: Path, site: Path | None) -> None:
    """Across files: an area alert's campaign must use a category the campaign caps know."""
    area = machine.correlation.area_alert
    if area is None or area.campaign is None:
        return
    categories = load_campaign_policy(campaigns_file).categories
    if area.campaign.category not in categories:
        raise RuleError(
            rule_path("correlation.toml", site),
            "area_alert.campaign.category",
            f"one of the categories of {campaigns_file} ({', '.join(categories)})",
        )


def _target(text: str) -> Target:
    kind, _, rest = text.partition(":")
    if kind == "resident":
        return ResidentTarget(int(rest or 0))
    if kind == "phone":
        return PhoneTarget(rest or "13800000000")
    if kind == "area" and rest:
        return AreaTarget(rest)
    raise click.BadParameter(
        "resident[:ID], phone[:NUMBER] or area:KEY (e.g. area:grid:03-17)", param_hint="--target"
    )


def sample_responders(target: Target, station: str | None, grid: str | None) -> Responders:
    """Who answers in a test without a registry: named after their role and unit, so the
    printout reads "grid officer of 03-17"; rosters put real names on duty rungs."""
    if grid is not None and station is None:
        station = grid.split("-", 1)[0]
    person = not isinstance(target, AreaTarget)
    return Responders(
        county_centre="county_centre",
        grid_officer=f"grid-officer-of-{grid}" if grid else None,
        duty_officer=f"duty-officer-of-{station}" if station else None,
        chief=f"chief-of-{station}" if station else None,
        visitors=("neighbour-1", "neighbour-2") if person else (),
        resident=0 if person else None,
        grid=grid,
        station=station,
        unresolved=None if station else "no --station or --grid given",
    )


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"+{h}:{m:02d}:{s:02d}"


def ladder(
    warning: WarningInstruction,
    responders: Responders,
    rules: EscalationRules,
    at: float,
    ack_after: float | None = None,
) -> tuple[WarningState, list[tuple[float, Action]]]:
    """The warning's whole run with nobody answering (or one ack ``ack_after`` seconds in, by
    the officer last notified): its final state and every action with its time."""
    state, actions, _ = step(
        None, Intake(warning, responders, warning.expires.timestamp()), at, rules
    )
    assert state is not None
    out = [(at, a) for a in actions]
    ack_at = at + ack_after if ack_after is not None else None
    for _ in range(100_000):
        due = state.next_deadline
        if ack_at is not None and (due is None or due > ack_at):
            who = state.officer.to or "county_centre"
            ack = Acknowledged(warning_id=warning.id, officer=who)
            new, actions, _ = step(state, ack, ack_at, rules)
            assert new is not None
            state = new
            out += [(ack_at, a) for a in actions]
            ack_at = None
            continue
        if due is None:
            break
        new, actions, _ = step(state, TICK, due, rules)
        assert new is not None
        state = new
        out += [(due, a) for a in actions]
    return state, out


@rules.command("test")
@rules_option
@click.option(
    "--warning",
    "warning_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A warning instruction (JSON, as the intake takes it); else built from the options.",
)
@click.option("--kind", default="fraud", show_default=True, help="The warning's kind.")
@click.option("--level", type=click.IntRange(1, 4), default=1, show_default=True)
@click.option(
    "--target",
    default="resident",
    show_default=True,
    help="resident[:ID], phone[:NUMBER] or area:KEY (e.g. area:grid:03-17).",
)
@click.option("--station", help="The target's station, e.g. 03 (rosters are per station).")
@click.option("--grid", help="The target's grid, e.g. 03-17 (its station is the prefix).")
@click.option(
    "--at", "at_text", help="When it arrives (ISO 8601; no offset: the rosters' zone) [now]."
)
@click.option(
    "--hours",
    type=click.FloatRange(0.01, 24 * 30),
    default=24.0,
    show_default=True,
    help="Until it expires.",
)
@click.option("--exercise", is_flag=True, help="Mark it an exercise (CAP status Exercise).")
@click.option(
    "--ack-after",
    metavar="MINUTES",
    type=click.FloatRange(0),
    help="The officer last told acks this many minutes in (shows the ack timeout).",
)
def test(
    rules_path: Path | None,
    warning_file: Path | None,
    kind: str,
    level: int,
    target: str,
    station: str | None,
    grid: str | None,
    at_text: str | None,
    hours: float,
    exercise: bool,
    ack_after: float | None,
) -> None:
    """Print the ladder a warning would run under the rules: who is told at which minute if
    nobody answers, which rungs are skipped and why, and which rosters and silences apply.

    Example: warn-dispatch rules test --rules site/ --kind fraud --level 1 --grid 03-17
    --at 2026-12-24T21:30
    """
    rules_ = site_rules(rules_path)
    tz = ZoneInfo(rules_.rosters.timezone)
    when = parse_at(at_text, tz)
    try:
        if warning_file is not None:
            w = decode_warning(warning_file.read_bytes())
            w = msgspec.structs.replace(w, issued_at=when, expires=when + (w.expires - w.issued_at))
        else:
            w = WarningInstruction(
                id="rules-test",
                kind=kind,
                level=level,
                target=_target(target),
                issued_at=when,
                expires=when + timedelta(hours=hours),
                status="exercise" if exercise else "actual",
            )
        validate_warning(w, rules_)
    except (WarnDispatchError, ValueError) as exc:
        fail(str(exc))
    responders = sample_responders(w.target, station, grid)
    at = when.timestamp()
    site, _ = rule_sources(rules_path)
    click.echo(
        f"{w.kind} level {w.level} for {w.target.__struct_config__.tag} "
        f"(station {responders.station or '?'}, grid {responders.grid or '?'}), "
        f"arriving {when.astimezone(tz):%Y-%m-%d %H:%M %Z}; rules: packaged"
        + (f" + {site}" if site else "")
    )
    if responders.station is not None:
        for role in ("duty_officer", "chief"):
            on = rules_.rosters.on_duty(responders.station, role, at)
            if on is None:
                click.echo(
                    f"roster: {role} of station {responders.station}: no rotation "
                    "(the registry's answers)"
                )
            else:
                who = ", ".join(on.officers) or "nobody"
                notes = f" ({'; '.join(on.notes)})" if on.notes else ""
                click.echo(
                    f"roster: {role} of station {responders.station}: {who}, "
                    f"{on.shift} shift{notes}"
                )
    active = rules_.silences.active(at)
    click.echo("silences in force: " + ("none" if not active else ""))
    for s in active:
        click.echo(f"  {s.describe()}")
    state, sent = ladder(
        w, responders, rules_, at, ack_after * 60 if ack_after is not None else None
    )
    click.echo(
        "\nif nobody answers:"
        if ack_after is None
        else f"\nif {state.acked_by or 'the officer'} acks at +{ack_after:g} min "
        "and nobody reports an outcome:"
    )
    for t, a in sent:
        local = datetime.fromtimestamp(t, tz)
        click.echo(f"  {_clock(t - at):>10} {local:%H:%M}  {a.action:<15} {a.to:<28} {a.reason}")
    click.echo(
        f"\nends: {state.status}"
        + (f" ({state.outcome})" if state.outcome else "")
        + f" at {_clock(state.timeline[-1].at - at)}"
    )
    lines = [
        line
        for line in state.timeline
        if "skipped" in line.to or "silenced" in line.to or "on duty" in line.reason
    ]
    if lines:
        click.echo("why:")
        for line in lines:
            click.echo(
                f"  {_clock(line.at - at):>10}  {line.track}: {line.frm} -> {line.to}: "
                f"{line.reason}"
            )
