"""Audience resolution: our chunked-bitset index against SQLite, pyroaring and Redis BITOP.

    python3 -m benchmarks.audience                 # 1.3 M county, all peers (~3 minutes)
    python3 -m benchmarks.audience --scale 10000000 # also our index at 10 M residents
    python3 -m benchmarks.audience --markdown       # tables as Markdown, for RESULTS.md

Every engine answers the same expressions over the same generated county and must agree on
every count before anything is timed. Expressions come from seeded templates shaped like what
admins send (tags of mixed density, negations, unions, optionally one unit); each row pools the
samples of eight such expressions. Times are per call: median and p99.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks.bandwidth import dram_bandwidth, read_bandwidth
from benchmarks.peers import Peer, RedisBitopPeer, RoaringPeer, SQLitePeer, needed_sets
from benchmarks.tables import show
from benchmarks.timing import fmt_bytes, fmt_seconds
from engine.audience.bitset import ChunkedBitset
from engine.audience.expr import parse
from engine.audience.program import Audience, Conj, Disj, Leaf, PlanNode
from engine.registry.registry import Registry
from engine.registry.synthetic import CountySpec, generate_county

VARIANTS = 8
TEMPLATES: dict[str, str] = {
    "2 terms": "{d0} & ~{m0}",
    "4 terms": "({d0} | {m0}) & {d1} & ~{m1}",
    "8 terms": "({d0} | {m0}) & {d1} & ~{m1} & ~{s0} & ({m2} | {s1}) & ~{d2}",
    "8 terms, one station": "station:{st} & ({d0} | {m0}) & {d1} & ~{m1} & ~{s0} & {m2} & ~{d2}",
    "8 terms, one grid": "grid:{gr} & ({d0} | {m0}) & {d1} & ~{m1} & ~{s0} & {m2} & ~{d2}",
}


@dataclass
class Row:
    median: float
    p99: float


def expressions(reg: Registry, seed: int) -> dict[str, list[str]]:
    """Seeded expressions per template, tags drawn from dense (>5%), medium and sparse (<0.5%)."""
    rng = np.random.default_rng(seed)
    n = len(reg)
    counts = {k: s.count() for k, s in zip(reg.taxonomy.keys, reg.sets["tag"], strict=True)}
    band = {
        "d": [k for k, c in counts.items() if c > 0.05 * n],
        "m": [k for k, c in counts.items() if 0.005 * n <= c <= 0.05 * n],
        "s": [k for k, c in counts.items() if 0 < c < 0.005 * n],
    }
    stations = list(reg.jurisdiction.index["station"])
    grids = list(reg.jurisdiction.index["grid"])
    out: dict[str, list[str]] = {}
    for label, template in TEMPLATES.items():
        out[label] = []
        for _ in range(VARIANTS):
            picks = {b: list(rng.choice(keys, 3, replace=False)) for b, keys in band.items()}
            fields = {f"{b}{i}": picks[b][i] for b in band for i in range(3)}
            fields |= {"st": rng.choice(stations), "gr": rng.choice(grids)}
            out[label].append(template.format(**fields))
    return out


def pooled(fns: list[Callable[[], object]], budget: float, min_samples: int = 5) -> Row:
    """Median and p99 over calls of all ``fns``, each sampled for ~budget/len(fns) seconds."""
    samples: list[int] = []
    for fn in fns:
        fn()
        fn()  # warm: caches, lazy tables, first allocations
        deadline = time.perf_counter() + budget / len(fns)
        taken = 0
        while taken < min_samples or (time.perf_counter() < deadline and taken < 400):
            t0 = time.perf_counter_ns()
            fn()
            samples.append(time.perf_counter_ns() - t0)
            taken += 1
    arr = np.sort(np.array(samples)) / 1e9
    return Row(
        float(np.median(arr)), float(arr[min(arr.size - 1, int(np.ceil(0.99 * arr.size)) - 1)])
    )


def ratio(peer: float, ours: float) -> str:
    """How many times slower than ours a peer is (below 1: faster)."""
    r = peer / ours
    return f"{r:,.0f}x" if r >= 10 else f"{r:.2g}x"


def leaves(plan: PlanNode) -> int:
    """How many stored bitsets a plan reads (each once)."""
    if isinstance(plan, Leaf):
        return 1
    if isinstance(plan, Conj):
        return sum(leaves(p) for p in plan.pos + plan.neg) + (0 if plan.pos else 1)
    assert isinstance(plan, Disj)
    return sum(leaves(p) for p in plan.items)


def touched_bytes(audience: Audience) -> int:
    """Bytes of bitsets one evaluation reads: operands times the chunks it keeps."""
    ev = audience._evaluator
    chunks = int(np.count_nonzero(ev._present(audience.plan)))
    return leaves(audience.plan) * chunks * ev.live.chunk_words * 8


def bitset(reg: Registry, name: str) -> ChunkedBitset:
    """Our stored set for a peer set name such as ``tag:elderly`` or ``grid:03-17``."""
    kind, key = name.split(":", 1)
    return reg.bitset(kind, key)


def build_peers(reg: Registry, exprs: list[str], console: Console) -> list[Peer]:
    names = needed_sets(parse(e) for e in exprs)
    sets = {name: bitset(reg, name).ids() for name in sorted(names)}
    live = reg.live.ids()
    peers: list[Peer] = []
    for cls in (RoaringPeer, SQLitePeer, RedisBitopPeer):
        t0 = time.perf_counter()
        peers.append(cls(reg.n_ids, live, sets))
        console.print(f"  built {cls.name} in {time.perf_counter() - t0:.1f} s")
    return peers


def run(residents: int, with_peers: bool, budget: float, console: Console) -> tuple[Table, str]:
    t0 = time.perf_counter()
    reg = generate_county(CountySpec(residents=residents, contacts=int(residents * 0.577)))
    console.print(f"generated {residents:,} residents in {time.perf_counter() - t0:.1f} s")
    suites = expressions(reg, seed=7)
    all_exprs = [e for es in suites.values() for e in es]
    peers = build_peers(reg, all_exprs, console) if with_peers else []
    ours = {e: reg.audience(e) for e in all_exprs}
    for e in all_exprs:  # everybody must agree before anybody is timed
        expect = ours[e].count()
        node = parse(e)
        for p in peers:
            got = p.count(node)
            assert got == expect, f"{p.name} says {got} for {e!r}, ours {expect}"
        assert np.array_equal(ours[e].ids(), peers[0].ids(node)) if peers else True

    names = ["ours", *(p.name for p in peers)]
    table = Table(title=f"audience resolution over {len(reg):,} residents (median / p99 per call)")
    table.add_column("expressions")
    table.add_column("mean size", justify="right")
    for name in names:
        table.add_column(f"{name} count", justify="right")
    for name in names[1:]:
        table.add_column(f"{name}/ours", justify="right")
    for name in names:
        table.add_column(f"{name} ids", justify="right")
    for name in names[1:]:
        table.add_column(f"{name}/ours ids", justify="right")

    bound_lines = []
    for label, exprs in suites.items():
        size = np.mean([ours[e].count() for e in exprs])
        nodes = [parse(e) for e in exprs]
        counts = [pooled([a.count for a in (ours[e] for e in exprs)], budget)]
        ids = [pooled([a.ids for a in (ours[e] for e in exprs)], budget)]
        for p in peers:
            slow = p.name == "sqlite"
            counts.append(
                pooled([lambda n=n, p=p: p.count(n) for n in nodes], budget * (2 if slow else 1))
            )
            ids.append(
                pooled([lambda n=n, p=p: p.ids(n) for n in nodes], budget * (2 if slow else 1))
            )
        table.add_row(
            label,
            f"{size:,.0f}",
            *(f"{fmt_seconds(r.median)} / {fmt_seconds(r.p99)}" for r in counts),
            *(ratio(r.median, counts[0].median) for r in counts[1:]),
            *(f"{fmt_seconds(r.median)} / {fmt_seconds(r.p99)}" for r in ids),
            *(ratio(r.median, ids[0].median) for r in ids[1:]),
        )
        nbytes = int(np.median([touched_bytes(ours[e]) for e in exprs]))
        cache_rate, _ = read_bandwidth(nbytes)
        dram_bound, cache_bound = nbytes / dram_bandwidth(), nbytes / cache_rate
        bound_lines.append(
            f"{label}: reads {fmt_bytes(nbytes)}; DRAM bound {fmt_seconds(dram_bound)}"
            f" (ours x{counts[0].median / dram_bound:.1f}), cache-resident bound"
            f" {fmt_seconds(cache_bound)} (ours x{counts[0].median / cache_bound:.1f})"
        )
    units = sum(len(v) for v in reg.jurisdiction.units.values())
    needed = needed_sets(parse(e) for e in all_exprs)
    ours_needed = sum(bitset(reg, n).nbytes() for n in needed) + reg.live.nbytes()
    mem = [
        f"ours: whole index {fmt_bytes(reg.index_nbytes())} (all {len(reg.taxonomy)} tags,"
        f" {units:,} units, {len(reg.officers):,} officers)",
        f"same {len(needed)} sets + live: ours {fmt_bytes(ours_needed)}"
        + "".join(f", {p.name} {fmt_bytes(p.memory_bytes())}" for p in peers),
    ]
    for p in peers:
        p.close()
    notes = "\n".join(
        [f"DRAM read bandwidth {dram_bandwidth() / 1e9:.1f} GB/s", *bound_lines, *mem]
    )
    del reg, ours
    gc.collect()
    return table, notes


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--residents", type=int, default=1_300_000)
    ap.add_argument("--scale", type=int, nargs="*", default=[], help="extra sizes, ours only")
    ap.add_argument("--budget", type=float, default=1.5, help="seconds of sampling per cell")
    ap.add_argument("--markdown", action="store_true", help="print tables as Markdown")
    args = ap.parse_args()
    console = Console(width=250)
    results = [run(args.residents, True, args.budget, console)]
    for n in args.scale:
        results.append(run(n, False, args.budget, console))
    for table, notes in results:
        show(table, args.markdown, console)
        print(notes + "\n")


if __name__ == "__main__":
    main()
