"""``warn-dispatch audience``: count (and list) the residents an expression selects."""

from __future__ import annotations

import time
from pathlib import Path

import click

from engine.cli.common import (
    console,
    county_option,
    fail,
    open_county,
    residents_option,
    seed_option,
)
from engine.errors import WarnDispatchError


@click.command()
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
    except WarnDispatchError as exc:
        fail(str(exc))
    t0 = time.perf_counter_ns()
    n = compiled.count()
    elapsed = (time.perf_counter_ns() - t0) / 1000
    console.print(f"{n:,} residents  ({elapsed:,.0f} µs)")
    if show_ids:
        console.print(" ".join(str(i) for i in compiled.ids()[:show_ids]))
