"""The HTTP API against JSON lines, the same engine process, the same run.

One ``serve --http`` child reads warnings from stdin (JSON lines) and from
``POST /api/v1/warnings`` at once, and writes every action to stdout. So both doors feed one
engine, and the peer (JSON lines) is measured in the same minutes:

- submit latency at 500 and 2,000 requests/s (open loop: each request is due at its
  scheduled time, latency counts from then): the time to ``202`` (the warning journaled).
  The requests come from a separate process (benchmarks/http_load.py: raw HTTP/1.1 over 16
  keep-alive connections, ~0.3 ms of CPU a request), not from this one, so the client's CPU
  is neither this process's nor httpx's;
- ``GET /healthz`` at the same rate: the floor of a request on this server;
- intake -> first action (the officer's notice on stdout), through either door;
- the serve child's CPU per warning through either door, and the load generator's;
- ``/metrics`` scrape time with 1,400 officers and 50,000 active warnings, against
  ``/healthz`` (the floor of one request on this server).

``--tree LABEL=PATH`` (repeatable) serves another checkout of the engine (a patch's A/B):
one child per tree, measured alternately in the same run. ``--repeats N`` runs every rate N
times and reports the median of each figure. Where a child spends its time:
benchmarks/http_profile.py. Not measured yet: the console's time from submit to the board.

    python3 -m benchmarks.http [--quick] [--markdown] [--rates 500,2000] [--repeats N]
        [--tree LABEL=PATH ...] [--no-metrics]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import httpx
import trio

from benchmarks.tables import make_table, show
from engine.access.tokens import TokenStore
from engine.registry.synthetic import CountySpec, generate_county
from engine.testing.messages import warning_bytes
from engine.testing.redis_server import free_port

RESIDENTS = 200_000
CONNECTIONS = 16  # keep-alive connections of the load generator


def commit(tree: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=tree,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


warning = warning_bytes


class Child:
    """The serve process, with a reader of its stdout recording when each notice appeared."""

    def __init__(self, county: Path, home: Path, port: int, tree: Path | None = None) -> None:
        env = {**os.environ, "WARN_DISPATCH_HOME": str(home)}
        if tree is not None:  # another checkout of the engine (an A/B of a patch)
            env["PYTHONPATH"] = str(tree)
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "engine.cli", "serve", "--county", str(county)),
                *("--journal", str(home / "journal"), "--http", f"127.0.0.1:{port}"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(home / "serve.err").open("wb"),
            env=env,
            cwd=tree,
        )
        self.noticed: dict[str, float] = {}

    async def read_actions(self) -> None:
        """Stdout in chunks, without a thread hop per line: at 2,000 warnings/s the child
        writes tens of thousands of actions a second and this process must stay cheap."""
        assert self.proc.stdout is not None
        out = trio.lowlevel.FdStream(os.dup(self.proc.stdout.fileno()))
        rest = b""
        async with out:
            while chunk := await out.receive_some(1 << 20):
                at = time.perf_counter()
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    if b'/o0/1"' in line:  # the officer's notice (msgspec: no spaces)
                        action = json.loads(line)
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def settle(pid: int, limit_s: float = 60.0) -> None:
    """Until the child uses under a fifth of a core for half a second (or ``limit_s``)."""
    with trio.move_on_after(limit_s):
        while True:
            before = cpu_seconds(pid)
            await trio.sleep(0.5)
            if cpu_seconds(pid) - before < 0.1:
                return


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def paced_http(
    s: Server, rate: float, seconds: float, tag: str, residents: int, get: str | None = None
) -> tuple[list[float], list[float], int]:
    """Open-loop POSTs at ``rate``/s from a separate load process (benchmarks/http_load.py);
    (submit latencies, submit->notice latencies, errors). With ``get``, GETs of that path
    instead (no notices)."""
    args = [
        *(sys.executable, "-m", "benchmarks.http_load", "--port", str(s.port)),
        *("--token", s.token),
        *("--rate", str(rate), "--seconds", str(seconds), "--tag", tag),
        *("--residents", str(residents), "--connections", str(CONNECTIONS)),
        *(("--get", get) if get is not None else ()),
    ]
    done = await trio.run_process(args, capture_stdout=True)
    got = json.loads(done.stdout)
    s.client_cpu.append(got["cpu"] / (rate * seconds))
    sent: dict[str, float] = got["sent"] if get is None else {}
    if got["late"] > 0.005:
        print(f"note: the load generator fell {got['late'] * 1000:.0f} ms behind", file=sys.stderr)
    noticed = s.child.noticed
    with trio.move_on_after(30):
        while any(w not in noticed for w in sent):
            await trio.sleep(0.05)
    notice = [noticed[w] - at for w, at in sent.items() if w in noticed]
    return got["lat"] or [float("nan")], notice or [float("nan")], got["errors"]


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


class Server(NamedTuple):
    """One serve child under test: its label in the table, its port and token."""

    label: str
    child: Child
    port: int
    token: str
    client: httpx.AsyncClient
    client_cpu: list[float]  # CPU seconds per request of each load process run


async def run(
    quick: bool,
    markdown: bool,
    rates: list[int],
    trees: list[tuple[str, str]],
    metrics: bool,
    repeats: int,
) -> None:
    seconds = 3.0 if quick else 5.0
    active = 5_000 if quick else 50_000
    with tempfile.TemporaryDirectory(prefix="wd-http-bench-") as tmp:
        county = Path(tmp) / "county"
        generate_county(
            CountySpec(residents=RESIDENTS, contacts=150_000, officers=1400, seed=7)
        ).save(county)
        async with trio.open_nursery() as nursery, contextlib.AsyncExitStack() as stack:
            servers = []
            for i, (label, tree) in enumerate(trees or [(commit(), None)]):
                home = Path(tmp) / f"home{i}"
                home.mkdir()
                token = TokenStore.load(home / "tokens.json").create("centre", None, "benchmark")
                port = free_port()
                child = Child(county, home, port, Path(tree) if tree else None)
                stack.callback(child.stop)
                client = await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=f"http://127.0.0.1:{port}",
                        headers={"authorization": f"Bearer {token}"},
                        timeout=30,
                    )
                )
                servers.append(Server(label, child, port, token, client, []))
                nursery.start_soon(child.read_actions)
            for s in servers:
                await ready(s.client)
                await paced_http(s, 200, 1, "warm", RESIDENTS)  # warm caches, pools
            await submit_table(servers, rates, seconds, repeats, markdown)
            if metrics:
                await metrics_table(servers[0], active, markdown)
            nursery.cancel_scope.cancel()


async def ready(client: httpx.AsyncClient) -> None:
    with trio.fail_after(120):
        while True:
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.2)


async def submit_table(
    servers: list[Server], rates: list[int], seconds: float, repeats: int, markdown: bool
) -> None:
    """Per repeat, per rate, per server (alternating, so an A/B shares the same minutes):
    ``GET /healthz``, JSON lines, then HTTP submits, each on its own and each once the child
    is idle again (an overloaded run leaves a backlog). Each cell is the median over the
    repeats of that run's figure."""
    runs: dict[tuple[int, str], list[tuple[float, ...]]] = {}
    for rep in range(repeats):
        for rate in rates:
            for s in servers:
                n, pid, tag = int(rate * seconds), s.child.proc.pid, f"{rate}r{rep}"
                await settle(pid)
                floor, _, more = await paced_http(s, rate, seconds, "f", RESIDENTS, "/healthz")
                await settle(pid)
                cpu0 = cpu_seconds(pid)  # each phase's CPU counts its tail, until idle again
                lines = await paced_lines(s.child, rate, seconds, f"l{tag}", RESIDENTS)
                await settle(pid)
                cpu1 = cpu_seconds(pid)
                lat, notice, errors = await paced_http(s, rate, seconds, f"h{tag}", RESIDENTS)
                client = s.client_cpu[-1]
                await settle(pid)
                cpu2 = cpu_seconds(pid)
                runs.setdefault((rate, s.label), []).append(
                    (
                        *(pct(lat, 0.5), pct(lat, 0.99), pct(floor, 0.5), pct(floor, 0.99)),
                        *(pct(notice, 0.5), pct(notice, 0.99), pct(lines, 0.5), pct(lines, 0.99)),
                        *((cpu2 - cpu1) / n, (cpu1 - cpu0) / n, client, errors + more),
                    )
                )
    rows = []
    for (rate, label), figures in runs.items():
        m = [statistics.median(column) for column in zip(*figures, strict=True)]
        rows.append(
            (
                f"{rate}/s",
                *([label] if len(servers) > 1 else []),
                f"{ms(m[0])} / {ms(m[1])}",
                f"{ms(m[2])} / {ms(m[3])}",
                f"{ms(m[4])} / {ms(m[5])}",
                f"{ms(m[6])} / {ms(m[7])}",
                f"{m[4] / m[6]:.1f}x",
                f"{m[8] * 1000:.2f} / {m[9] * 1000:.2f} ms",
                f"{m[10] * 1000:.2f} ms",
                f"{sum(f[11] for f in figures):.0f}",
            )
        )
    label = servers[0].label if len(servers) == 1 else "see the engine column"
    show(
        make_table(
            f"Submit over HTTP vs JSON lines, one engine, {seconds:.0f} s per rate, "
            f"median of {repeats} run{'s' if repeats > 1 else ''} (commit {label}; load from a "
            "separate process)",
            [
                "offered",
                *(["engine"] if len(servers) > 1 else []),
                "HTTP: to 202 p50 / p99",
                "GET /healthz p50 / p99",
                "HTTP: to first notice p50 / p99",
                "JSON lines: to first notice p50 / p99",
                "HTTP / lines (p50)",
                "server CPU per warning: HTTP / lines",
                "load generator CPU per request",
                "errors (all runs)",
            ],
            rows,
            labels=2 if len(servers) > 1 else 1,
        ),
        markdown,
    )


async def metrics_table(s: Server, active: int, markdown: bool) -> None:
    """``/metrics`` with ``active`` more warnings, fed fast through stdin, against /healthz."""
    # In a thread: a full stdin pipe must not stop the loop that drains stdout.
    bulk = b"\n".join(warning(f"m-{i}", (i * 13) % RESIDENTS) for i in range(active))
    await trio.to_thread.run_sync(s.child.write, bulk)
    with trio.fail_after(300):
        while True:
            body = (await s.client.get("/readyz")).json()
            if body.get("active", 0) >= active:
                break
            await trio.sleep(0.5)
    metrics = await scrape(s.client, "/metrics", 11)
    health = await scrape(s.client, "/healthz", 11)
    m, h = statistics.median(metrics), statistics.median(health)
    show(
        make_table(
            f"/metrics with 1,400 officers and {body['active']:,} active warnings "
            f"(commit {s.label})",
            ["request", "median", "max", "vs /healthz"],
            [
                ("/metrics", ms(m), ms(max(metrics)), f"{m / h:.0f}x"),
                ("/healthz (peer: one request)", ms(h), ms(max(health)), "1x"),
            ],
        ),
        markdown,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per rate, 5,000 active")
    parser.add_argument("--markdown", action="store_true", help="Markdown tables")
    parser.add_argument(
        "--rates", default="500,2000", help="requests/s, comma-separated (default 500,2000)"
    )
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="[LABEL=]PATH",
        help="serve this checkout of the engine (repeat for an A/B in the same run)",
    )
    parser.add_argument("--no-metrics", action="store_true", help="skip the /metrics table")
    parser.add_argument("--repeats", type=int, default=1, help="runs per rate (medians)")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    trees = [tuple(t.split("=", 1)) if "=" in t else (t, t) for t in args.tree]
    trio.run(run, args.quick, args.markdown, rates, trees, not args.no_metrics, args.repeats)


if __name__ == "__main__":
    main()
