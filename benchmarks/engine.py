"""Benchmark the warning engine's scheduler against a naive peer, in the same run.

    python3 -m benchmarks.engine                 # full run (1 M pending for memory; minutes)
    python3 -m benchmarks.engine --quick         # small sizes, for a smoke test

Three measurements, each for the engine (one loop, one deadline heap, batched inboxes) and the
peer (the obvious design: one trio task per warning, sleeping in ``move_on_at`` until its next
deadline or feedback, then calling the same pure ``step``), so the ratio isolates the design:

1. **Throughput**: events (intake + feedback + deadline ticks) per second of wall time on one
   core, under ``MockClock(autojump_threshold=0)`` so virtual deadlines pass instantly and only
   CPU work is timed. Each warning: alert, two deadline ticks, ack, call answered, outcome.
2. **Memory per pending warning** with N pending deadlines (default 1 M): tracemalloc, in a fresh
   subprocess each, counting everything allocated from before the first submit until all are
   pending (states, heap, dicts, warnings, responders; for the peer also tasks and channels).
3. **Latency** intake -> first action, real clock, in-process: one warning in flight at a time
   (idle) and under load (bursts of warnings offered at a steady rate).

Medians over repeats are reported; run-to-run spread is printed next to them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import trio
import trio.testing
from rich.console import Console

from benchmarks.tables import make_table, show
from engine.machine import TICK, Event, Intake, WarningState, step, validate_warning
from engine.model import (
    Acknowledged,
    Action,
    CallResult,
    FeedbackEvent,
    Outcome,
    ResidentTarget,
    Responders,
    Target,
    WarningInstruction,
)
from engine.rules.escalation import EscalationRules, load_escalation
from engine.rules.roster import Leave, Rosters, Rotation
from engine.rules.sources import load_rules
from engine.scheduler import Engine

RULES = load_escalation()
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def duty_rules(stations: int = 50) -> EscalationRules:
    """The packaged rules folder (correlation on: incidents, area alerts, inhibition) with a
    roster for every station of the synthetic county: two duty officers alternating day and
    night weekly, a chief rotation, and a week of leave, so every duty and chief rung resolves
    through :meth:`Rosters.on_duty` when it fires."""
    rotations = []
    for s in range(stations):
        st = f"{s:02d}"
        a, b = f"duty-{s}", f"duty-{s}b"
        for shift, start, end, order in (("day", "08:00", "20:00", (a, b)),
                                         ("night", "20:00", "08:00", (b, a))):  # fmt: skip
            rotations.append(
                Rotation(station=st, role="duty_officer", anchor=EPOCH.date(), officers=order,
                         shift=shift, start_time=start, end_time=end, every="weekly")
            )  # fmt: skip
        rotations.append(
            Rotation(station=st, role="chief", anchor=EPOCH.date(),
                     officers=(f"chief-{s}", f"chief-{s}b"), every="weekly")
        )  # fmt: skip
    leave = tuple(
        Leave(f"duty-{s}", EPOCH, EPOCH + timedelta(days=7), "benchmark leave")
        for s in range(0, stations, 5)
    )
    rosters = Rosters(rotations=tuple(rotations), leave=leave, source="<benchmark rosters>")
    return msgspec.structs.replace(load_rules(), rosters=rosters)


_STATIONS = [f"{s:02d}" for s in range(50)]
_GRIDS = [f"{s:02d}-{g:02d}" for s in range(50) for g in range(40)]


class SyntheticDirectory:
    """Responders computed from the resident id: 500 residents per grid, 40 grids per station.
    Shared Responders objects per grid, as a registry with interned records would return.

    ``duty``: also the station, grid and household keys that rosters and correlation read
    (issue 14), with duty officers named as :func:`duty_rules`' rosters name them."""

    def __init__(self, duty: bool = False) -> None:
        self._cache: dict[int, Responders] = {}
        self.duty = duty

    def responders(self, target: Target) -> Responders:
        rid = target.id if isinstance(target, ResidentTarget) else 0
        r = self._cache.get(rid)
        if r is None:
            grid, station = rid // 500, rid // 20000
            r = Responders(
                county_centre="cc",
                grid_officer=f"grid-{grid}",
                duty_officer=f"duty-{station}",
                chief=f"chief-{station}",
                visitors=(f"nb-{rid}",),
                resident=rid,
            )
            if self.duty:  # unit keys interned, as the registry's are
                r = msgspec.structs.replace(
                    r,
                    grid=_GRIDS[grid % len(_GRIDS)],
                    station=_STATIONS[station % len(_STATIONS)],
                    household=f"h{rid}",  # a key looked up, never shared
                )
            if len(self._cache) < 100_000:
                self._cache[rid] = r
        return r

    def resident_by_phone(self, phone: str) -> int | None:
        return None


def warnings(n: int, *, prefix: str = "w", hours: float = 2.0) -> list[WarningInstruction]:
    return [
        WarningInstruction(
            id=f"{prefix}{i}",
            kind="fraud",
            level=1,
            target=ResidentTarget(i % 1_000_000),
            issued_at=EPOCH,
            expires=EPOCH + timedelta(hours=hours),
        )
        for i in range(n)
    ]


def wall_clock_from_trio() -> datetime:
    return EPOCH + timedelta(seconds=trio.current_time())


# --- the peer: one trio task per warning ----------------------------------------------------


class TaskPerWarning:
    """The naive design: each warning is a task with its own feedback channel and timer.

    Uses the same pure machine, so both engines do the same logic; only scheduling differs.
    """

    def __init__(self, directory: Any, rules: EscalationRules, nursery: trio.Nursery) -> None:
        self.directory, self.rules, self.nursery = directory, rules, nursery
        self.inboxes: dict[str, trio.MemorySendChannel[Event]] = {}
        self.states: dict[str, WarningState] = {}
        self.out_send, self.out_recv = trio.open_memory_channel[Action](65536)
        self.events = 0

    async def submit(self, w: WarningInstruction) -> None:
        validate_warning(w, self.rules)
        inbox = self.inboxes.get(w.id)
        expires_at = trio.current_time() + (w.expires - wall_clock_from_trio()).total_seconds()
        if inbox is None:
            send, recv = trio.open_memory_channel[Event](16)
            self.inboxes[w.id] = send
            responders = self.directory.responders(w.target)
            self.nursery.start_soon(self._run, w.id, recv, Intake(w, responders, expires_at))
        else:
            await inbox.send(Intake(w, self.states[w.id].responders, expires_at))

    async def feedback(self, e: FeedbackEvent) -> None:
        await self.inboxes[e.warning_id].send(e)

    async def _run(self, wid: str, recv: trio.MemoryReceiveChannel[Event], first: Event) -> None:
        state: WarningState | None = None
        event: Event = first
        while True:
            self.events += 1
            state, actions, deadline = step(state, event, trio.current_time(), self.rules)
            assert state is not None
            self.states[wid] = state
            for a in actions:
                await self.out_send.send(a)
            if deadline is None:
                return
            event = TICK
            with trio.move_on_at(deadline):
                event = await recv.receive()


# --- 1. throughput ----------------------------------------------------------------------------


async def _drain(recv: Any, counter: list[int]) -> None:
    """A consumer that batches, as an outbox writer would: wait for one, take all that is ready."""
    while True:
        try:
            await recv.receive()  # ActionStream: one action; memory channel: one action
        except (trio.EndOfChannel, StopAsyncIteration):
            return
        counter[0] += 1
        while True:
            try:
                recv.receive_nowait()
            except trio.WouldBlock:
                break
            counter[0] += 1


def throughput_engine(n: int, *, bulk: bool, duty: bool = False) -> tuple[float, int, int]:
    """(events/s, events, actions) for the engine. ``bulk``: submit_nowait in bursts.
    ``duty``: rosters and correlation on (:func:`duty_rules`)."""
    ws = warnings(n)
    result: list[float] = []
    rules = duty_rules() if duty else RULES

    async def main() -> None:
        async with (
            Engine.open(SyntheticDirectory(duty), rules, wall_clock=wall_clock_from_trio) as engine,
            trio.open_nursery() as nursery,
        ):
            counter = [0]
            nursery.start_soon(_drain, engine.actions(), counter)
            fb = feedback_for(ws)
            t0 = time.perf_counter()
            if bulk:
                for i in range(0, len(ws), 512):  # as read from a stream, 512 at a time
                    await engine.submit_many(ws[i : i + 512])
            else:
                for w in ws:
                    await engine.submit(w)
            await trio.sleep(121)  # the call repeat at 60 s, duty officer + chat at 120 s
            if bulk:
                for i in range(0, len(fb), 512):
                    await engine.feedback_many(fb[i : i + 512])
            else:
                for e in fb:
                    await engine.feedback(e)
            while engine.stats.feedback < len(fb):
                await trio.sleep(1)
            elapsed = time.perf_counter() - t0
            st = engine.stats
            events = st.intake + st.feedback + st.ticks
            assert engine.pending == 0, engine.pending
            result.extend([events / elapsed, events, st.actions])
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return result[0], int(result[1]), int(result[2])


def feedback_for(ws: list[WarningInstruction]) -> list[FeedbackEvent]:
    fb: list[FeedbackEvent] = []
    for w in ws:
        fb.append(Acknowledged(warning_id=w.id, officer="duty"))
        fb.append(CallResult(warning_id=w.id, result="answered"))
        fb.append(Outcome(warning_id=w.id, outcome="dissuaded"))
    return fb


def throughput_peer(n: int) -> tuple[float, int, int]:
    ws = warnings(n)
    result: list[float] = []

    async def main() -> None:
        async with trio.open_nursery() as outer:
            counter = [0]
            async with trio.open_nursery() as nursery:
                peer = TaskPerWarning(SyntheticDirectory(), RULES, nursery)
                outer.start_soon(_drain, peer.out_recv, counter)
                fb = feedback_for(ws)
                t0 = time.perf_counter()
                for w in ws:
                    await peer.submit(w)
                await trio.sleep(121)
                for e in fb:
                    await peer.feedback(e)
            elapsed = time.perf_counter() - t0  # the nursery ends when every warning has ended
            result.extend([peer.events / elapsed, peer.events, counter[0]])
            outer.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return result[0], int(result[1]), int(result[2])


# --- 2. memory per pending warning (subprocess) ------------------------------------------------


def memory_child(which: str, n: int, duty: bool = False) -> dict[str, float]:
    """Runs in a fresh interpreter: tracemalloc from before the first submit until all n
    warnings are pending (first actions sent and consumed, deadlines in the heap).
    ``duty``: rosters and correlation on (the engine only)."""
    ws = warnings(n, hours=24)
    rules = duty_rules() if duty else RULES
    gc.collect()
    out: dict[str, float] = {}

    async def main() -> None:
        directory = SyntheticDirectory(duty)
        for w in ws[:100_000]:  # warm the directory cache outside the measurement
            directory.responders(w.target)
        async with trio.open_nursery() as nursery:
            counter = [0]
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            t0 = time.perf_counter()
            if which == "engine":
                engine = await nursery.start(_engine_task, directory, rules)
                nursery.start_soon(_drain, engine.actions(), counter)
                for i in range(0, n, 512):
                    await engine.submit_many(ws[i : i + 512])
                while engine.stats.intake < n or counter[0] < 2 * n:
                    await trio.sleep(0)
                assert engine.pending == n
                out["pending_deadlines"] = len(engine._live)
                out["heap_entries"] = len(engine._heap)
            else:
                peer = TaskPerWarning(directory, RULES, nursery)
                nursery.start_soon(_drain, peer.out_recv, counter)
                for w in ws:
                    await peer.submit(w)
                while peer.events < n or counter[0] < 2 * n:
                    await trio.sleep(0)
                out["pending_deadlines"] = n
            gc.collect()
            out["bytes"] = tracemalloc.get_traced_memory()[0] - before
            out["seconds"] = time.perf_counter() - t0
            out["actions_consumed"] = counter[0]
            tracemalloc.stop()
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return out


async def _engine_task(
    directory: Any, rules: EscalationRules = RULES, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    async with Engine.open(directory, rules, wall_clock=wall_clock_from_trio) as engine:
        task_status.started(engine)
        await trio.sleep_forever()


def memory(which: str, n: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "benchmarks.engine", "--memory-child", which, "--n", str(n)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=_root())
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- 3. latency ---------------------------------------------------------------------------------


def latency_engine(samples: int, *, load_per_ms: int) -> tuple[list[float], float]:
    """(seconds from submit to the first action of each warning, achieved warnings/s)."""
    out: list[float] = []
    rate: list[float] = []

    async def main() -> None:
        async with Engine.open(SyntheticDirectory(), RULES) as engine:
            rate.append(await _latency(engine.submit, engine.actions(), samples, load_per_ms, out))

    trio.run(main)
    return out, rate[0]


def latency_peer(samples: int, *, load_per_ms: int) -> tuple[list[float], float]:
    out: list[float] = []
    rate: list[float] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            peer = TaskPerWarning(SyntheticDirectory(), RULES, nursery)
            rate.append(await _latency(peer.submit, peer.out_recv, samples, load_per_ms, out))
            nursery.cancel_scope.cancel()

    trio.run(main)
    return out, rate[0]


async def _latency(
    submit: Callable[[WarningInstruction], Any],
    actions: trio.MemoryReceiveChannel[Action],
    samples: int,
    load_per_ms: int,
    out: list[float],
) -> float:
    """Idle (load_per_ms = 0): one warning at a time. Loaded: every millisecond a burst of
    ``load_per_ms`` warnings, each one's latency measured. Returns the warnings/s actually
    submitted: a design that cannot keep up falls behind the offered rate."""
    now = datetime.now(UTC)
    sent: dict[str, int] = {}
    clock = time.perf_counter_ns
    done = trio.Event()

    async def consume() -> None:
        async for a in actions:
            t = sent.pop(a.warning_id, None)
            if t is not None:
                out.append((clock() - t) / 1e9)
                if len(out) >= samples:
                    done.set()
                    return

    def make(i: int) -> WarningInstruction:
        return WarningInstruction(
            id=f"l{i}",
            kind="fraud",
            level=1,
            target=ResidentTarget(i),
            issued_at=now,
            expires=now + timedelta(hours=2),
        )

    t_start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        i = 0
        if load_per_ms == 0:
            while not done.is_set():
                w = make(i)
                sent[w.id] = clock()
                await submit(w)
                i += 1
                while w.id in sent and not done.is_set():
                    await trio.sleep(0)
        else:
            start = trio.current_time()
            tick = 0
            while not done.is_set():
                for _ in range(load_per_ms):
                    w = make(i)
                    sent[w.id] = clock()
                    await submit(w)
                    i += 1
                tick += 1
                await trio.sleep_until(start + tick / 1000)
        nursery.cancel_scope.cancel()
    return i / (time.perf_counter() - t_start)


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


# --- report ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--n", type=int, default=0, help="pending warnings for the memory test")
    ap.add_argument("--memory-child", choices=["engine", "peer"], help=argparse.SUPPRESS)
    ap.add_argument("--markdown", action="store_true", help="also print a markdown table")
    args = ap.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.n)))
        return

    quick = args.quick
    n_tp = 5_000 if quick else 50_000
    repeats = 1 if quick else 5
    n_mem = args.n or (20_000 if quick else 1_000_000)
    n_lat = 1_000 if quick else 20_000

    console = Console(width=200)
    console.print(
        f"[bold]engine benchmark[/] python {sys.version.split()[0]}, trio {trio.__version__}"
    )
    rows: list[tuple[str, str, str, str, str]] = []

    def tp(fn: Callable[[], tuple[float, int, int]]) -> tuple[float, float, float, int]:
        runs = [fn() for _ in range(repeats)]
        rates = [r[0] for r in runs]
        return statistics.median(rates), min(rates), max(rates), runs[0][1]

    eng_b = tp(lambda: throughput_engine(n_tp, bulk=True))
    eng_a = tp(lambda: throughput_engine(n_tp, bulk=False))
    peer = tp(lambda: throughput_peer(n_tp))
    desc = f"{n_tp:,} warnings, {eng_b[3]:,} events, median of {repeats}"
    rows.append(
        (
            "events/s, submit_many / feedback_many (512 per call)",
            f"{eng_b[0] / 1e3:,.0f} k/s ({eng_b[1] / 1e3:,.0f}-{eng_b[2] / 1e3:,.0f})",
            f"{peer[0] / 1e3:,.0f} k/s ({peer[1] / 1e3:,.0f}-{peer[2] / 1e3:,.0f})",
            f"{eng_b[0] / peer[0]:.1f}x",
            desc,
        )
    )
    rows.append(
        (
            "events/s, await submit() / feedback() per event",
            f"{eng_a[0] / 1e3:,.0f} k/s ({eng_a[1] / 1e3:,.0f}-{eng_a[2] / 1e3:,.0f})",
            f"{peer[0] / 1e3:,.0f} k/s",
            f"{eng_a[0] / peer[0]:.1f}x",
            "peer always awaits per event",
        )
    )
    console.print("throughput done")

    me, mp = memory("engine", n_mem), memory("peer", n_mem)
    rows.append(
        (
            "memory per pending warning (tracemalloc)",
            f"{me['bytes'] / n_mem:,.0f} B",
            f"{mp['bytes'] / n_mem:,.0f} B",
            f"{mp['bytes'] / me['bytes']:.1f}x less",
            f"{n_mem:,} pending warnings, {int(me['pending_deadlines']):,} live deadlines; "
            f"setup {me['seconds']:.0f} s vs {mp['seconds']:.0f} s (under tracemalloc)",
        )
    )
    console.print("memory done")

    for label, load_per_ms in (
        ("idle, one in flight", 0),
        ("5 k warnings/s offered", 5),
        ("20 k warnings/s offered", 20),
    ):
        le, rate_e = latency_engine(n_lat, load_per_ms=load_per_ms)
        lp, rate_p = latency_peer(n_lat, load_per_ms=load_per_ms)
        saturated = percentile(lp, 0.5) > 0.1
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            e, p = percentile(le, q), percentile(lp, q)
            rows.append(
                (
                    f"intake -> first action {name}, {label}",
                    f"{e * 1e6:,.0f} µs",
                    f"{p * 1e6:,.0f} µs" + (" (saturated)" if saturated else ""),
                    "n/a" if saturated else f"{p / e:.1f}x",
                    f"{len(le):,} samples, real clock; achieved {rate_e / 1e3:.1f} k/s "
                    f"vs peer {rate_p / 1e3:.1f} k/s",
                )
            )
    console.print("latency done")

    headers = ("measure", "engine (heap + one loop)", "peer (task per warning)", "ratio", "notes")
    title = "warn-dispatch engine vs one-task-per-warning peer"
    show(make_table(title, headers, rows), args.markdown, console)


if __name__ == "__main__":
    main()
