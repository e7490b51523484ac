"""Submit to the board: how long until 100 consoles show a warning that the centre POSTed.

One ``serve --http`` child (a generated county of 200,000 residents, tokens made before it
starts). Per offered rate, three phases in the same minutes, each once the child is idle:

- submit alone: open-loop ``POST /api/v1/warnings`` (centre token) from this process, raw
  HTTP/1.1 over a few keep-alive connections; the time to ``202`` (journaled);
- the same with 1 console watcher on ``GET /api/v1/events`` (the floor of the live feed);
- the same with 100 watchers: 80 centre tokens (every warning) and 20 scoped ones, 10 station
  chiefs and 10 grid officers (their slice; half the warnings target the watched officers'
  residents so that the slices are not empty).

The watchers live in a separate process (benchmarks/board_watch.py: raw trio sockets, ids
found by a regular expression, no JSON decoding), so their CPU is neither this process's nor
the server's. A warning's latency to the board is the time its first ``changed`` event reached
a watcher minus the time its POST was due (open loop: a request that waits for a free
connection still counts from its due time), both ``time.time()`` on this machine. Figures are
over every (watcher, warning) pair the watcher may see on arrival (centre: all; chief: the
station's; officer: the officer's grids); a pair never seen counts as missing. The server
coalesces each watcher's updates: at most one ``changed`` event per interval
(``EVENT_INTERVAL_S`` in engine/web/api.py), so a warning waits up to that long behind the
previous event even on an idle server.

Every read from a socket or a child process is under a deadline.

    python3 -m benchmarks.board [--quick] [--markdown] [--rates 5,20,100] [--seconds S]
        [--watchers 100] [--profile FILE]

``--profile FILE`` samples the server with py-spy (``pip install py-spy``) during the last
rate's many-watcher phase and prints where its loop spends the time (on stderr).
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
from typing import Any, NamedTuple

import trio

from benchmarks.tables import make_table, show
from engine.access.tokens import TokenStore
from engine.registry.synthetic import CountySpec, generate_county
from engine.testing.messages import warning_bytes
from engine.testing.redis_server import free_port
from engine.web.api import EVENT_INTERVAL_S

RESIDENTS = 200_000
CONNECTIONS = 8  # keep-alive connections of the submitter
CHIEFS = 10  # scoped watchers: station chiefs of stations 01..10 ...
OFFICERS = 10  # ... and one grid officer in each of those stations
TIMEOUT_S = 30.0  # any one HTTP exchange
STOP_S = 60.0  # the watcher process's answer once told to stop


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux: /proc/<pid>/stat utime + stime)."""
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
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(x: float) -> str:
    return "-" if x != x else f"{x * 1000:.0f} ms" if x >= 0.1 else f"{x * 1000:.1f} ms"


# --- the county and who may see what ---------------------------------------------------


class Scope(NamedTuple):
    """One watcher's token and what it may see of a warning about a resident."""

    label: str  # centre-N, chief-<station>, officer-<key>
    token: str
    role: str
    subject: str | None


class County(NamedTuple):
    path: Path
    grid_key: list[str]  # per resident
    station_key: list[str]  # per resident
    grid_officer: list[str | None]  # per resident
    officer_grids: dict[str, frozenset[str]]
    watched: list[tuple[str, str, list[int]]]  # (officer key, station key, its residents)


def make_county(tmp: Path) -> County:
    reg = generate_county(CountySpec(residents=RESIDENTS, contacts=150_000, officers=1400, seed=7))
    path = tmp / "county"
    reg.save(path)
    j = reg.jurisdiction
    grids = [u.key for u in j.units["grid"]]
    stations = [u.key for u in j.units["station"]]
    grid_of = reg.grid[:RESIDENTS].tolist()
    officer_of = reg.officer[:RESIDENTS].tolist()
    keys = [o.key for o in reg.officers]
    residents_of: dict[int, list[int]] = {}
    for rid, o in enumerate(officer_of):
        if o >= 0:
            residents_of.setdefault(o, []).append(rid)
    watched = []
    for station in stations[:CHIEFS]:
        best = max(
            (i for i, o in enumerate(reg.officers) if o.station == station and o.grids),
            key=lambda i: len(residents_of.get(i, ())),
        )
        watched.append((keys[best], station, residents_of[best]))
    return County(
        path=path,
        grid_key=[grids[g] for g in grid_of],
        station_key=[stations[int(j.grid_station[g])] for g in grid_of],
        grid_officer=[keys[o] if o >= 0 else None for o in officer_of],
        officer_grids={o.key: frozenset(o.grids) for o in reg.officers},
        watched=watched[:OFFICERS],
    )


def targets(county: County, n: int) -> list[int]:
    """Warning ``i``'s resident: even ``i`` a resident of a watched officer (round robin),
    odd ``i`` spread over the county."""
    out = []
    for i in range(n):
        if i % 2 == 0:
            _, _, rids = county.watched[(i // 2) % len(county.watched)]
            out.append(rids[(i * 7919) % len(rids)])
        else:
            out.append((i * 7919 + 13) % RESIDENTS)
    return out


def may_see(county: County, scope: Scope, rid: int) -> bool:
    """engine.access.policy.warning_visible on arrival, for a warning about resident ``rid``
    (an officer may later see more warnings once notified; those are not counted)."""
    if scope.role == "centre":
        return True
    if scope.role == "chief":
        return county.station_key[rid] == scope.subject
    return (
        county.grid_officer[rid] == scope.subject
        or county.grid_key[rid] in county.officer_grids[scope.subject or ""]
    )


def make_tokens(home: Path, county: County, watchers: int) -> tuple[str, list[Scope]]:
    """The submitter's centre token and the watchers' scopes: 80 % centre, the rest scoped
    (chiefs and officers alternately); with one watcher, that one is a centre token."""
    store = TokenStore.load(home / "tokens.json")
    submitter = store.create("centre", None, "benchmark submitter")
    scoped = watchers - (watchers * 4) // 5
    scopes = [
        Scope(f"centre-{i}", store.create("centre", None, "bench"), "centre", None)
        for i in range(watchers - scoped)
    ]
    for i in range(scoped):
        officer, station, _ = county.watched[(i // 2) % len(county.watched)]
        role, subject = ("chief", station) if i % 2 == 0 else ("officer", officer)
        token = store.create(role, subject, "bench")  # type: ignore[arg-type]
        scopes.append(Scope(f"{role}-{subject}", token, role, subject))
    return submitter, scopes


# --- the serve child --------------------------------------------------------------------


class Child:
    """The serve process. Its stdout (every action) goes to /dev/null: nothing here reads it,
    and a full pipe would stall it. Stdin stays open (an empty JSON-lines intake)."""

    def __init__(self, county: Path, home: Path, port: int) -> None:
        env = {**os.environ, "WARN_DISPATCH_HOME": str(home)}
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "engine.cli", "serve", "--county", str(county)),
                *("--journal", str(home / "journal"), "--http", f"127.0.0.1:{port}"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=(home / "serve.err").open("wb"),
            env=env,
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stdin is not None:
            self.proc.stdin.close()


# --- raw HTTP/1.1 -----------------------------------------------------------------------


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.closing = False

    async def exchange(self, raw: bytes) -> int:
        """Send ``raw``, read one response; its status (0 if the server closed)."""
        await self.stream.send_all(raw)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if not await self._more():
                return 0
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                self.closing = True
        total = end + 4 + length
        while len(self.buf) < total:
            if not await self._more():
                return 0
        del self.buf[:total]
        return status

    async def _more(self) -> bool:
        chunk = await self.stream.receive_some(65536)
        self.buf += chunk
        return bool(chunk)


async def get_status(port: int, path: str) -> int:
    with trio.fail_after(TIMEOUT_S):
        conn = Connection(await trio.open_tcp_stream("127.0.0.1", port))
        try:
            return await conn.exchange(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode())
        finally:
            await conn.stream.aclose()


async def ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    with trio.fail_after(180):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited with {proc.returncode}")
            try:
                if await get_status(port, "/readyz") == 200:
                    return
            except OSError:
                pass
            await trio.sleep(0.2)


async def submit(
    port: int, token: str, rate: float, seconds: float, tag: str, rids: list[int]
) -> tuple[dict[str, float], list[float], int]:
    """Open-loop POSTs: request ``i`` is due at ``start + i / rate``. (due time per warning id
    as ``time.time()``, latencies to 202, errors)."""
    n = int(rate * seconds)
    host = f"127.0.0.1:{port}"
    bodies = []
    for i in range(n):
        body = warning_bytes(f"{tag}-{i}", rids[i])
        head = (
            f"POST /api/v1/warnings HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}"
            f"\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        bodies.append(head.encode() + body)
    with trio.fail_after(TIMEOUT_S):
        conns = [
            Connection(await trio.open_tcp_stream("127.0.0.1", port)) for _ in range(CONNECTIONS)
        ]
    sent: dict[str, float] = {}
    lat: list[float] = []
    errors = 0
    send, receive = trio.open_memory_channel[tuple[int, float]](n + 1)

    async def worker(conn: Connection) -> None:
        nonlocal errors
        async for i, due in receive:
            status = 0
            with trio.move_on_after(TIMEOUT_S):
                try:
                    status = await conn.exchange(bodies[i])
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    status = 0
            if status == 202:
                lat.append(time.time() - due)
            else:
                errors += 1
            if status == 0 or conn.closing:
                await conn.stream.aclose()
                with trio.fail_after(TIMEOUT_S):
                    conn.stream = await trio.open_tcp_stream("127.0.0.1", port)
                conn.buf.clear()
                conn.closing = False

    start_trio = trio.current_time() + 0.05
    start_wall = time.time() + 0.05
    async with trio.open_nursery() as nursery:
        for c in conns:
            nursery.start_soon(worker, c)
        for i in range(n):
            await trio.sleep_until(start_trio + i / rate)
            sent[f"{tag}-{i}"] = start_wall + i / rate
            send.send_nowait((i, start_wall + i / rate))
        await send.aclose()
    for c in conns:
        await c.stream.aclose()
    return sent, lat, errors


# --- the watcher process ----------------------------------------------------------------


class Watchers:
    """benchmarks/board_watch.py with the first ``count`` scopes, recording ids of ``tag``."""

    def __init__(self, port: int, tokens_file: Path, count: int, tag: str) -> None:
        self.args = [
            *(sys.executable, "-m", "benchmarks.board_watch", "--port", str(port)),
            *("--tokens", str(tokens_file), "--count", str(count), "--prefix", f"{tag}-"),
        ]
        self.buf = b""

    async def start(self) -> None:
        self.proc = await trio.lowlevel.open_process(
            self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        with trio.fail_after(120):
            while b"\n" not in self.buf:
                chunk = await self.proc.stdout.receive_some(65536)
                if not chunk:
                    raise RuntimeError("the watcher process exited before it was ready")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        if not line.startswith(b"ready"):
            raise RuntimeError(f"the watcher process said {line!r}")

    async def stop(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with trio.fail_after(STOP_S):
            await self.proc.stdin.send_all(b"stop\n")
            while chunk := await self.proc.stdout.receive_some(1 << 20):
                self.buf += chunk
            await self.proc.wait()
        got: dict[str, Any] = json.loads(self.buf)
        return got

    def kill(self) -> None:
        if getattr(self, "proc", None) is not None and self.proc.returncode is None:
            self.proc.kill()


# --- one phase --------------------------------------------------------------------------


class Phase(NamedTuple):
    to_202: list[float]
    board: list[float]  # every (watcher, warning) pair the watcher may see and saw
    worst: list[float]  # per watcher: its largest latency
    scoped: list[float]  # the pairs of chief and officer watchers
    missing: int
    resets: int
    errors: int
    server_cpu: float  # CPU seconds of the serve child, from the first POST until idle again
    submit_cpu: float  # the same, until the last 202 (``window`` seconds)
    window: float
    idle_cpu: float  # its share of a core in the second before, watchers connected
    watcher_cpu: float
    bytes_out: int  # to all watchers


async def phase(
    child: Child,
    county: County,
    port: int,
    token: str,
    scopes: list[Scope],
    tokens_file: Path,
    watchers: int,
    rate: float,
    seconds: float,
    tag: str,
    profile: Path | None = None,
) -> Phase:
    pid = child.proc.pid
    n = int(rate * seconds)
    rids = targets(county, n)
    await settle(pid)
    w = Watchers(port, tokens_file, watchers, tag) if watchers else None
    spy = None
    try:
        if w is not None:
            await w.start()
            await settle(pid)
        idle = cpu_seconds(pid)
        await trio.sleep(1.0)
        cpu0 = cpu_seconds(pid)
        idle = cpu0 - idle
        spy = await start_profile(pid, seconds, profile) if profile is not None else None
        wall0 = time.monotonic()
        sent, to_202, errors = await submit(port, token, rate, seconds, tag, rids)
        submit_cpu = cpu_seconds(pid) - cpu0
        window = time.monotonic() - wall0
        await trio.sleep(1.0)  # at least four feed intervals after the last POST
        await settle(pid)
        server_cpu = cpu_seconds(pid) - cpu0
        got = await w.stop() if w is not None else {"watchers": [], "cpu": 0.0}
        if spy is not None:
            with trio.fail_after(60):
                await spy.wait()
    finally:
        if w is not None:
            w.kill()
        if spy is not None and spy.returncode is None:
            spy.kill()
    board: list[float] = []
    worst: list[float] = []
    scoped: list[float] = []
    missing = resets = bytes_out = 0
    for scope, result in zip(scopes, got["watchers"], strict=False):
        seen = result["seen"]
        mine = []
        for i in range(n):
            wid = f"{tag}-{i}"
            if not may_see(county, scope, rids[i]):
                continue
            if wid in seen:
                mine.append(seen[wid] - sent[wid])
            else:
                missing += 1
        board += mine
        if scope.role != "centre":
            scoped += mine
        if mine:
            worst.append(max(mine))
        resets += result["resets"]
        bytes_out += result["bytes"]
    return Phase(
        to_202,
        board,
        worst,
        scoped,
        missing,
        resets,
        errors,
        server_cpu,
        submit_cpu,
        window,
        idle,
        got["cpu"],
        bytes_out,
    )


# --- where the server spends its time (optional) ------------------------------------------

# Areas, most specific first: a sample counts for the first area any of its frames names.
AREAS = (
    ("api: events feed (rows, JSON, visibility)", ("stream (engine/web/api.py", "warning_view")),
    ("api: submit handler + audit", ("submit (engine/web/api.py", "engine/access/audit.py")),
    ("engine: journal, fsync", ("engine/journal/",)),
    ("engine: outbox + observers", ("run_outbox", "outbox_task", "observe_actions")),
    ("engine: loop (intake, resolve, machines)", ("engine/scheduler.py",)),
    ("starlette (incl. streaming response)", ("starlette/",)),
    ("hypercorn + h11", ("hypercorn/", "h11/")),
    ("trio threads (to_thread)", ("_thread_cache.py", "trio/_threads.py")),
    ("trio core (scheduling, epoll)", ("trio/_core/",)),
)


async def start_profile(pid: int, seconds: float, out: Path) -> trio.Process:
    """py-spy (``pip install py-spy``) on the serve child, the thread holding the GIL, for
    the submit window; collapsed stacks to ``out``."""
    return await trio.lowlevel.open_process(
        [
            *("py-spy", "record", "--pid", str(pid), "--rate", "200", "--gil", "--nonblocking"),
            *("--format", "raw", "--output", str(out), "--duration", str(int(seconds))),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarize(collapsed: Path, top: int = 12) -> None:
    """Areas, and the functions most often at the top of the stack (self), on stderr."""
    areas: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        name = next((a for a, marks in AREAS if any(m in stack for m in marks)), "other")
        areas[name] = areas.get(name, 0) + n
        leaf = stack.rsplit(";", 1)[-1]
        own[leaf] = own.get(leaf, 0) + n
    print(f"py-spy, GIL holder, {total} samples: by area", file=sys.stderr)
    for name, n in sorted(areas.items(), key=lambda kv: -kv[1]):
        print(f"  {n / max(total, 1):6.1%}  {name}", file=sys.stderr)
    print("self, top functions:", file=sys.stderr)
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {n / max(total, 1):6.1%}  {frame}", file=sys.stderr)


# --- the run ----------------------------------------------------------------------------


async def run(
    markdown: bool, rates: list[int], seconds: float, many: int, profile: Path | None
) -> None:
    label = commit()
    with tempfile.TemporaryDirectory(prefix="wd-board-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        county = make_county(Path(tmp))
        token, scopes = make_tokens(home, county, many)
        tokens_file = Path(tmp) / "watchers.json"
        tokens_file.write_text(json.dumps([[s.label, s.token] for s in scopes]))
        # The one-watcher phase uses the first scope: a centre token (sees every warning).
        port = free_port()
        child = Child(county.path, home, port)
        try:
            await ready(port, child.proc)
            warm = await submit(port, token, 50, 1, "warm", targets(county, 50))
            if warm[2]:
                raise RuntimeError(f"{warm[2]} warm-up submits failed; see {home}/serve.err")
            results: dict[tuple[int, int], Phase] = {}
            for rate in rates:
                for watchers in (0, 1, many):
                    tag = f"r{rate}w{watchers}"
                    spy = profile if watchers == many and rate == rates[-1] else None
                    results[rate, watchers] = await phase(
                        *(child, county, port, token, scopes, tokens_file, watchers),
                        *(rate, seconds, tag, spy),
                    )
                    p = results[rate, watchers]
                    print(
                        f"  {rate}/s, {watchers} watchers: to 202 p50 {ms(pct(p.to_202, 0.5))}, "
                        f"board p50 {ms(pct(p.board, 0.5))} p99 {ms(pct(p.board, 0.99))}, "
                        f"missing {p.missing}, server CPU {p.submit_cpu / p.window:.2f} cores "
                        f"(idle before {p.idle_cpu:.2f})",
                        file=sys.stderr,
                    )
        finally:
            child.stop()
    if profile is not None and profile.exists():
        summarize(profile)
    report(results, rates, seconds, many, label, markdown)


def report(
    results: dict[tuple[int, int], Phase],
    rates: list[int],
    seconds: float,
    many: int,
    label: str,
    markdown: bool,
) -> None:
    rows = []
    for rate in rates:
        alone, one, lots = results[rate, 0], results[rate, 1], results[rate, many]
        floor = statistics.median(one.board) if one.board else float("nan")
        loaded = statistics.median(lots.board) if lots.board else float("nan")
        rows.append(
            (
                f"{rate}/s",
                f"{ms(pct(alone.to_202, 0.5))} / {ms(pct(alone.to_202, 0.99))}",
                f"{ms(pct(lots.to_202, 0.5))} / {ms(pct(lots.to_202, 0.99))}",
                f"{ms(floor)} / {ms(pct(one.board, 0.99))}",
                f"{ms(loaded)} / {ms(pct(lots.board, 0.99))}",
                f"{loaded / floor:.2f}x",
                " / ".join(f"{p.submit_cpu / p.window:.2f}" for p in (alone, one, lots)),
                f"{sum(p.errors for p in (alone, one, lots))}",
            )
        )
    show(
        make_table(
            f"Submit to the board, one serve child, {seconds:g} s per rate and phase "
            f"(commit {label}; watchers in a separate process; the feed sends each watcher at "
            f"most one update per {EVENT_INTERVAL_S:g} s)",
            [
                "offered",
                "submit alone: to 202 p50 / p99",
                f"with {many} watchers: to 202 p50 / p99",
                "1 watcher: to board p50 / p99",
                f"{many} watchers: to board p50 / p99",
                f"{many} / 1 (p50)",
                f"server CPU until the last 202, cores: alone / 1 / {many} watchers",
                "submit errors",
            ],
            rows,
        ),
        markdown,
    )
    rows = []
    for rate in rates:
        p = results[rate, many]
        b = p.board
        rows.append(
            (
                f"{rate}/s",
                f"{len(b):,}",
                *(ms(pct(b, q)) for q in (0.5, 0.9, 0.99)),
                ms(max(b) if b else float("nan")),
                f"{ms(pct(p.worst, 0.5))} / {ms(max(p.worst) if p.worst else float('nan'))}",
                f"{ms(pct(p.scoped, 0.5))} / {ms(pct(p.scoped, 0.99))}",
                f"{p.missing} / {p.resets}",
                f"{p.submit_cpu * 1000 / (rate * seconds):.1f} / "
                f"{results[rate, 0].submit_cpu * 1000 / (rate * seconds):.1f} ms",
                f"{p.idle_cpu:.2f}",
                f"{p.bytes_out / seconds / 1e6:.1f} MB/s",
                f"{p.watcher_cpu / seconds:.2f}",
            )
        )
    show(
        make_table(
            f"{many} console watchers ({many - many // 5} centre, {many // 5} chiefs and "
            f"officers): every (watcher, warning) pair (commit {label})",
            [
                "offered",
                "pairs",
                "p50",
                "p90",
                "p99",
                "max",
                "per-watcher worst: median / max",
                "chiefs + officers p50 / p99",
                "missing / resets",
                f"server CPU per warning until the last 202: {many} watchers / submit alone",
                "server idle CPU, watchers connected, cores",
                "SSE bytes to watchers",
                "watcher process CPU, cores",
            ],
            rows,
        ),
        markdown,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 s per phase (default 10 s)")
    parser.add_argument("--markdown", action="store_true", help="Markdown tables")
    parser.add_argument("--rates", default="5,20,100", help="warnings/s, comma-separated")
    parser.add_argument("--seconds", type=float, help="seconds per rate and phase")
    parser.add_argument("--watchers", type=int, default=100, help="console watchers (default 100)")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="py-spy the server in the last rate's many-watcher phase (collapsed stacks)",
    )
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    seconds = args.seconds or (4.0 if args.quick else 10.0)
    trio.run(run, args.markdown, rates, seconds, args.watchers, args.profile)


if __name__ == "__main__":
    main()
