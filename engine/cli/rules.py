"""``warn-dispatch rules check``: validate a site's rule files before an engine loads them.

Why a command of its own: a bad rule file found at start-up stops an engine; found here, it
stops nobody. Every error names the file, the key and what was expected (``RuleError``), and
every file is checked, so one run lists every problem.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from engine.campaigns.policy import load_campaign_policy
from engine.rules.escalation import load_escalation
from engine.rules.loading import RuleError, default_rules_dir
from engine.rules.taxonomy import load_taxonomy

__all__ = ["RULE_FILES", "rules"]

RULE_FILES: dict[str, Callable[[Path], object]] = {
    "escalation.toml": load_escalation,
    "taxonomy.toml": load_taxonomy,
    "campaigns.toml": load_campaign_policy,
}
"""The rule files a site may keep in its rules folder, and the loader that validates each."""


@click.group()
def rules() -> None:
    """Rule files: escalation ladders, the tag taxonomy, campaign caps and quiet hours."""


@rules.command()
@click.argument(
    "folder",
    required=False,
    type=click.Path(path_type=Path, file_okay=False, exists=True),
)
def check(folder: Path | None) -> None:
    """Validate the rule files in FOLDER (default: the shipped rules).

    Files the folder does not have are the shipped ones and are not checked again. Exits 0 if
    every file present is valid, 2 otherwise, with one line per problem:
    ``error: FILE: KEY: EXPECTED``.
    """
    where = folder if folder is not None else default_rules_dir()
    present = [name for name in RULE_FILES if (where / name).is_file()]
    if not present:
        click.echo(f"error: {where}: none of {', '.join(RULE_FILES)} is there", err=True)
        sys.exit(2)
    bad = 0
    for name in present:
        try:
            RULE_FILES[name](where / name)
        except RuleError as exc:
            bad += 1
            click.echo(f"error: {exc}", err=True)
        else:
            click.echo(f"ok: {where / name}")
    if bad:
        sys.exit(2)
