"""The load simulator: the default month through the real engine, timed, with a profile.

    python3 -m benchmarks.simulate               # the default month (about 3 minutes in all)
    python3 -m benchmarks.simulate --markdown    # tables as Markdown, for RESULTS.md
    python3 -m benchmarks.simulate --days 3      # a quick look

Measured, in this order:
1. ``warn-dispatch simulate --no-progress`` end to end in a fresh subprocess (county snapshot
   already cached): wall time and the child's peak RSS (``getrusage(RUSAGE_CHILDREN)``), which
   is the issue's target (< 30 s, < 1 GiB).
2. In this process: the replay alone (batched driver), the same with the engine's journal
   (fsync ``none``: the simulation measures the engine, not the disk), and the peer: the same
   month with a naive driver that hands every event over with its own ``await`` (``submit``,
   ``feedback``, one action per ``receive``, one chat per recorder call).
3. cProfile of the batched replay: the top functions by own time, and own time per component.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np
import trio
from rich.console import Console
from rich.table import Table

from benchmarks.tables import show
from engine.cli.common import open_county
from simulator.replay import SimResult, _Replay, replay
from simulator.traffic import TrafficSpec


class NaiveReplay(_Replay):
    """The peer: the same simulation, but every event crosses with its own ``await``."""

    async def _submit(self, engine, batch) -> None:
        for w in batch:
            await engine.submit(w)

    async def _feed(self, engine, batch) -> None:
        for event in batch:
            await engine.feedback(event)

    def _chats(self, officers, residents, times) -> None:
        for o, r, t in zip(officers.tolist(), residents.tolist(), times.tolist(), strict=True):
            self.stats.observe_chat(np.array([o]), np.array([r]), t)

    async def _engine_consumer(self, engine) -> None:
        async for action in engine.actions():
            now = trio.current_time()
            self.events += 1
            self.stats.observe_actions((action,), now)
            self.actors.on_actions((action,), now - self.t0)
            self._poke()

    async def _campaign_consumer(self, recv) -> None:
        async for action in recv:
            now = trio.current_time()
            self.events += 1
            self.stats.observe_campaign(action, now)
            self.actors.on_campaign((action,), now - self.t0)
            self._poke()


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cli_run(days: int) -> tuple[float, float, dict]:
    """The README's command in a fresh process: (wall s, peak RSS MiB, summary.json[0])."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "engine.cli", "simulate", "--no-progress", "--out", tmp]
        if days != 30:
            cmd += ["--days", str(days)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        data = msgspec.json.decode(Path(tmp, "summary.json").read_bytes())[0]
    return wall, rss, data


COMPONENTS = (
    ("trio run loop, channels, sleeps", ("/trio/",)),
    ("campaign dispatch and ledger", ("engine/campaigns/",)),
    ("engine scheduler and machines", ("engine/scheduler.py", "engine/machine.py")),
    ("engine journal", ("engine/journal/", "engine/durability.py")),
    ("statistics recorder", ("engine/stats/",)),
    ("simulator driver and actors", ("simulator/",)),
    ("numpy", ("/numpy/",)),
)


def profile(registry, spec: TrafficSpec) -> tuple[list[tuple[str, int, float, float]], dict]:
    """Top 10 functions by own time, and own time per component (shares of the total)."""
    prof = cProfile.Profile()
    prof.enable()
    replay(registry, spec)
    prof.disable()
    st = pstats.Stats(prof)
    rows = []
    total = 0.0
    by_component: dict[str, float] = {name: 0.0 for name, _ in COMPONENTS}
    by_component["other (builtins, msgspec, stdlib)"] = 0.0
    for (file, line, func), (_, ncalls, tottime, cumtime, _) in st.stats.items():  # type: ignore[attr-defined]
        total += tottime
        where = f"/numpy/{func}" if file == "~" and "numpy" in func else file
        for name, parts in COMPONENTS:
            if any(p in where for p in parts):
                by_component[name] += tottime
                break
        else:
            by_component["other (builtins, msgspec, stdlib)"] += tottime
        short = file.split("site-packages/")[-1].split("/work/main/")[-1]
        rows.append((f"{short}:{line}({func})", ncalls, tottime, cumtime))
    rows.sort(key=lambda r: -r[2])
    return rows[:10], {k: v / total for k, v in by_component.items()}


def describe(r: SimResult) -> tuple[str, ...]:
    c = r.summary.county
    return (
        f"{r.wall_s:.1f} s",
        f"{r.events:,}",
        f"{r.events / r.wall_s:,.0f}",
        f"{c.messages_sent:,}",
        f"{c.deadlines_missed:,}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--profile-days", type=int, default=10)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    console = Console(width=200)
    registry = open_county(None, None, None)  # cached after the first run
    spec = TrafficSpec(days=args.days)

    console.print(f"CLI end to end ({args.days} days) ...")
    cli_wall, cli_rss, cli_data = cli_run(args.days)
    console.print("in-process replays ...")
    runs: list[tuple[str, SimResult]] = [("batched driver (ours)", replay(registry, spec))]
    with tempfile.TemporaryDirectory() as tmp:
        runs.append(
            ("batched + journal (fsync none)", replay(registry, spec, journal_dir=Path(tmp) / "j"))
        )
    if not args.skip_naive:
        runs.append(("naive driver (await per event)", replay(registry, spec, driver=NaiveReplay)))
    in_process_rss = rss_mib()
    console.print(f"profile ({args.profile_days} days) ...")
    top, components = profile(registry, TrafficSpec(days=args.profile_days))

    c = cli_data["summary"]["county"]
    head = Table(title=f"warn-dispatch simulate, default month ({args.days} days), end to end")
    for col in ("measure", "value", "target"):
        head.add_column(col)
    head.add_row("wall (fresh process, cached county)", f"{cli_wall:.1f} s", "< 30 s")
    head.add_row("of which the replay", f"{cli_data['wall_s']:.1f} s", "")
    head.add_row("peak RSS", f"{cli_rss:,.0f} MiB", "< 1,024 MiB")
    head.add_row("events", f"{cli_data['events']:,}", "")
    head.add_row("events/s (replay)", f"{cli_data['events'] / cli_data['wall_s']:,.0f}", "")
    head.add_row("messages sent", f"{c['messages_sent']:,}", "about 752,600")
    head.add_row("one-to-one chats", f"{c['chats']:,}", "about 353,400")
    head.add_row("warnings", f"{cli_data['summary']['warnings']:,}", "")

    peers = Table(title="replay drivers, same month, same process")
    for col in ("driver", "wall", "events", "events/s", "messages", "deadlines missed", "vs ours"):
        peers.add_column(col)
    base = runs[0][1].wall_s
    for name, r in runs:
        peers.add_row(name, *describe(r), f"{r.wall_s / base:.2f}x")

    prof = Table(title=f"cProfile, batched replay of {args.profile_days} days: top 10 own time")
    for col in ("function", "calls", "own s", "cumulative s"):
        prof.add_column(col)
    for name, calls, tot, cum in top:
        prof.add_row(name, f"{calls:,}", f"{tot:.2f}", f"{cum:.2f}")
    comp = Table(title="own time by component (cProfile)")
    comp.add_column("component")
    comp.add_column("share")
    for name, share in sorted(components.items(), key=lambda kv: -kv[1]):
        comp.add_row(name, f"{share:.0%}")
    for t in (head, peers, prof, comp):
        show(t, args.markdown, console)
    print(f"\npeak RSS of this process (3 replays, county mapped): {in_process_rss:,.0f} MiB")


if __name__ == "__main__":
    main()
