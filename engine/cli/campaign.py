"""``warn-dispatch campaign plan``: a dry run of who would get a campaign, and how."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.table import Table

from engine.campaigns import Campaign
from engine.campaigns.campaign import REASON_TEXT, Reason
from engine.campaigns.ledger import Ledger
from engine.campaigns.planning import plan_campaign
from engine.campaigns.policy import load_campaign_policy
from engine.cli.common import (
    console,
    county_option,
    fail,
    open_county,
    residents_option,
    seed_option,
)
from engine.errors import WarnDispatchError


@click.group()
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
    try:
        reg = open_county(county, residents, seed)
        policy = load_campaign_policy(rules_file)
        c = Campaign(
            id="dry-run",
            title="dry run",
            text="(preview)",
            audience=expression,
            priority="urgent" if priority == "urgent" else "routine",
            issuer="cli",
            category=category,
        )
        ledger = Ledger(policy.cap_window_s, policy.routine_cap, policy.category_caps)
        t0 = time.perf_counter()
        # Planned at noon, so quiet hours do not defer the preview.
        noon = datetime.now(UTC).replace(hour=4, minute=0, second=0, microsecond=0)
        plan = plan_campaign(c, reg, ledger, policy, now=0.0, wall_now=noon)
        elapsed = time.perf_counter() - t0
    except WarnDispatchError as exc:
        fail(getattr(exc, "detail", str(exc)))
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
