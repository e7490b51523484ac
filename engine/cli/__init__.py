"""The ``warn-dispatch`` command: one thin module per command group.

Each module parses its arguments, calls the library and prints; the engine's assembly is
:mod:`engine.app`. Commands of other installed packages join through the entry-point group
``warn_dispatch.commands`` (the simulator's ``simulate``), so the engine never imports them.
Every command catches :class:`~engine.errors.WarnDispatchError` and prints one line.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

import click

from engine.cli import (
    audience,
    campaign,
    county,
    demo,
    group,
    reference,
    roster,
    rules,
    serve,
    token,
)
from engine.cli.reference import MESSAGES

__all__ = ["MESSAGES", "main"]

PLUGIN_GROUP = "warn_dispatch.commands"


def _plugins() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


class _Commands(click.Group):
    """The engine's commands plus those installed packages register under ``PLUGIN_GROUP``,
    loaded only when listed or called."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_plugins()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and (ep := _plugins().get(name)) is not None:
            loaded = ep.load()
            if isinstance(loaded, click.Command):
                return loaded
        return command


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="warn-dispatch")
def main() -> None:
    """warn-dispatch: warnings that escalate by deadline, and broadcasts to tag audiences."""


main.add_command(demo.demo)
main.add_command(county.county)
main.add_command(audience.audience)
main.add_command(campaign.campaign)
main.add_command(reference.schema)
main.add_command(reference.taxonomy)
main.add_command(serve.serve)
main.add_command(serve.status)
main.add_command(group.group)
main.add_command(token.token)
main.add_command(rules.rules)
main.add_command(roster.roster)
