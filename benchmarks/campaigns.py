"""Campaign planning: our vectorised planner against a straightforward pure-Python one.

    python3 -m benchmarks.campaigns               # 1.3 M county (750,000 contacts, 1,400 officers)
    python3 -m benchmarks.campaigns --markdown    # the table as Markdown, for RESULTS.md

Planning = resolve the audience, drop residents who already have the content, apply the routine
frequency caps, group the rest by contact officer into send tasks (SMS for the others). The
ledger starts with history: 40% of residents got 1-3 routine messages this week, and 10% of
the county already has the content being planned. Both planners start from the same state and
must agree on every count before anything is timed. Times are medians of single calls; peak
memory is tracemalloc's peak during one call (numpy arrays included).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from rich.console import Console

from benchmarks.tables import make_table, show
from benchmarks.timing import fmt_bytes, fmt_seconds, measure
from engine.campaigns.campaign import Campaign, Plan, Reason
from engine.campaigns.ledger import Ledger
from engine.campaigns.planning import plan_campaign
from engine.campaigns.policy import CampaignPolicy
from engine.registry.registry import Registry
from engine.registry.synthetic import CountySpec, generate_county

POLICY = CampaignPolicy()
NOW = 30 * 86400.0
WALL = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # 10:00 in the county: no quiet hours


def campaign(ident: str, audience: str) -> Campaign:
    return Campaign(
        id=ident,
        title="反诈提醒",
        text="陌生来电要求转账，一律是诈骗。",
        audience=audience,
        priority="routine",
        issuer="county_admin",
        category="antifraud",
    )


def seeded_ledger(reg: Registry, key: str, seed: int = 7) -> Ledger:
    """History: 40% of residents had 1-3 routine sends in the last week; 10% have the content."""
    rng = np.random.default_rng(seed)
    led = Ledger(POLICY.cap_window_s, POLICY.routine_cap, POLICY.category_caps)
    n = reg.n_ids
    led.ensure(n)
    who = np.flatnonzero(rng.random(n) < 0.4)
    k = rng.integers(1, POLICY.routine_cap + 1, who.size)
    for slot in range(POLICY.routine_cap):
        has = who[k > slot]
        led.total.times[has, slot] = led.stamp(NOW) - rng.integers(0, 6 * 86400, has.size)
    anti = who[rng.random(who.size) < 0.3]
    led.category["antifraud"].times[anti, 0] = led.stamp(NOW - 3600)
    led.reserve(np.flatnonzero(rng.random(n) < 0.1), key, None, NOW)
    return led


class PythonPlanner:
    """The obvious planner: loop over ids, dicts of send-time lists, dict-of-lists grouping."""

    def __init__(self, reg: Registry, led: Ledger, key: str) -> None:
        self.reg = reg
        thr = led.threshold(0)  # every stamp, as seconds since the epoch
        t = led.total.times
        rows = np.flatnonzero((t >= thr).any(axis=1))
        self.total = {int(r): [int(x) - 1 for x in t[r] if x] for r in rows}
        c = led.category["antifraud"].times
        rows = np.flatnonzero((c >= thr).any(axis=1))
        self.category = {int(r): [int(x) - 1 for x in c[r] if x] for r in rows}
        self.held = set(np.flatnonzero(led.has_content(key, np.arange(reg.n_ids))).tolist())
        self.officer_keys = [o.key for o in reg.officers]

    def plan(self, c: Campaign) -> dict[str, object]:
        ids = self.reg.audience(c.audience).ids().tolist()
        officer = self.reg.officer
        since = NOW - POLICY.cap_window_s
        cap, cat_cap = POLICY.routine_cap, POLICY.category_caps[c.category]
        tasks: dict[str, list[int]] = {}
        sms: list[int] = []
        capped: list[int] = []
        duplicate: list[int] = []
        for rid in ids:
            if rid in self.held:
                duplicate.append(rid)
                continue
            if sum(1 for t in self.total.get(rid, ()) if t >= since) >= cap or (
                sum(1 for t in self.category.get(rid, ()) if t >= since) >= cat_cap
            ):
                capped.append(rid)
                continue
            o = int(officer[rid])
            if o < 0:
                sms.append(rid)
            else:
                tasks.setdefault(self.officer_keys[o], []).append(rid)
        return {"tasks": tasks, "sms": sms, "capped": capped, "duplicate": duplicate}


def ours(reg: Registry, led: Ledger, c: Campaign) -> Callable[[], Plan]:
    return lambda: plan_campaign(c, reg, led, POLICY, now=NOW, wall_now=WALL)


def peak(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def pick_targeted(reg: Registry, target: int = 20_000) -> str:
    """The single-tag audience closest to ``target`` residents (a realistic targeted campaign)."""
    counts = {k: s.count() for k, s in zip(reg.taxonomy.keys, reg.sets["tag"], strict=True)}
    return min(counts, key=lambda k: abs(counts[k] - target))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--residents", type=int, default=1_300_000)
    ap.add_argument("--contacts", type=int, default=750_000)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    console = Console(width=220)
    t0 = time.perf_counter()
    reg = generate_county(CountySpec(residents=args.residents, contacts=args.contacts))
    console.print(f"county: {len(reg):,} residents in {time.perf_counter() - t0:.1f} s")
    targeted = pick_targeted(reg)
    cases = [
        ("county-wide (all)", campaign("county", "all"), 5, 3),
        (f"targeted ({targeted})", campaign("targeted", targeted), 50, 10),
    ]
    key = cases[0][1].content_key
    led = seeded_ledger(reg, key)
    peer = PythonPlanner(reg, led, key)

    rows = []
    for name, c, repeats, peer_repeats in cases:
        plan = ours(reg, led, c)()
        ref = peer.plan(c)
        counts = (
            plan.count(Reason.CHAT),
            plan.count(Reason.SMS),
            plan.count(Reason.CAPPED_TOTAL) + plan.count(Reason.CAPPED_CATEGORY),
            plan.count(Reason.DUPLICATE),
            len(plan.tasks),
        )
        ref_counts = (
            sum(len(v) for v in ref["tasks"].values()),  # type: ignore[union-attr]
            len(ref["sms"]),  # type: ignore[arg-type]
            len(ref["capped"]),  # type: ignore[arg-type]
            len(ref["duplicate"]),  # type: ignore[arg-type]
            len(ref["tasks"]),  # type: ignore[arg-type]
        )
        assert counts == ref_counts, (name, counts, ref_counts)
        assert all(
            ref["tasks"][t.officer] == t.ids.tolist()  # type: ignore[index]
            for t in plan.tasks
        )
        med, p99 = measure(ours(reg, led, c), repeats=repeats, min_time=0.5)
        pmed, _ = measure(lambda c=c: peer.plan(c), repeats=peer_repeats, min_time=0, warmup=1)
        rows.append(
            (
                name,
                plan.ids.size,
                counts,
                med,
                p99,
                peak(ours(reg, led, c)),
                pmed,
                peak(lambda c=c: peer.plan(c)),
            )
        )

    headers = [
        "campaign",
        "resolved",
        "chat / SMS / capped / dup",
        "tasks",
        "ours median",
        "ours p99",
        "ours peak mem",
        "pure Python median",
        "pure Python peak mem",
        "speed-up",
    ]
    body = [
        [
            name,
            f"{n:,}",
            f"{c[0]:,} / {c[1]:,} / {c[2]:,} / {c[3]:,}",
            f"{c[4]:,}",
            fmt_seconds(med),
            fmt_seconds(p99),
            fmt_bytes(mem),
            fmt_seconds(pmed),
            fmt_bytes(pmem),
            f"{pmed / med:.0f}x",
        ]
        for name, n, c, med, p99, mem, pmed, pmem in rows
    ]
    table = make_table("Campaign planning (resolve + dedupe + caps + group)", headers, body)
    show(table, args.markdown)
    console.print(f"ledger: {fmt_bytes(led.nbytes)} for {reg.n_ids:,} residents")


if __name__ == "__main__":
    main()
