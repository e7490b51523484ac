"""Reports of a replay: a rich summary table, JSON, and one self-contained HTML file.

Charts are drawn by matplotlib (Agg, SVG output) and inlined, so the HTML has no external
files or scripts. Only ids, unit keys and officer keys appear: never names or phone numbers.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import numpy as np
from rich.console import Console
from rich.table import Table

from engine.stats import Summary
from simulator.replay import SimResult
from simulator.traffic import REPORTED_CHATS, REPORTED_MESSAGES

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    if x < 120:
        return f"{x:.0f} s"
    if x < 7200:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.1f} h"


def _rows(r: SimResult) -> list[tuple[str, str]]:
    c = r.summary.county
    s = r.summary
    d = r.duty
    ack, reach = c.time_to_ack, c.time_to_reach
    return [
        ("residents / officers", f"{r.residents:,} / {r.officers:,}"),
        ("simulated days", f"{r.days}"),
        ("messages sent", f"{c.messages_sent:,}"),
        ("  one-to-one chats", f"{c.chats:,}"),
        ("  campaign messages (of them SMS)", f"{c.campaign_messages:,} ({c.sms:,})"),
        ("  warning chats", f"{c.warning_chats:,}"),
        ("campaigns issued (area broadcasts)", f"{r.campaigns_issued} ({r.broadcast_campaigns})"),
        ("warnings", f"{s.warnings:,}"),
        ("  still open at the end", f"{s.open_warnings:,}"),
        (
            "time to acknowledge p50 / p90 / p99",
            " / ".join(map(_fmt_s, (ack.p50, ack.p90, ack.p99))),
        ),
        (
            "time to reach p50 / p90 / p99",
            " / ".join(map(_fmt_s, (reach.p50, reach.p90, reach.p99))),
        ),
        ("escalations", f"{c.escalations:,}"),
        ("deadlines missed", f"{c.deadlines_missed:,}"),
        ("officer notices day / night shift", _pair(r.duty.notices)),
        ("  deadlines missed day / night shift", _pair(r.duty.missed)),
        ("  missed per 100 notices day / night", _rate(r.duty.missed, r.duty.notices)),
        (
            "warnings joined: correlated / inhibited",
            f"{r.duty.correlated:,} / {r.duty.inhibited:,}",
        ),
        ("area alerts (campaigns started)", f"{d.area_alerts:,} ({d.area_campaigns:,})"),
        ("outcomes", ", ".join(f"{k} {v:,}" for k, v in c.outcomes.items())),
        ("events replayed", f"{r.events:,}"),
        ("wall time", f"{r.wall_s:.1f} s ({r.events / max(r.wall_s, 1e-9):,.0f} events/s)"),
    ]


def _pair(d: dict[str, int]) -> str:
    return f"{d.get('day', 0):,} / {d.get('night', 0):,}"


def _rate(missed: dict[str, int], notices: dict[str, int]) -> str:
    def one(k: str) -> str:
        n = notices.get(k, 0)
        return f"{100 * missed.get(k, 0) / n:.1f}" if n else "-"

    return f"{one('day')} / {one('night')}"


def summary_table(results: Sequence[SimResult]) -> Table:
    """County figures, one column per run (baseline first)."""
    table = Table(title="simulated month: county summary")
    table.add_column("")
    for r in results:
        table.add_column(r.label, justify="right")
    rows = [_rows(r) for r in results]
    for i, (name, _) in enumerate(rows[0]):
        table.add_row(name, *(row[i][1] for row in rows))
    return table


def print_summary(results: Sequence[SimResult], console: Console) -> None:
    console.print(summary_table(results))
    r = results[0]
    c = r.summary.county
    scale = r.residents / 1_300_000 * r.days / 30
    messages, chats = REPORTED_MESSAGES * scale, REPORTED_CHATS * scale
    console.print(
        f"reported month{' (scaled to this county and period)' if scale != 1 else ''}: "
        f"{messages:,.0f} messages, {chats:,.0f} one-to-one chats; simulated ({r.label}): "
        f"{c.messages_sent:,} ({c.messages_sent / messages - 1:+.1%}), "
        f"{c.chats:,} ({c.chats / chats - 1:+.1%})"
    )


def write_json(results: Sequence[SimResult], out: Path) -> Path:
    path = out / "summary.json"
    path.write_bytes(msgspec.json.format(msgspec.json.encode(list(results)), indent=1))
    return path


# --- charts ------------------------------------------------------------------------------------


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    # No date in the metadata: the same run gives the same file.
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _setup_matplotlib() -> None:
    """Headless (Agg) charts in the report's fonts; call it before importing pyplot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "svg.fonttype": "none", "figure.dpi": 100})


def chart_warnings_per_hour(s: Summary) -> str:
    _setup_matplotlib()
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    x = np.arange(s.hours) / 24
    ys = [np.asarray(v) for v in s.warnings_per_hour.values()]
    ax1.stackplot(x, *ys, labels=list(s.warnings_per_hour), step="post", alpha=0.85)
    ax1.set_ylabel("warnings per hour")
    ax1.legend(loc="upper right", ncol=4, fontsize=8)
    ax2.plot(x, s.messages_per_hour, color="tab:gray", lw=0.8, drawstyle="steps-post")
    ax2.set_ylabel("messages per hour")
    ax2.set_xlabel("day")
    return _svg(fig)


def chart_ack_histogram(results: Sequence[SimResult]) -> str:
    _setup_matplotlib()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    h = results[0].summary.ack_histogram
    labels = [_fmt_s(e) for e in h.lower]
    labels[-1] = f"≥ {labels[-1]}"
    width = 0.8 / len(results)
    for k, r in enumerate(results):
        counts = r.summary.ack_histogram.counts
        ax.bar(np.arange(len(counts)) + k * width, counts, width=width, label=r.label)
    ax.set_xticks(np.arange(len(labels)) + width * (len(results) - 1) / 2, labels, rotation=45)
    ax.set_xlabel("time to acknowledge (bin start)")
    ax.set_ylabel("warnings")
    ax.legend()
    return _svg(fig)


def chart_funnel(results: Sequence[SimResult]) -> str:
    _setup_matplotlib()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    labels = [f.label for f in results[0].summary.funnel]
    height = 0.8 / len(results)
    for k, r in enumerate(results):
        ax.barh(
            np.arange(len(labels)) + k * height,
            [f.warnings for f in r.summary.funnel],
            height=height,
            label=r.label,
        )
    ax.set_yticks(np.arange(len(labels)) + height * (len(results) - 1) / 2, labels)
    ax.invert_yaxis()
    ax.set_xlabel("warnings")
    ax.legend()
    return _svg(fig)


def chart_busiest(s: Summary, top: int = 15) -> str:
    _setup_matplotlib()
    import matplotlib.pyplot as plt

    officers = sorted(
        (o for o in s.officers if o.role != "county"), key=lambda o: -o.counters.messages_sent
    )[:top]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    keys = [o.key for o in officers]
    chats = [o.counters.chats for o in officers]
    campaign = [o.counters.campaign_messages for o in officers]
    warn = [o.counters.warning_chats for o in officers]
    y = np.arange(len(keys))
    ax.barh(y, chats, label="one-to-one chats")
    ax.barh(y, campaign, left=chats, label="campaign messages")
    ax.barh(y, warn, left=np.add(chats, campaign), label="warning chats")
    ax.set_yticks(y, keys)
    ax.invert_yaxis()
    ax.set_xlabel("messages sent")
    ax.legend()
    return _svg(fig)


def low_coverage_grids(s: Summary, top: int = 10) -> list[dict[str, object]]:
    """Grids with many warnings per resident but few prevention messages per resident."""
    ranked: list[tuple[float, dict[str, object]]] = []
    for g in s.grids:
        if g.residents <= 0 or g.warnings <= 0:
            continue
        rate = 1e4 * g.warnings / g.residents
        coverage = g.prevention_messages / g.residents
        row: dict[str, object] = {
            "grid": g.key,
            "residents": g.residents,
            "warnings": g.warnings,
            "warnings_per_10k": rate,
            "prevention_per_resident": coverage,
        }
        # High warning rate first, low coverage breaking ties: rank by rate / (coverage + 0.05).
        ranked.append((-rate / (coverage + 0.05), row))
    ranked.sort(key=lambda pair: pair[0])
    return [row for _, row in ranked[:top]]


def chart_grids(s: Summary) -> str:
    _setup_matplotlib()
    import matplotlib.pyplot as plt

    res = np.array([g.residents for g in s.grids], dtype=float)
    ok = res > 0
    cov = np.array([g.prevention_messages for g in s.grids])[ok] / res[ok]
    rate = 1e4 * np.array([g.warnings for g in s.grids])[ok] / res[ok]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    flagged = (cov <= np.median(cov)) & (rate >= np.percentile(rate, 90)) & (rate > 0)
    ax.scatter(cov[~flagged], rate[~flagged], s=6, alpha=0.4, label="grids")
    ax.scatter(
        cov[flagged], rate[flagged], s=14, color="tab:red", label="low coverage, high warnings"
    )
    ax.axvline(np.median(cov), color="gray", lw=0.6, ls="--")
    ax.axhline(np.percentile(rate, 90), color="gray", lw=0.6, ls="--")
    ax.set_xlabel("routine prevention messages per resident")
    ax.set_ylabel("warnings per 10,000 residents")
    ax.legend()
    return _svg(fig)


def chart_misses(results: Sequence[SimResult]) -> str:
    _setup_matplotlib()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    levels = ["1", "2", "3", "4"]
    width = 0.8 / len(results)
    for k, r in enumerate(results):
        vals = [r.summary.deadlines_missed_by_level.get(lv, 0) for lv in levels]
        ax.bar(np.arange(4) + k * width, vals, width=width, label=r.label)
    ax.set_xticks(np.arange(4) + width * (len(results) - 1) / 2, [f"level {lv}" for lv in levels])
    ax.set_ylabel("ack deadlines missed")
    ax.legend()
    return _svg(fig)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px}
td.n{text-align:right}h2{margin-top:2em}figure{margin:0}svg{max-width:100%;height:auto}
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{v:,.2f}</td>'
            if isinstance(v, float)
            else f'<td class="n">{v:,}</td>'
            if isinstance(v, int)
            else f"<td>{html.escape(str(v))}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html(results: Sequence[SimResult], out: Path) -> Path:
    """One self-contained HTML report; with several results (what-if), side by side."""
    base = results[0].summary
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>warn-dispatch simulation report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>warn-dispatch: simulated month</h1>",
        _table(["", *(r.label for r in results)], _summary_rows(results)),
    ]
    if len(results) > 1:
        parts += ["<h2>What-if: ack deadlines missed against the baseline</h2>"]
        parts += [f"<figure class='chart' id='misses'>{chart_misses(results)}</figure>"]
    parts += [
        "<h2>Warnings and messages per hour</h2>",
        f"<figure class='chart' id='per-hour'>{chart_warnings_per_hour(base)}</figure>",
        "<h2>Time to acknowledge</h2>",
        f"<figure class='chart' id='ack'>{chart_ack_histogram(results)}</figure>",
        "<h2>Escalation funnel</h2>",
        f"<figure class='chart' id='funnel'>{chart_funnel(results)}</figure>",
        "<h2>Busiest officers</h2>",
        f"<figure class='chart' id='busiest'>{chart_busiest(base)}</figure>",
        "<h2>Grids where prevention coverage is low but warnings are high</h2>",
        f"<figure class='chart' id='grids'>{chart_grids(base)}</figure>",
        _table(
            ["grid", "residents", "warnings", "warnings / 10k", "prevention / resident"],
            [list(r.values()) for r in low_coverage_grids(base)],
        ),
        "<h2>Stations</h2>",
        _table(
            ["station", "officers", "contacts", "messages", "warnings", "ack p50 s", "ack p90 s",
             "escalations", "deadlines missed"],
            [
                [st.key, st.officers, st.counters.contacts, st.counters.messages_sent,
                 st.counters.warnings, st.counters.time_to_ack.p50 or 0.0,
                 st.counters.time_to_ack.p90 or 0.0, st.counters.escalations,
                 st.counters.deadlines_missed]
                for st in base.stations
            ],
        ),
        "</body></html>",
    ]  # fmt: skip
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _summary_rows(results: Sequence[SimResult]) -> list[list[str]]:
    rows = [_rows(r) for r in results]
    return [[name, *(row[i][1] for row in rows)] for i, (name, _) in enumerate(rows[0])]


def write_reports(results: Sequence[SimResult], out: Path) -> tuple[Path, Path]:
    """JSON and HTML into ``out`` (created if missing)."""
    out.mkdir(parents=True, exist_ok=True)
    return write_json(results, out), write_html(results, out)
