"""Intake end to end: throughput and intake-to-first-action latency, per transport and journal.

    python3 -m benchmarks.intake [--warnings 20000] [--repeats 3] [--rate 1000] [--markdown]

Every row runs the service path of ``warn-dispatch serve`` (``engine.service``): the source's
``receive_batch`` -> decode + validate -> ``submit_many`` -> ``engine.durable()`` (journal
write and fsync under the policy) -> ack, and ``engine.actions()`` -> sink -> ``mark_sent``.

- Throughput: the source is pre-filled with ``--warnings`` valid JSON warnings; time from start
  until the sink has handed over the first action of every warning and every delivery is acked.
  Median of ``--repeats`` runs, each with a fresh journal (and fresh streams).
- Latency: a paced producer offers ``--rate`` warnings/s (2,000 samples); per warning, from
  just before the producer hands it over (channel send, or ``XADD`` for Redis) to the moment the
  sink's ``send`` of its first action has returned (for Redis: ``XADD`` to ``wd:outbox`` done).
- Baseline and peer, same run: in-process without a journal (what durability costs), and a
  naive path that makes each message durable on its own (batch of 1: a write and an fsync per
  warning, then its ack), which is what acking per message without group commit costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio

from benchmarks.engine import SyntheticDirectory
from benchmarks.tables import make_table, show
from benchmarks.timing import fmt_seconds
from engine.journal import FsyncPolicy, Journal
from engine.model import Action
from engine.rules.escalation import load_escalation
from engine.scheduler import Engine
from engine.service import ServiceStats, run_intake, run_outbox
from engine.testing import RedisServer
from engine.transport import (
    SourceOptions,
    StreamNames,
    open_memory_intake,
    open_redis_transport,
)
from engine.transport.base import IntakeSource, OutboxSink

RULES = load_escalation()


@dataclass(frozen=True)
class Config:
    name: str
    policy: FsyncPolicy | None  # None: no journal
    redis: bool = False
    batch: int = 512


CONFIGS = (
    Config("in-process, no journal (baseline)", None),
    Config("in-process, journal fsync=none", FsyncPolicy.none()),
    Config("in-process, journal fsync=interval:5", FsyncPolicy.interval(5)),
    Config("in-process, journal fsync=always", FsyncPolicy.always()),
    Config("naive peer: fsync + ack per message", FsyncPolicy.always(), batch=1),
    Config("Redis Streams, journal fsync=always", FsyncPolicy.always(), redis=True),
)


NOW = datetime.now(UTC)
"""Warnings are issued a minute before the run starts and live a day: valid on any date."""


def warning_json(run: str, i: int) -> bytes:
    return json.dumps(
        {
            "id": f"{run}-{i}",
            "kind": "fraud",
            "level": 1,
            "target": {"type": "resident", "id": i % 100_000},
            "issued_at": (NOW - timedelta(minutes=1)).isoformat(),
            "expires": (NOW + timedelta(days=1)).isoformat(),
        }
    ).encode()


class TimingSink:
    """Wraps a sink: records when each warning's first action has been handed over."""

    def __init__(self, inner: OutboxSink | None) -> None:
        self.inner = inner
        self.name = "timing"
        self.first: dict[str, float] = {}
        self.all_seen = trio.Event()
        self.expect = 0

    async def send(self, actions: Sequence[Action]) -> None:
        if self.inner is not None:
            await self.inner.send(actions)
        else:
            await trio.lowlevel.checkpoint()
        now = time.perf_counter()
        first = self.first
        for a in actions:
            if a.warning_id not in first:
                first[a.warning_id] = now
        if len(first) >= self.expect:
            self.all_seen.set()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def pipeline(
    cfg: Config, folder: Path, redis: RedisServer | None, run: str
) -> AsyncIterator[tuple[IntakeSource, TimingSink, object, ServiceStats]]:
    """Engine (+ journal) + source + timing sink, with the service tasks running. Yields the
    source, the sink, a producer handle (memory channel or redis-py client) and the stats."""
    stats = ServiceStats()
    opened = Journal.open(folder, fsync=cfg.policy) if cfg.policy else _none()
    async with (
        opened as journal,
        Engine.open(SyntheticDirectory(), RULES, journal=journal) as engine,
        trio.open_nursery() as nursery,
    ):
        if cfg.redis:
            assert redis is not None
            names = StreamNames(
                intake=f"{run}:in", feedback=f"{run}:fb", outbox=f"{run}:out", dead=f"{run}:d"
            )
            opts = SourceOptions(consumer="bench", batch_size=cfg.batch, block_s=0.5)
            async with (
                open_redis_transport(redis.host, redis.port, names=names, options=opts) as t,
                trio.open_nursery() as tasks,  # ends before the client closes
            ):
                sink = TimingSink(t.outbox)
                tasks.start_soon(run_intake, engine, t.intake, stats)
                tasks.start_soon(run_outbox, engine, sink, stats)
                yield t.intake, sink, (redis.client(), names.intake), stats
                tasks.cancel_scope.cancel()
        else:
            send, source = open_memory_intake(200_000, batch_size=cfg.batch)
            sink = TimingSink(None)
            nursery.start_soon(run_intake, engine, source, stats)
            nursery.start_soon(run_outbox, engine, sink, stats)
            yield source, sink, send, stats
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def _none() -> AsyncIterator[None]:
    yield None


async def throughput(cfg: Config, n: int, redis: RedisServer | None, run: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        raws = [warning_json(run, i) for i in range(n)]
        if cfg.redis:
            assert redis is not None
            r = redis.client()
            for i in range(0, n, 1000):
                pipe = r.pipeline(transaction=False)
                for raw in raws[i : i + 1000]:
                    pipe.xadd(f"{run}:in", {"raw": raw})
                pipe.execute()
        async with pipeline(cfg, Path(tmp) / "j", redis, run) as (_, sink, producer, stats):
            sink.expect = n
            t0 = time.perf_counter()
            if not cfg.redis:
                for raw in raws:
                    producer.send_nowait(raw)  # type: ignore[attr-defined]
            with trio.fail_after(300):
                await sink.all_seen.wait()
                while stats.warnings < n:
                    await trio.sleep(0.001)
            return n / (time.perf_counter() - t0)


async def latency(
    cfg: Config, n: int, rate: float, redis: RedisServer | None, run: str
) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with pipeline(cfg, Path(tmp) / "j", redis, run) as (_, sink, producer, _s):
            sink.expect = n
            pushed: dict[str, float] = {}
            start = trio.current_time()
            for i in range(n):
                await trio.sleep_until(start + i / rate)
                raw = warning_json(run, i)
                pushed[f"{run}-{i}"] = time.perf_counter()
                if cfg.redis:
                    client, stream = producer  # type: ignore[misc]
                    await trio.to_thread.run_sync(client.xadd, stream, {"raw": raw})
                else:
                    await producer.send(raw)  # type: ignore[attr-defined]
            with trio.fail_after(60):
                await sink.all_seen.wait()
            return [sink.first[w] - t for w, t in pushed.items()]


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


async def measure_all(n: int, repeats: int, rate: float, samples: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    with RedisServer() as redis:
        for k, cfg in enumerate(CONFIGS):
            count = n if cfg.batch > 1 else max(500, n // 20)
            rates = [await throughput(cfg, count, redis, f"t{k}r{r}") for r in range(repeats)]
            lat = await latency(cfg, samples, rate, redis, f"l{k}")
            out.append(
                {
                    "name": cfg.name,
                    "rate": statistics.median(rates),
                    "spread": (min(rates), max(rates)),
                    "count": count,
                    "p50": pct(lat, 0.50),
                    "p99": pct(lat, 0.99),
                }
            )
    return out


HEAD = ["path", "warnings/s (median)", "min-max", "vs baseline", "p50", "p99"]


def rows(results: list[dict[str, object]]) -> list[list[str]]:
    base = float(results[0]["rate"])  # type: ignore[arg-type]
    body = []
    for r in results:
        lo, hi = r["spread"]  # type: ignore[misc]
        body.append(
            [
                str(r["name"]),
                f"{float(r['rate']):,.0f}",  # type: ignore[arg-type]
                f"{lo:,.0f}-{hi:,.0f}",
                f"{float(r['rate']) / base:.2f}x",  # type: ignore[arg-type]
                fmt_seconds(float(r["p50"])),  # type: ignore[arg-type]
                fmt_seconds(float(r["p99"])),  # type: ignore[arg-type]
            ]
        )
    return body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warnings", type=int, default=20_000, help="per throughput run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rate", type=float, default=1000.0, help="offered warnings/s (latency)")
    ap.add_argument("--samples", type=int, default=2000, help="latency samples per row")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    results = trio.run(measure_all, args.warnings, args.repeats, args.rate, args.samples)
    title = f"intake end to end ({args.repeats} runs; latency at {args.rate:g}/s)"
    show(make_table(title, HEAD, rows(results)), args.markdown)


if __name__ == "__main__":
    main()
