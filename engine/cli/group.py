"""``warn-dispatch group status``: who owns which partition, until when, and how far behind.

Read-only (it never takes a lease), so it is safe against a running group."""

from __future__ import annotations

import click
import msgspec
import redis
from rich.console import Console
from rich.table import Table

from engine.cli.common import fail, open_group_client, redis_url_option
from engine.group.inspect import GroupStatus, StreamLag, status_now
from engine.group.partitions import Keys


@click.group()
def group() -> None:
    """Operate a group of engines (see README, "Running a group of engines")."""


def _lag(s: StreamLag) -> str:
    lag = "?" if s.lag is None else str(s.lag)
    return f"{lag} / {s.pending}"


@group.command("status")
@redis_url_option
@click.option("--group", "name", default="wd", show_default=True, help="The group's name.")
@click.option("--partitions", type=click.IntRange(1, 4096), default=16, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(redis_url: str | None, name: str, partitions: int, as_json: bool) -> None:
    """Members, and per partition: owner, lease expiry, fencing token, journal length, and
    intake and feedback lag (entries not yet read / read but not acknowledged)."""
    if redis_url is None:
        fail("--redis URL is required: the group's state lives in Redis")
    client = open_group_client(redis_url)
    try:
        st = status_now(client, Keys(name), partitions)
    except (redis.RedisError, OSError) as exc:
        fail(f"cannot read group {name}: {exc}")
    finally:
        client.close()
    if as_json:
        click.echo(msgspec.json.encode(st).decode())
        return
    _print(st, name)


def _print(st: GroupStatus, name: str) -> None:
    out = Console(highlight=False)
    owned = st.owned_by()
    free = [p.lease.partition for p in st.partitions if p.lease.owner is None]
    out.print(f"group {name}: {len(st.members)} members, {len(st.partitions)} partitions")
    for m in st.members:
        held = owned.get(m.name, [])
        out.print(f"  member {m.name}: {len(held)} partitions, heartbeat {m.heartbeat_ms} ms")
    if free:
        out.print(f"  [bold red]unowned partitions: {free}[/]")
    routers = ", ".join(f"{k} {_lag(v)}" for k, v in st.routers.items())
    out.print(f"  routers (lag / pending): {routers}")
    table = Table("partition", "owner", "expires in", "token", "journal", "intake", "feedback")
    for p in st.partitions:
        lease = p.lease
        expires = "-" if lease.expires_in_ms is None else f"{lease.expires_in_ms} ms"
        table.add_row(
            str(lease.partition),
            lease.owner or "[red]none[/]",
            expires,
            "-" if lease.token is None else f"{lease.token} (fence {lease.fence})",
            str(p.journal_records),
            _lag(p.intake),
            _lag(p.feedback),
        )
    out.print(table)
