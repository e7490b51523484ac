"""The HTTP API against JSON lines, the same engine process, the same run.

One ``serve --http`` child reads warnings from stdin (JSON lines) and from
``POST /api/v1/warnings`` at once, and writes every action to stdout. So both doors feed one
engine, and the peer (JSON lines) is measured in the same minutes:

- submit latency at 500 and 2,000 requests/s (open loop: each request is sent at its
  scheduled time, latency counts from then): the time to ``202`` (the warning journaled);
- intake -> first action (the officer's notice on stdout), through either door;
- ``/metrics`` scrape time with 1,400 officers and 50,000 active warnings, against
  ``/healthz`` (the floor of one request on this server).

Not measured yet: the console's time from submit to the board (the console does not exist).

    python3 -m benchmarks.http [--quick] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

from benchmarks.tables import make_table, show
from engine.access.tokens import TokenStore
from engine.registry.synthetic import CountySpec, generate_county
from engine.testing.messages import warning_bytes
from engine.testing.redis_server import free_port

RESIDENTS = 200_000
MAX_CONNECTIONS = 64


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


warning = warning_bytes


class Child:
    """The serve process, with a reader of its stdout recording when each notice appeared."""

    def __init__(self, county: Path, home: Path, port: int) -> None:
        env = {**os.environ, "WARN_DISPATCH_HOME": str(home)}
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "engine.cli", "serve", "--county", str(county)),
                *("--journal", str(home / "journal"), "--http", f"127.0.0.1:{port}"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(home / "serve.err").open("wb"),
            env=env,
        )
        self.noticed: dict[str, float] = {}

    async def read_actions(self) -> None:
        assert self.proc.stdout is not None
        out = self.proc.stdout

        def lines() -> list[bytes]:
            line = out.readline()
            return [line] if line else []

        while True:
            got = await trio.to_thread.run_sync(lines, abandon_on_cancel=True)
            if not got:
                return
            at = time.perf_counter()
            action = json.loads(got[0])
            if action["key"].endswith("/o0/1"):
                self.noticed.setdefault(action["warning_id"], at)

    def write(self, raw: bytes) -> float:
        assert self.proc.stdin is not None
        at = time.perf_counter()
        self.proc.stdin.write(raw + b"\n")
        self.proc.stdin.flush()
        return at

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def paced_http(
    client: httpx.AsyncClient, child: Child, rate: float, seconds: float, tag: str, residents: int
) -> tuple[list[float], list[float], int]:
    """Open-loop POSTs at ``rate``/s; (submit latencies, submit->notice latencies, errors)."""
    sent: dict[str, float] = {}
    lat: list[float] = []
    errors = 0
    n = int(rate * seconds)
    t0 = time.perf_counter()
    # At most as many requests in flight as connections: httpcore's pool assigns queued
    # requests in O(queued x connections), which at 2,000/s made the client the bottleneck.
    in_flight = trio.Semaphore(MAX_CONNECTIONS)

    async def one(i: int, at: float) -> None:
        nonlocal errors
        wid = f"{tag}-{i}"
        sent[wid] = at
        try:
            async with in_flight:  # latency still counts from the scheduled time
                r = await client.post("/api/v1/warnings", content=warning(wid, i * 7 % residents))
        except httpx.TransportError:  # a timeout under overload: counted, not fatal
            errors += 1
            return
        if r.status_code == 202:
            lat.append(time.perf_counter() - at)
        else:
            errors += 1

    async with trio.open_nursery() as nursery:
        for i in range(n):
            at = t0 + i / rate
            await trio.sleep_until(trio.current_time() + max(0.0, at - time.perf_counter()))
            nursery.start_soon(one, i, at)
    with trio.move_on_after(30):
        while any(w not in child.noticed for w in sent):
            await trio.sleep(0.05)
    notice = [child.noticed[w] - at for w, at in sent.items() if w in child.noticed]
    return lat or [float("nan")], notice or [float("nan")], errors


async def paced_lines(
    child: Child, rate: float, seconds: float, tag: str, residents: int
) -> list[float]:
    sent: dict[str, float] = {}
    n = int(rate * seconds)
    t0 = time.perf_counter()
    for i in range(n):
        at = t0 + i / rate
        await trio.sleep(max(0.0, at - time.perf_counter()))
        wid = f"{tag}-{i}"
        sent[wid] = child.write(warning(wid, (i * 7 + 3) % residents))
    with trio.move_on_after(30):
        while any(w not in child.noticed for w in sent):
            await trio.sleep(0.05)
    return [child.noticed[w] - at for w, at in sent.items() if w in child.noticed]


async def scrape(client: httpx.AsyncClient, path: str, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        r = await client.get(path)
        assert r.status_code == 200
        out.append(time.perf_counter() - t)
    return out


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


async def run(quick: bool, markdown: bool) -> None:
    seconds = 3.0 if quick else 5.0
    active = 5_000 if quick else 50_000
    with tempfile.TemporaryDirectory(prefix="wd-http-bench-") as tmp:
        home = Path(tmp)
        county = home / "county"
        generate_county(
            CountySpec(residents=RESIDENTS, contacts=150_000, officers=1400, seed=7)
        ).save(county)
        token = TokenStore.load(home / "tokens.json").create("centre", None, "benchmark")
        port = free_port()
        child = Child(county, home, port)
        try:
            await measure(child, token, port, seconds, active, markdown)
        finally:
            child.stop()


async def measure(
    child: Child, token: str, port: int, seconds: float, active: int, markdown: bool
) -> None:
    """Both tables, against a started child."""
    limits = httpx.Limits(
        max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
    )
    async with (
        trio.open_nursery() as nursery,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"authorization": f"Bearer {token}"},
            timeout=30,
            limits=limits,
        ) as client,
    ):
        nursery.start_soon(child.read_actions)
        with trio.fail_after(120):
            while True:
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await trio.sleep(0.2)
        await paced_http(client, child, 200, 1, "warm", RESIDENTS)  # warm caches, pools
        rows = []
        for rate in (500, 2000):
            lines = await paced_lines(child, rate, seconds, f"l{rate}", RESIDENTS)
            lat, notice, errors = await paced_http(
                client, child, rate, seconds, f"h{rate}", RESIDENTS
            )
            rows.append(
                (
                    f"{rate}/s",
                    f"{ms(pct(lat, 0.5))} / {ms(pct(lat, 0.99))}",
                    f"{ms(pct(notice, 0.5))} / {ms(pct(notice, 0.99))}",
                    f"{ms(pct(lines, 0.5))} / {ms(pct(lines, 0.99))}",
                    f"{pct(notice, 0.5) / pct(lines, 0.5):.1f}x",
                    str(errors),
                )
            )
        show(
            make_table(
                f"Submit over HTTP vs JSON lines, one engine, {seconds:.0f} s per rate "
                f"(commit {commit()})",
                [
                    "offered",
                    "HTTP: to 202 p50 / p99",
                    "HTTP: to first notice p50 / p99",
                    "JSON lines: to first notice p50 / p99",
                    "HTTP / lines (p50)",
                    "errors",
                ],
                rows,
            ),
            markdown,
        )
        # 50,000 active warnings, fed fast through stdin, then scrape.
        # In a thread: a full stdin pipe must not stop the loop that drains stdout.
        bulk = b"\n".join(warning(f"m-{i}", (i * 13) % RESIDENTS) for i in range(active))
        await trio.to_thread.run_sync(child.write, bulk)
        with trio.fail_after(300):
            while True:
                body = (await client.get("/readyz")).json()
                if body.get("active", 0) >= active:
                    break
                await trio.sleep(0.5)
        metrics = await scrape(client, "/metrics", 11)
        health = await scrape(client, "/healthz", 11)
        m, h = statistics.median(metrics), statistics.median(health)
        show(
            make_table(
                f"/metrics with 1,400 officers and {body['active']:,} active warnings "
                f"(commit {commit()})",
                ["request", "median", "max", "vs /healthz"],
                [
                    ("/metrics", ms(m), ms(max(metrics)), f"{m / h:.0f}x"),
                    ("/healthz (peer: one request)", ms(h), ms(max(health)), "1x"),
                ],
            ),
            markdown,
        )
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per rate, 5,000 active")
    parser.add_argument("--markdown", action="store_true", help="Markdown tables")
    args = parser.parse_args()
    trio.run(run, args.quick, args.markdown)


if __name__ == "__main__":
    main()
