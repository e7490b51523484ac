"""``warn-dispatch county``: generate and inspect (synthetic) county snapshots."""

from __future__ import annotations

import time
from pathlib import Path

import click

from engine.cli.common import console, fail, open_county, residents_option, seed_option
from engine.errors import WarnDispatchError
from engine.registry.registry import Registry


@click.group()
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
        fail(f"{out} already holds a county snapshot; remove it first")
    try:
        open_county(out, residents, seed, spec_file)
    except (WarnDispatchError, ValueError) as exc:
        fail(str(exc))


@county.command("info")
@click.argument("path", type=click.Path(path_type=Path, file_okay=False, exists=True))
def county_info(path: Path) -> None:
    """Summarise a county snapshot."""
    try:
        t0 = time.perf_counter()
        reg = Registry.load(path)
        elapsed = time.perf_counter() - t0
    except WarnDispatchError as exc:
        fail(str(exc))
    units = reg.jurisdiction.units
    contacts = int((reg.officer[: reg.n_ids] >= 0).sum())
    console.print(
        f"{path}: loaded in {elapsed * 1000:.0f} ms\n"
        f"  residents {len(reg):,} live ({reg.n_ids:,} ids), contacts {contacts:,}\n"
        f"  stations {len(units['station'])}, villages {len(units['village'])}, "
        f"grids {len(units['grid'])}, officers {len(reg.officers):,}\n"
        f"  audience index {reg.index_nbytes() / 2**20:,.0f} MiB"
    )
