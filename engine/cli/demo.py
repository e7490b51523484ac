"""``warn-dispatch demo``: typical audiences resolved on a county, with timings."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from engine.audience.expr import AudienceError
from engine.cli.common import (
    console,
    county_option,
    fail,
    median_us,
    open_county,
    residents_option,
    seed_option,
)
from engine.errors import WarnDispatchError

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


@click.command()
@county_option
@residents_option
@seed_option
@click.option("--repeats", default=25, show_default=True, help="Timed runs per audience.")
def demo(county: Path | None, residents: int | None, seed: int | None, repeats: int) -> None:
    """Open (or generate) a sample county and resolve typical audiences, with timings."""
    try:
        reg = open_county(county, residents, seed)
    except WarnDispatchError as exc:
        fail(str(exc))
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
            f"{median_us(audience.count, repeats):,.0f}",
            f"{median_us(audience.ids, repeats):,.0f}",
        )
    console.print(table)
    console.print(
        f"index memory: {reg.index_nbytes() / 2**20:,.0f} MiB for {len(reg.taxonomy)} tags, "
        f"{sum(len(v) for v in reg.jurisdiction.units.values()):,} units, "
        f"{len(reg.officers):,} officers"
    )
