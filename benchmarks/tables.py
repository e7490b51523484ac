"""Benchmark tables: printed on the console, or as Markdown for ``benchmarks/RESULTS.md``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table


def make_table(
    title: str, headers: Sequence[str], rows: Iterable[Sequence[str]], *, labels: int = 1
) -> Table:
    """A rich table; the first ``labels`` columns (names) align left, the numbers right."""
    table = Table(title=title)
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i < labels else "right")
    for row in rows:
        table.add_row(*row)
    return table


def to_markdown(table: Table) -> str:
    """The same table as Markdown, headed by its title in bold."""
    columns = list(table.columns)
    lines = [
        f"**{table.title}**" if table.title else "",
        "",
        "| " + " | ".join(str(c.header) for c in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    cells = [list(c.cells) for c in columns]
    lines += [
        "| " + " | ".join(str(col[i]) for col in cells) + " |" for i in range(table.row_count)
    ]
    return "\n".join(lines if table.title else lines[2:])


def show(table: Table, markdown: bool = False, console: Console | None = None) -> None:
    """Print ``table``: as Markdown (plain print: a console would wrap long lines) or rich."""
    if markdown:
        print(to_markdown(table) + "\n")
    else:
        (console or Console()).print(table)
