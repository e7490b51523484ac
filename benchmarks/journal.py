"""Journal throughput and append-to-durable latency, per fsync policy and concurrency.

    python3 -m benchmarks.journal [--duration 0.6] [--repeats 3] [--markdown]

Each run starts C appender tasks that append 200-byte records in a loop for ``duration``
seconds; latency is from calling append to its return (durable under the policy). Peers in the
same run, same harness: (a) naive: write(2) + fsync(2) per record off the trio thread, no
grouping; (b) SQLite in WAL mode with synchronous=FULL, one INSERT per commit, one connection
(SQLite has one writer). Throughput is the median over repeats; p50/p99 are medians of the
per-run percentiles. Ratios are our throughput over the peer's at the same concurrency.
"""

from __future__ import annotations

import argparse
import math
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from benchmarks.tables import make_table, show
from benchmarks.timing import fmt_seconds
from engine.journal import FsyncPolicy, Journal
from engine.journal.framing import frame

RECORD = b"r" * 200
CONCURRENCY = (1, 16, 256)
Append = Callable[[bytes], Awaitable[None]]


@asynccontextmanager
async def ours(folder: Path, policy: FsyncPolicy) -> AsyncIterator[Append]:
    async with Journal.open(folder, fsync=policy) as j:
        yield j.append


@asynccontextmanager
async def naive(folder: Path) -> AsyncIterator[Append]:
    fd = os.open(folder / "naive.wal", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    async def append(payload: bytes) -> None:
        os.write(fd, frame(payload))
        await trio.to_thread.run_sync(os.fsync, fd)

    try:
        yield append
    finally:
        os.close(fd)


@asynccontextmanager
async def sqlite(folder: Path) -> AsyncIterator[Append]:
    db = sqlite3.connect(folder / "peer.db", check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE log (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    lock = trio.Lock()

    def insert(payload: bytes) -> None:
        db.execute("BEGIN")
        db.execute("INSERT INTO log (payload) VALUES (?)", (payload,))
        db.execute("COMMIT")

    async def append(payload: bytes) -> None:
        async with lock:
            await trio.to_thread.run_sync(insert, payload)

    try:
        yield append
    finally:
        db.close()


IMPLS: dict[str, Callable[[Path], object]] = {
    "journal always": lambda d: ours(d, FsyncPolicy.always()),
    "journal interval 2 ms": lambda d: ours(d, FsyncPolicy.interval(2)),
    "journal interval 10 ms": lambda d: ours(d, FsyncPolicy.interval(10)),
    "journal none": lambda d: ours(d, FsyncPolicy.none()),
    "naive write+fsync": naive,
    "SQLite WAL FULL": sqlite,
}


async def one_run(impl: str, conc: int, duration: float) -> tuple[float, float, float]:
    """(records/s, p50 latency, p99 latency) of one run."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("JOURNAL_BENCH_DIR")) as tmp:
        async with IMPLS[impl](Path(tmp)) as append:  # type: ignore[attr-defined]
            lat: list[float] = []
            clock = time.perf_counter
            stop_at = clock() + duration

            async def worker() -> None:
                while clock() < stop_at:
                    t0 = clock()
                    await append(RECORD)
                    lat.append(clock() - t0)

            t_start = clock()
            async with trio.open_nursery() as nursery:
                for _ in range(conc):
                    nursery.start_soon(worker)
            elapsed = clock() - t_start
    lat.sort()
    n = len(lat)
    return n / elapsed, lat[(n - 1) // 2], lat[min(n - 1, math.ceil(0.99 * n) - 1)]


async def measure_all(duration: float, repeats: int) -> dict[tuple[str, int], tuple[float, ...]]:
    results: dict[tuple[str, int], tuple[float, ...]] = {}
    for conc in CONCURRENCY:
        runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in IMPLS}
        for _ in range(repeats):  # interleave so machine noise hits every implementation
            for impl in IMPLS:
                runs[impl].append(await one_run(impl, conc, duration))
        for impl, rs in runs.items():
            results[impl, conc] = tuple(statistics.median(col) for col in zip(*rs, strict=True))
    return results


def rows(results: dict[tuple[str, int], tuple[float, ...]]) -> list[list[str]]:
    out = []
    for conc in CONCURRENCY:
        naive_tp = results["naive write+fsync", conc][0]
        sqlite_tp = results["SQLite WAL FULL", conc][0]
        for impl in IMPLS:
            tp, p50, p99 = results[impl, conc]
            out.append(
                [
                    impl,
                    str(conc),
                    f"{tp:,.0f}",
                    fmt_seconds(p50),
                    fmt_seconds(p99),
                    f"{tp / naive_tp:.2g}x",
                    f"{tp / sqlite_tp:.2g}x",
                ]
            )
    return out


HEAD = ["implementation", "appenders", "records/s", "p50", "p99", "vs naive", "vs SQLite"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=0.6, help="seconds per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    results = trio.run(measure_all, args.duration, args.repeats)
    title = f"journal, {len(RECORD)}-byte records (medians of {args.repeats} runs)"
    show(make_table(title, HEAD, rows(results)), args.markdown)


if __name__ == "__main__":
    main()
