"""``warn-dispatch token create|list|revoke``: API tokens for the roles of issue 13.

The token is printed once, on stdout, at creation; the store keeps only its hash."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import click
from rich.console import Console

from engine.access.policy import Role, principal_for
from engine.access.tokens import TokenError, TokenStore
from engine.cli.common import cache_dir, county_option, fail, open_county

tokens_option = click.option(
    "--tokens",
    "tokens_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The token store [<cache>/tokens.json].",
)


def _store(path: Path | None) -> TokenStore:
    try:
        return TokenStore.load(path or cache_dir() / "tokens.json")
    except TokenError as exc:
        fail(str(exc))


@click.group()
def token() -> None:
    """API tokens: one role each (centre, chief, officer, admin), stored hashed."""


@token.command("create")
@click.option("--role", type=click.Choice(get_args(Role)), required=True)
@click.option(
    "--subject", help="The officer key (role officer) or station key (role chief); checked."
)
@click.option("--label", default="", help="Who or what the token is for (shown by list).")
@county_option
@tokens_option
def create(
    role: Role, subject: str | None, label: str, county: Path | None, tokens_file: Path | None
) -> None:
    """Create a token and print it once. Officer and chief subjects are checked against the
    county's registry, so a token can only ever name a real jurisdiction."""
    if role in ("officer", "chief"):
        reg = open_county(county, None, None, out=Console(stderr=True))
        try:
            principal_for(role, subject, reg)
        except ValueError as exc:
            fail(str(exc))
    elif subject is not None:
        fail(f"--subject: role {role} takes no subject")
    store = _store(tokens_file)
    click.echo(store.create(role, subject, label))
    click.echo(f"stored (hashed) in {store.path}; this token is not shown again", err=True)


@token.command("list")
@tokens_option
def list_tokens(tokens_file: Path | None) -> None:
    """Every token's id, role, subject, label and state (never a secret)."""
    for r in _store(tokens_file).records.values():
        state = "revoked" if r.revoked else "active"
        click.echo(f"{r.id}  {r.role:<8} {r.subject or '-':<12} {state:<8} {r.created}  {r.label}")


@token.command("revoke")
@click.argument("token_id")
@tokens_option
def revoke(token_id: str, tokens_file: Path | None) -> None:
    """Revoke a token by its id (the 8 hex digits after ``wd_``)."""
    if not _store(tokens_file).revoke(token_id):
        fail(f"no token with id {token_id!r}")
    click.echo(f"revoked {token_id}")
