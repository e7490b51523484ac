"""A/B: the engine before issue 14 against the engine with rosters and correlation on.

    python3 -m benchmarks.duty                       # A = 74ee4dc, 5 alternating runs each
    python3 -m benchmarks.duty --base COMMIT --runs 3 --n 100000 --markdown

Issue 14 asks that events/s and memory per pending warning, with rosters and correlation on,
stay within 20% of the figures before it. The machine's noise is larger than that between
sessions, so both trees are measured here in the same minutes, alternating A, B, B0, A, B,
B0 ... each in a fresh interpreter:

- **A**: ``benchmarks.engine`` of the base commit (a git worktree of it in a temporary folder),
  with its own engine and the packaged ladders: today's figures.
- **B**: this tree with ``duty=True``: the packaged rules folder (incidents by resident, phone
  and household; area alerts; inhibition), a roster for each of the 50 stations (day and
  night duty officers, a chief rotation, leave), responders carrying station, grid and
  household keys. Every duty and chief rung resolves through the roster when it fires.
- **B0**: this tree with the ladders alone, to tell the cost of the features from the rest.

Throughput is ``throughput_engine(50_000, bulk=True)`` (events/s, medians). Memory is the
tracemalloc bytes per pending warning with all n pending (engine opened inside the measurement,
so its rules and indexes count): just after intake, as ``benchmarks.engine`` measures it, and
31 minutes of engine time later, when the correlation index has let go of all but the newest
(in a steady state it holds the last 30 minutes of intake, not every pending warning).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from benchmarks.tables import make_table, show

ROOT = Path(__file__).resolve().parent.parent
BASE = "74ee4dc"
SETTLE_S = 31 * 60.0
"""Engine time after intake for the second memory figure: past the 30-minute correlation
window, when the incident index holds only the newest warnings, as it does in a steady state."""


def _run(tree: Path, code: str, timeout: float) -> object:
    """``code`` in a fresh interpreter whose ``engine`` and ``benchmarks`` are ``tree``'s."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def throughput(tree: Path, duty: bool | None, n: int) -> float:
    extra = "" if duty is None else f", duty={duty}"
    code = (
        "import json, benchmarks.engine as b; "
        f"print(json.dumps(b.throughput_engine({n}, bulk=True{extra})[0]))"
    )
    return float(_run(tree, code, 900))  # type: ignore[arg-type]


_MEMORY = """
import gc, json, tracemalloc, trio, trio.testing
import benchmarks.engine as b
from engine.scheduler import Engine
n, duty, settle = {n}, {duty}, {settle}
ws = b.warnings(n + 1, hours=24)
rules = b.duty_rules() if duty else b.RULES
directory = b.SyntheticDirectory(True) if duty else b.SyntheticDirectory()
for w in ws[:100_000]:
    directory.responders(w.target)
out = {{}}
async def main():
    async with trio.open_nursery() as nursery:
        counter = [0]
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        async with Engine.open(directory, rules, wall_clock=b.wall_clock_from_trio) as engine:
            nursery.start_soon(b._drain, engine.actions(), counter)
            for i in range(0, n, 512):
                await engine.submit_many(ws[i : min(n, i + 512)])
            while engine.stats.intake < n or counter[0] < 2 * n:
                await trio.sleep(0)
            if settle:
                await trio.sleep(settle)
                await engine.submit_many(ws[n:])  # one more intake: the index is pruned
                await trio.sleep(1)
            gc.collect()
            out["bytes"] = tracemalloc.get_traced_memory()[0] - before
            out["pending"] = engine.pending
            tracemalloc.stop()
            nursery.cancel_scope.cancel()
trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
print(json.dumps(out["bytes"] / out["pending"]))
"""


def memory(tree: Path, duty: bool | None, n: int, settle: float = 0.0) -> float:
    """Bytes per pending warning (tracemalloc, the engine opened inside the measurement) with
    all ``n`` pending: at once, or ``settle`` seconds of engine time later."""
    code = _MEMORY.format(n=n, duty=bool(duty), settle=settle)
    return float(_run(tree, code, 3600))  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base", default=BASE, help=f"the commit before the change [{BASE}]")
    ap.add_argument("--runs", type=int, default=5, help="alternating runs of each [5]")
    ap.add_argument("--tp", type=int, default=50_000, help="warnings per throughput run")
    ap.add_argument("--n", type=int, default=200_000, help="pending warnings for memory")
    ap.add_argument("--markdown", action="store_true", help="also print a markdown table")
    args = ap.parse_args()
    console = Console(width=200)
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="wd-ab-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(base), args.base],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            rates: dict[str, list[float]] = {"A": [], "B": [], "B0": []}
            mem: dict[str, list[float]] = {"A": [], "B": [], "B0": []}
            plan = (("A", base, None), ("B", ROOT, True), ("B0", ROOT, False))
            for i in range(args.runs):
                for name, tree, duty in plan:
                    rates[name].append(throughput(tree, duty, args.tp))
                console.print(f"throughput run {i + 1}/{args.runs}: " + ", ".join(
                    f"{k} {v[-1] / 1e3:.0f} k/s" for k, v in rates.items()
                ))  # fmt: skip
            for settle in (0.0, SETTLE_S):
                for name, tree, duty in plan:
                    mem[name].append(memory(tree, duty, args.n, settle))
                console.print(
                    f"memory (+{settle:g} s): "
                    + ", ".join(f"{k} {v[-1]:,.0f} B" for k, v in mem.items())
                )
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False
            )
    med = {k: statistics.median(v) for k, v in rates.items()}
    span = {k: (min(v), max(v)) for k, v in rates.items()}
    b_commit = head + (" + uncommitted changes" if dirty else "")
    rows = [
        (
            f"events/s, submit_many ({args.tp:,} warnings, median of {args.runs})",
            f"{med['A'] / 1e3:,.0f} k/s ({span['A'][0] / 1e3:,.0f}-{span['A'][1] / 1e3:,.0f})",
            f"{med['B'] / 1e3:,.0f} k/s ({span['B'][0] / 1e3:,.0f}-{span['B'][1] / 1e3:,.0f})",
            f"{med['B0'] / 1e3:,.0f} k/s",
            f"{med['B'] / med['A'] - 1:+.1%}",
        ),
        *(
            (
                f"memory per pending warning, {when} ({args.n:,} pending, tracemalloc)",
                f"{mem['A'][k]:,.0f} B",
                f"{mem['B'][k]:,.0f} B",
                f"{mem['B0'][k]:,.0f} B",
                f"{mem['B'][k] / mem['A'][k] - 1:+.1%}",
            )
            for k, when in enumerate(
                ("just after intake", f"{SETTLE_S / 60:g} min later (correlation window over)")
            )
        ),
    ]
    headers = (
        "measure",
        f"A: {args.base} (before)",
        f"B: {b_commit}, rosters + correlation",
        "B0: same tree, ladders only",
        "B against A",
    )
    show(make_table("engine before and after issue 14", headers, rows), args.markdown, console)


if __name__ == "__main__":
    main()
