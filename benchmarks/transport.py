"""Benchmark the transports; both Redis clients through the same transport code, same run.

    python3 -m benchmarks.transport            # ~1 minute
    python3 -m benchmarks.transport --quick    # smaller counts, a smoke test

Redis (a real redis-server on a free 127.0.0.1 port, persistence off), for coredis and for
redis-py's sync client on worker threads, each through ``engine.transport.redis_streams``:

1. wake-up latency: a producer XADDs one entry while the source is blocked in
   ``receive_batch`` (XREADGROUP BLOCK); time from just before the XADD to the batch returned.
2. consume + XACK throughput: a pre-filled stream drained in batches of 512, each acked.
3. outbox throughput: ``RedisOutbox.send`` of 1,000-action batches (pipelined XADD).
4. cancel cleanliness: a blocked read is cancelled, the next read is already blocked when the
   next entry arrives; is it delivered (to the next read, within 1 s)? Once for the bare client
   (the naive way: a blocking XREADGROUP cancelled as is) and once for the transport.

Plus the in-process (memory channel) and JSON-lines (through an OS pipe) throughput.
Medians of ``--repeats`` runs; the ratio column is coredis over redis-py (above 1: coredis is
faster / lower is better for latency, so there it is redis-py over coredis).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta

import trio
from rich.console import Console
from rich.table import Table

from benchmarks.tables import make_table, show
from benchmarks.timing import fmt_seconds
from engine.model import Action
from engine.testing import RedisServer
from engine.transport import (
    JsonLinesDeadLetters,
    JsonLinesIntake,
    JsonLinesOutbox,
    RedisOutbox,
    RedisStreamSource,
    SourceOptions,
    open_memory_intake,
)
from engine.transport.redis_clients import ClientName, open_client

CLIENTS: list[ClientName] = ["coredis", "redis-py"]
_NOW = datetime.now(UTC)
RAW = (
    b'{"id":"w-1","kind":"fraud","level":2,"target":{"type":"resident","id":1234},'
    + f'"issued_at":"{_NOW.isoformat()}",'.encode()
    + f'"expires":"{(_NOW + timedelta(days=1)).isoformat()}"}}'.encode()
)
"""A warning issued when the run starts, valid for a day: the same size on any date."""
_ns = iter(range(10**9))


def _action(i: int) -> Action:
    return Action(
        key=f"w-{i}/0/o1/1",
        warning_id=f"w-{i}",
        action="notify_officer",
        to=f"officer:{i % 1400}",
        kind="fraud",
        level=2,
        step=1,
    )


def _opts(consumer: str = "bench") -> SourceOptions:
    return SourceOptions(consumer=consumer, block_s=5.0, claim_every_s=3600.0)


async def wakeup_latency(client: ClientName, port: int, samples: int) -> list[float]:
    stream = f"lat{next(_ns)}"
    out: list[float] = []
    async with (
        open_client(client, "127.0.0.1", port) as c,
        open_client(client, "127.0.0.1", port) as producer,
    ):
        src = await RedisStreamSource.open(c, stream, "dead", _opts())
        for _ in range(samples):
            sent = 0.0

            async def produce() -> None:
                nonlocal sent
                await trio.sleep(0.002)  # let the reader block first
                sent = time.perf_counter()
                await producer.add_many(stream, [{"raw": RAW}], None)

            async with trio.open_nursery() as n:
                n.start_soon(produce)
                batch = await src.receive_batch()
                out.append(time.perf_counter() - sent)
            await src.ack([d.id for d in batch])
    return out


async def consume_throughput(client: ClientName, port: int, count: int) -> float:
    stream = f"thr{next(_ns)}"
    async with open_client(client, "127.0.0.1", port) as c:
        for i in range(0, count, 1000):
            await c.add_many(stream, [{"raw": RAW}] * min(1000, count - i), None)
        src = await RedisStreamSource.open(c, stream, "dead", _opts())
        got = 0
        t0 = time.perf_counter()
        while got < count:
            batch = await src.receive_batch()
            await src.ack([d.id for d in batch])
            got += len(batch)
        return count / (time.perf_counter() - t0)


async def outbox_throughput(client: ClientName, port: int, count: int) -> float:
    actions = [_action(i) for i in range(1000)]
    async with open_client(client, "127.0.0.1", port) as c:
        outbox = RedisOutbox(c, f"out{next(_ns)}")
        t0 = time.perf_counter()
        for _ in range(count // 1000):
            await outbox.send(actions)
        return (count // 1000) * 1000 / (time.perf_counter() - t0)


async def _bare_cancel(client: ClientName, port: int) -> bool:
    """The naive way: XREADGROUP BLOCK 2000 on the bare client, cancelled as is."""
    stream = f"cb{next(_ns)}"
    if client == "redis-py":
        import redis

        r = redis.Redis(host="127.0.0.1", port=port)
        r.xgroup_create(stream, "g", "0", mkstream=True)

        def read(block: int) -> object:
            return r.xreadgroup("g", "c", {stream: ">"}, 10, block)

        with trio.move_on_after(0.05):
            await trio.to_thread.run_sync(read, 2000, abandon_on_cancel=True)
        got: list[object] = []

        async def nxt() -> None:
            got.append(await trio.to_thread.run_sync(read, 1000, abandon_on_cancel=True))

        async with trio.open_nursery() as n:
            n.start_soon(nxt)
            await trio.sleep(0.02)
            await trio.to_thread.run_sync(lambda: r.xadd(stream, {"raw": RAW}))
        await trio.sleep(2.0)  # let the abandoned thread finish before closing its pool
        r.close()
        return bool(got and got[0])
    import coredis

    async with coredis.Redis(host="127.0.0.1", port=port) as cr:
        await cr.xgroup_create(stream, "g", identifier="0", mkstream=True)
        with trio.move_on_after(0.05):
            await cr.xreadgroup("g", "c", {stream: ">"}, count=10, block=2000)
        res: list[object] = []

        async def nxt2() -> None:
            res.append(await cr.xreadgroup("g", "c", {stream: ">"}, count=10, block=1000))

        async with trio.open_nursery() as n:
            n.start_soon(nxt2)
            await trio.sleep(0.02)
            await cr.xadd(stream, {"raw": RAW})
        return bool(res and res[0])


async def _transport_cancel(client: ClientName, port: int) -> bool:
    stream = f"ct{next(_ns)}"
    async with open_client(client, "127.0.0.1", port) as c:
        src = await RedisStreamSource.open(c, stream, "dead", _opts())
        with trio.move_on_after(0.13):
            await src.receive_batch()
        got: list[object] = []

        async def nxt() -> None:
            with trio.move_on_after(1.0):
                got.extend(await src.receive_batch())

        async with trio.open_nursery() as n:
            n.start_soon(nxt)
            await trio.sleep(0.03)
            await c.add_many(stream, [{"raw": RAW}], None)
        return bool(got)


def _med(xs: list[float]) -> float:
    return statistics.median(xs)


def _p99(xs: list[float]) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * 0.99))]


async def memory_throughput(count: int) -> float:
    send, intake = open_memory_intake(capacity=4096)

    async def produce() -> None:
        async with send:  # a library producer: send_nowait, waiting only when full
            for _ in range(count):
                try:
                    send.send_nowait(RAW)
                except trio.WouldBlock:
                    await send.send(RAW)

    got = 0
    t0 = time.perf_counter()
    async with trio.open_nursery() as n:
        n.start_soon(produce)
        while got < count:
            batch = await intake.receive_batch()
            await intake.ack([d.id for d in batch])
            got += len(batch)
    return count / (time.perf_counter() - t0)


async def jsonl_intake_throughput(count: int) -> float:
    r, w = os.pipe()
    data = (RAW + b"\n") * count

    def write() -> None:
        with open(w, "wb") as f:
            f.write(data)

    threading.Thread(target=write, daemon=True).start()
    intake = await JsonLinesIntake.open(f"/proc/self/fd/{r}", dead_letters=JsonLinesDeadLetters())
    os.close(r)
    got = 0
    t0 = time.perf_counter()
    try:
        while True:
            batch = await intake.receive_batch()
            await intake.ack([d.id for d in batch])
            got += len(batch)
    except trio.EndOfChannel:
        pass
    elapsed = time.perf_counter() - t0
    await intake.aclose()
    assert got == count, (got, count)
    return count / elapsed


async def jsonl_outbox_throughput(count: int) -> float:
    r, w = os.pipe()

    def drain() -> None:
        with open(r, "rb") as f:
            while f.read(1 << 16):
                pass

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    outbox = JsonLinesOutbox(f"/proc/self/fd/{w}")
    os.close(w)
    actions = [_action(i) for i in range(1000)]
    t0 = time.perf_counter()
    for _ in range(count // 1000):
        await outbox.send(actions)
    elapsed = time.perf_counter() - t0
    await outbox.aclose()
    t.join(timeout=5)
    return (count // 1000) * 1000 / elapsed


def _rate(x: float) -> str:
    return f"{x / 1000:,.0f} k/s"


async def run(
    port: int, repeats: int, count: int, samples: int, console: Console, markdown: bool
) -> None:
    lat: dict[ClientName, list[float]] = {c: [] for c in CLIENTS}
    thr: dict[ClientName, list[float]] = {c: [] for c in CLIENTS}
    out: dict[ClientName, list[float]] = {c: [] for c in CLIENTS}
    bare: dict[ClientName, list[bool]] = {c: [] for c in CLIENTS}
    ours: dict[ClientName, list[bool]] = {c: [] for c in CLIENTS}
    for _ in range(repeats):  # interleave the clients so machine noise hits both alike
        for c in CLIENTS:
            lat[c] += await wakeup_latency(c, port, samples)
            thr[c].append(await consume_throughput(c, port, count))
            out[c].append(await outbox_throughput(c, port, count))
            ours[c].append(await _transport_cancel(c, port))
    for c in CLIENTS:
        bare[c].append(await _bare_cancel(c, port))

    rows: list[tuple[str, str, str, str]] = [
        (
            "XADD -> blocked receive_batch wakes (median / p99)",
            *(f"{fmt_seconds(_med(lat[c]))} / {fmt_seconds(_p99(lat[c]))}" for c in CLIENTS),
            f"{_med(lat['redis-py']) / _med(lat['coredis']):.2f}x",
        ),
        (
            "consume + XACK, batches of 512",
            *(_rate(_med(thr[c])) for c in CLIENTS),
            f"{_med(thr['coredis']) / _med(thr['redis-py']):.2f}x",
        ),
        (
            "outbox send, pipelined XADD, 1,000 per batch",
            *(_rate(_med(out[c])) for c in CLIENTS),
            f"{_med(out['coredis']) / _med(out['redis-py']):.2f}x",
        ),
        (
            "cancelled blocked read, bare client: next entry reaches the next read?",
            *("yes" if all(bare[c]) else "no: swallowed into the PEL" for c in CLIENTS),
            "",
        ),
        (
            "same, through the transport",
            *(f"yes, {sum(ours[c])}/{len(ours[c])}" for c in CLIENTS),
            "",
        ),
    ]  # type: ignore[list-item]
    headers = ("measurement", *CLIENTS, "coredis vs redis-py")
    show(make_table("Redis Streams transport (medians)", headers, rows), markdown, console)

    mem = [await memory_throughput(count) for _ in range(repeats)]
    jin = [await jsonl_intake_throughput(count) for _ in range(repeats)]
    jout = [await jsonl_outbox_throughput(count) for _ in range(repeats)]
    t2 = Table(title="In-process and JSON lines (medians)")
    t2.add_column("measurement")
    t2.add_column("throughput", justify="right")
    t2.add_row("memory channel: receive_batch + ack", _rate(_med(mem)))
    t2.add_row("JSON lines intake through an OS pipe (FdStream)", _rate(_med(jin)))
    t2.add_row("JSON lines outbox into an OS pipe (1000/batch)", _rate(_med(jout)))
    console.print(t2)
    if markdown:
        print("| transport | throughput |\n|---|---|")
        print(f"| memory channel: receive_batch + ack | {_rate(_med(mem))} |")
        print(f"| JSON lines intake through an OS pipe | {_rate(_med(jin))} |")
        print(f"| JSON lines outbox into an OS pipe, 1,000 per batch | {_rate(_med(jout))} |")
    console.print(
        f"[dim]{count:,} messages per throughput run, {samples} latency samples per repeat, "
        f"{repeats} repeats; payload {len(RAW)} B[/dim]"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--markdown", action="store_true", help="also print markdown tables")
    args = ap.parse_args()
    count, samples, repeats = (5_000, 50, 2) if args.quick else (50_000, 200, args.repeats)
    console = Console()
    with RedisServer() as srv:
        trio.run(run, srv.port, repeats, count, samples, console, args.markdown)


if __name__ == "__main__":
    main()
