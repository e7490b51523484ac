"""``warn-dispatch roster show``: who is on duty at a station, now or at a given time.

The answer comes from the same rules and the same function the machine uses when a duty rung
fires (:meth:`engine.rules.roster.Rosters.on_duty`), so what this prints is who would be paged.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from engine.cli.common import parse_at, rules_option, site_rules
from engine.rules.roster import OnDuty
from engine.rules.zones import zone

__all__ = ["roster"]


@click.group()
def roster() -> None:
    """Duty rosters: rotations, shifts, overrides and leave (rules/rosters.toml)."""


def _line(role: str, on: OnDuty, tz_name: str, label: str) -> str:
    tz = zone(tz_name)
    start = datetime.fromtimestamp(on.starts_at, tz)
    end = datetime.fromtimestamp(on.ends_at, tz)
    who = ", ".join(on.officers) or "nobody"
    notes = f"  [{'; '.join(on.notes)}]" if on.notes else ""
    span = f"{start:%m-%d %H:%M}-{end:%m-%d %H:%M %Z}"
    return f"{label:<5} {role:<13} {on.shift:<8} {span:<28} {who}{notes}"


@roster.command()
@click.option("--station", required=True, help="The station key, e.g. 03.")
@click.option("--at", "at_text", help="ISO 8601 time; without an offset, the roster's zone [now].")
@rules_option
def show(station: str, at_text: str | None, rules_path: Path | None) -> None:
    """Who is on duty at STATION at a time, and who is next, per role."""
    rosters = site_rules(rules_path).rosters
    at = parse_at(at_text, zone(rosters.timezone))
    click.echo(f"station {station} at {at.astimezone(zone(rosters.timezone)):%Y-%m-%d %H:%M %Z}")
    found = rosters.day(station, at.timestamp())
    roles = {role for role, _ in found}
    for i, (role, on) in enumerate(found):
        first = i == 0 or found[i - 1][0] != role
        click.echo(_line(role, on, rosters.timezone, "now" if first else "next"))
    for role in ("duty_officer", "chief"):
        if role not in roles:
            click.echo(f"{role}: no rotation (the registry's {role.replace('_', ' ')} answers)")
