"""Registry operations at county scale: snapshot open, and single-resident updates.

    python3 -m benchmarks.registry [--residents N]

Updates must not depend on county size (set or clear a tag, move between grids, add, remove);
the peer is the same registry at a tenth of the size, measured in the same run: a ratio near 1
means the cost does not grow with the county.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.timing import fmt_seconds, measure
from engine.registry.registry import Registry
from engine.registry.synthetic import CountySpec, generate_county


def operations(reg: Registry) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(1)
    live = reg.live.ids()
    grids = [u.key for u in reg.jurisdiction.units["grid"]]
    out: dict[str, tuple[float, float]] = {}
    chosen = rng.choice(live, 20_000, replace=False).tolist()
    picks = itertools.cycle(chosen[:10_000])  # setting a tag twice costs the same
    out["set_tag"] = measure(lambda: reg.set_tag(next(picks), "warned_7d"), repeats=2000)
    out["clear_tag"] = measure(lambda: reg.set_tag(next(picks), "elderly", False), repeats=2000)
    out["move to another grid"] = measure(
        lambda: reg.update_resident(next(picks), grid=grids[int(rng.integers(len(grids)))]),
        repeats=2000,
    )
    serial = iter(range(10**9))
    grid = grids[0]
    out["add_resident"] = measure(
        lambda: reg.add_resident(
            f"NEW{next(serial)}",
            name="张三",
            phone="13800000000",
            address="x",
            grid=grid,
            tags=["elderly"],
        ),
        repeats=2000,
        min_time=0.0,
    )
    doomed = iter(chosen[10_000:])  # each removed once
    out["remove_resident"] = measure(
        lambda: reg.remove_resident(next(doomed)), repeats=2000, min_time=0.0, max_time=1.0
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--residents", type=int, default=1_300_000)
    args = ap.parse_args()
    small_n = args.residents // 10
    regs = {}
    for n in (args.residents, small_n):
        regs[n] = generate_county(CountySpec(residents=n, contacts=int(n * 0.577)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "county"
        t0 = time.perf_counter()
        regs[args.residents].save(path)
        save_s = time.perf_counter() - t0
        load = measure(lambda: Registry.load(path), repeats=10)
        reg = Registry.load(path)
        t0 = time.perf_counter()
        first = reg.count("elderly & ~antifraud_app")
        first_s = time.perf_counter() - t0
    print(
        f"snapshot of {args.residents:,} residents: save {save_s:.2f} s, "
        f"open median {fmt_seconds(load[0])} (p99 {fmt_seconds(load[1])}), "
        f"first query after open {fmt_seconds(first_s)} ({first:,} residents; pages fault in)"
    )
    big, small = operations(regs[args.residents]), operations(regs[small_n])
    print(f"\n| operation | {args.residents:,} residents | {small_n:,} residents | ratio |")
    print("|---|---|---|---|")
    for name, (med, p99) in big.items():
        s_med, s_p99 = small[name]
        print(
            f"| {name} | {fmt_seconds(med)} / {fmt_seconds(p99)} | "
            f"{fmt_seconds(s_med)} / {fmt_seconds(s_p99)} | {med / s_med:.2f}x |"
        )


if __name__ == "__main__":
    main()
