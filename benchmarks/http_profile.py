"""Where a ``serve --http`` child spends its time under ``POST /api/v1/warnings`` load.

The same child and load generator as benchmarks/http.py (a 200,000-resident county, the load
in its own process), sampled by py-spy (``pip install py-spy``) for the length of one run.
Prints the functions with the most samples on the stack (inclusive) and at the top (self),
and the share of a core the child used. Only the thread holding the GIL is sampled
(``--gil``).

    python3 -m benchmarks.http_profile [--rate 500] [--seconds 10] [--lines] [--tree PATH]
        [--collapsed F]
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

from benchmarks.http import CONNECTIONS, RESIDENTS, Child, cpu_seconds, ms, paced_lines, pct
from engine.access.tokens import TokenStore
from engine.registry.synthetic import CountySpec, generate_county
from engine.testing.redis_server import free_port

# Areas, most specific first: a sample counts for the first area any of its frames names.
AREAS = (
    ("engine: journal, fsync", ("engine/journal/",)),
    ("engine: audit log", ("engine/access/audit.py",)),
    ("engine: outbox + observers", ("run_outbox", "outbox_task", "observe_actions")),
    ("engine: loop (intake, resolve, machines)", ("engine/scheduler.py",)),
    ("api: submit handler (parse, principal)", ("engine/web/",)),
    ("starlette", ("starlette/",)),
    ("hypercorn + h11", ("hypercorn/", "h11/")),
    ("trio threads (to_thread)", ("_thread_cache.py", "trio/_threads.py")),
    ("trio sockets", ("trio/_socket.py", "trio/_highlevel_socket.py")),
    ("trio core (scheduling, epoll)", ("trio/_core/",)),
)


def area(stack: str) -> str:
    for name, marks in AREAS:
        if any(m in stack for m in marks):
            return name
    return "other"


def summarize(collapsed: Path, top: int) -> None:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
        areas[area(stack)] += n
    print(f"{total} samples")
    for title, counter in (("by area", areas), ("inclusive", inclusive), ("self", own)):
        print(f"\n-- {title} --")
        for f, n in counter.most_common(top if title != "by area" else None):
            print(f"{100 * n / total:5.1f}%  {f}")


async def run(
    rate: float,
    seconds: float,
    tree: Path | None,
    collapsed: Path | None,
    top: int,
    lines: bool,
    idle: bool,
) -> None:
    with tempfile.TemporaryDirectory(prefix="wd-http-prof-") as tmp:
        home = Path(tmp)
        county = home / "county"
        generate_county(
            CountySpec(residents=RESIDENTS, contacts=150_000, officers=1400, seed=7)
        ).save(county)
        token = TokenStore.load(home / "tokens.json").create("centre", None, "benchmark")
        port = free_port()
        child = Child(county, home, port, tree)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(child.read_actions)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                    with trio.fail_after(120):
                        while True:
                            try:
                                if (await client.get("/readyz")).status_code == 200:
                                    break
                            except httpx.TransportError:
                                pass
                            await trio.sleep(0.2)
                load = [
                    *(sys.executable, "-m", "benchmarks.http_load", "--port", str(port)),
                    *("--token", token, "--residents", str(RESIDENTS)),
                    *("--connections", str(CONNECTIONS)),
                ]
                warm = [*load, "--rate", "200", "--seconds", "1", "--tag", "warm"]
                await trio.run_process(warm, capture_stdout=True)
                raw = home / "profile.txt"
                spy = subprocess.Popen(
                    [
                        *("py-spy", "record", "--pid", str(child.proc.pid), "--rate", "250"),
                        *(("--idle",) if idle else ("--gil",)),
                        *("--duration", str(int(seconds)), "--format", "raw", "-o", str(raw)),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                cpu0, t0 = cpu_seconds(child.proc.pid), time.perf_counter()
                if lines:
                    lat = await paced_lines(child, rate, seconds, "p", RESIDENTS)
                    what, errors = "JSON lines, to first notice", 0
                else:
                    tag = ["--rate", str(rate), "--seconds", str(seconds), "--tag", "p"]
                    done = await trio.run_process([*load, *tag], capture_stdout=True)
                    got = json.loads(done.stdout)
                    lat, what, errors = got["lat"], "HTTP, to 202", got["errors"]
                cpu = cpu_seconds(child.proc.pid) - cpu0
                wall = time.perf_counter() - t0
                await trio.to_thread.run_sync(spy.wait)
                nursery.cancel_scope.cancel()
            print(
                f"{what}, {rate:.0f}/s for {seconds:.0f} s: p50 {ms(pct(lat, 0.5))}, "
                f"p99 {ms(pct(lat, 0.99))}, errors {errors}; serve child used {cpu:.1f} s CPU "
                f"in {wall:.1f} s ({100 * cpu / wall:.0f}% of one core)"
            )
            summarize(raw, top)
            if collapsed is not None:
                collapsed.write_text(raw.read_text())
        finally:
            child.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--tree", type=Path, help="another checkout of the engine to serve")
    parser.add_argument("--collapsed", type=Path, help="also keep the collapsed stacks here")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--idle", action="store_true", help="sample every thread, waiting too (not only --gil)"
    )
    parser.add_argument(
        "--lines", action="store_true", help="the same rate through JSON lines (the engine alone)"
    )
    args = parser.parse_args()
    trio.run(
        run, args.rate, args.seconds, args.tree, args.collapsed, args.top, args.lines, args.idle
    )


if __name__ == "__main__":
    main()
