"""``warn-dispatch taxonomy`` and ``schema``: what the engine knows and speaks."""

from __future__ import annotations

import importlib
from pathlib import Path

import click
import msgspec
from rich.table import Table

from engine.cli.common import console, fail
from engine.rules.loading import RuleError
from engine.rules.taxonomy import load_taxonomy

#: The messages that cross the engine's edges, by the name ``schema`` takes.
MESSAGES: dict[str, str] = {
    "warning": "engine.model:WarningInstruction",
    "feedback": "engine.model:FeedbackEvent",
    "action": "engine.model:Action",
    "campaign": "engine.campaigns.campaign:Campaign",
    "campaign-action": "engine.campaigns.campaign:CampaignAction",
    "campaign-control": "engine.campaigns.campaign:CampaignControl",
    "registry-change": "engine.registry.changes:RegistryChange",
}


@click.command()
@click.argument("message", type=click.Choice(list(MESSAGES)))
def schema(message: str) -> None:
    """Print the JSON Schema of a MESSAGE the engine reads or writes (generated from the
    structs that decode it, so it cannot drift from what the engine accepts)."""
    module, name = MESSAGES[message].split(":")
    type_ = getattr(importlib.import_module(module), name)
    click.echo(msgspec.json.format(msgspec.json.encode(msgspec.json.schema(type_))).decode())


@click.command()
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--tags/--no-tags", default=False, help="List every tag, not just categories.")
def taxonomy(file: Path | None, tags: bool) -> None:
    """Validate and summarise a taxonomy file (default: the shipped rules/taxonomy.toml)."""
    try:
        tax = load_taxonomy(file)
    except RuleError as exc:
        fail(str(exc))
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
