"""Benchmark a group of engines (``serve --group``) against the single engine, same run.

    python3 -m benchmarks.group            # about 14 minutes on 2 cores
    python3 -m benchmarks.group --quick    # smaller counts, 5 kills per TTL: a smoke test

Every engine is a real ``warn-dispatch serve`` child process against a real redis-server on a
free 127.0.0.1 port (a fresh one per setup), with a small synthetic county (``--county``) and a
shared ``WARN_DISPATCH_HOME``. Producers ``XADD wd:intake``; the measure of done is the first
officer notice (key ``.../o0/1``) of a warning in ``wd:outbox``. Times come from the stream ids
(the server's ms clock) on both ends, so the benchmark's own polling does not add to them.

1. Throughput and latency: the single-process engine (``serve --redis``, disk journal, fsync
   always: the peer) and groups of 1, 2 and 3 members (16 partitions, journal in Redis).
   Throughput: N warnings XADDed as fast as a pipeline goes, N / (last first notice - first
   XADD); median of the repeats. Latency: a separate paced run (``--rate`` warnings/s),
   per warning outbox entry ms - intake entry ms.
2. Failover: 3 members and a rules file whose grid officer must ack within 2 s. A warning is
   sent to a partition, and 0.5 s after its first notice the partition's owner is SIGKILLed
   (its next deadline falls due 1.5 s later, during the failover) and restarted at once under
   the same ``--member`` name. Measured: kill -> the partition owned again (a new fencing token,
   polled on the lease itself, as ``status_now`` reads it) and kill -> the overdue escalation
   in ``wd:outbox``. Peer: the same kills with the member restarted only after the survivors
   took over (half as many kills).
3. Durability settings on a group of 2: Redis AOF ``appendfsync everysec`` / ``always``, and a
   replica with ``--wait-replicas 0`` / ``1``.
4. CPU seconds per process (``/proc/<pid>/stat`` utime + stime, before and after each
   throughput run), against the run's wall time: which process is the bottleneck.

Every wait has a deadline; every child is killed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import redis
from rich.console import Console

from benchmarks.tables import make_table, show
from benchmarks.timing import fmt_seconds
from engine.group import Keys, partition_of
from engine.group.inspect import status_now
from engine.group.lease import Leases
from engine.registry.synthetic import CountySpec, generate_county
from engine.testing import RedisServer

P = 16
"""Partitions of every group (the CLI's default)."""
RESIDENTS = 20_000
"""A small county: a member starts (imports + county load) in about a second."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
OUTBOX = "wd:outbox"
INTAKE = "wd:intake"
FIRST = "/o0/1"
"""A warning's first officer notice ends its action key with this."""
OTHER = "other processes"
"""The machine's busy CPU not spent by Redis, the engines or the benchmark: noise."""
ESCALATION = "/o1/1"
"""The second rung of the officer ladder: with ``repeats = 0`` the first overdue action."""
ACK_WITHIN_S = 2
"""The grid officer's ack deadline in the failover rules (the shipped rules say 120 s)."""
KILL_AFTER_S = 0.5
"""The owner is killed this long after a warning's first notice, so its deadline falls due
``ACK_WITHIN_S - KILL_AFTER_S`` after the kill, while the partition has no owner."""

NOW = datetime.now(UTC)


def warning_raw(wid: str, i: int) -> bytes:
    """A level-1 fraud warning on resident ``i``, issued a minute ago, live for a day."""
    return msgspec.json.encode(
        {
            "id": wid,
            "kind": "fraud",
            "level": 1,
            "target": {"type": "resident", "id": i % RESIDENTS},
            "issued_at": (NOW - timedelta(minutes=1)).isoformat(),
            "expires": (NOW + timedelta(days=1)).isoformat(),
        }
    )


def id_ms(entry_id: bytes) -> int:
    """The server's ms timestamp in a stream entry id."""
    return int(entry_id.split(b"-")[0])


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, ``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def self_cpu_s() -> float:
    """This process' CPU seconds (producer and outbox poller)."""
    t = os.times()
    return t.user + t.system


def wait_until(check: Callable[[], bool], what: str, timeout: float, every: float = 0.05) -> None:
    """Poll ``check`` until true; a deadline on every wait, naming what was awaited."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            last = exc
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what} (last error: {last!r})")


def pct(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1)."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


# --- children ----------------------------------------------------------------------------------


@dataclass
class Child:
    """One ``serve`` process and the file its stderr goes to."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Engines:
    """The ``serve`` children of one setup; their logs are kept (and scanned) after they end."""

    url: str
    county: Path
    home: Path
    logs: Path
    setup: str
    extra: Sequence[str] = ()
    children: dict[str, Child] = field(default_factory=dict)
    ended: list[Child] = field(default_factory=list)

    def _spawn(self, name: str, args: Sequence[str]) -> None:
        log = self.logs / f"{self.setup}-{name}.log"
        cmd = [sys.executable, "-m", "engine.cli", "serve", "--county", str(self.county), *args]
        env = {**os.environ, "WARN_DISPATCH_HOME": str(self.home)}
        with log.open("ab") as err:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env
            )
        self.children[name] = Child(name, proc, log)

    def single(self, journal: Path) -> None:
        """The single-process engine: disk journal, fsync always (the default)."""
        self._spawn("single", ["--redis", self.url, "--journal", str(journal), *self.extra])

    def member(self, name: str) -> None:
        """A group member under a stable name (a restart reuses it)."""
        args = ["--redis", self.url, "--group", "wd", "--member", name, "--partitions", str(P)]
        self._spawn(name, [*args, *self.extra])

    def kill(self, name: str) -> None:
        """SIGKILL, and reap it (bounded)."""
        child = self.children.pop(name)
        child.proc.kill()
        child.proc.wait(timeout=10)
        self.ended.append(child)

    def pids(self) -> dict[str, int]:
        return {n: c.proc.pid for n, c in self.children.items()}

    def check_alive(self) -> bool:
        """Fail fast (with its log) if a child exited on its own; True otherwise."""
        for c in self.children.values():
            if c.proc.poll() is not None:
                tail = c.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{c.name} exited with {c.proc.returncode}:\n{tail}")
        return True

    def stop_all(self) -> None:
        """SIGTERM (a clean leave), then SIGKILL after a grace period; always reaped."""
        for c in self.children.values():
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        for c in self.children.values():
            try:
                c.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait(timeout=10)
        self.ended.extend(self.children.values())
        self.children.clear()


@contextmanager
def engines(env: Env, setup: str, url: str, extra: Sequence[str] = ()) -> Iterator[Engines]:
    """Children of one setup, stopped on the way out whatever happened."""
    e = Engines(url, env.county, env.home, env.logs, setup, tuple(extra))
    env.all_engines.append(e)
    try:
        yield e
    finally:
        e.stop_all()


@dataclass
class Env:
    """What every setup shares: the county, the home folder, the logs."""

    tmp: Path
    county: Path
    home: Path
    logs: Path
    rules: Path
    all_engines: list[Engines] = field(default_factory=list)


# --- the outbox, read incrementally -------------------------------------------------------------


class Outbox:
    """Reads ``wd:outbox`` from where it left off; keeps, per warning, when each action key
    landed (entry ms)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.last = b"0-0"
        self.first: dict[str, int] = {}
        self.keys: dict[str, float] = {}
        self.track_all = False

    def poll(self) -> None:
        while True:
            page: list[tuple[bytes, dict[bytes, bytes]]] = self.client.xrange(  # type: ignore[assignment]
                OUTBOX, b"(" + self.last, "+", count=10_000
            )
            if not page:
                return
            for entry_id, fields in page:
                key = fields[b"key"].decode()
                ms = id_ms(entry_id)
                if key.endswith(FIRST):
                    self.first.setdefault(key.split("/", 1)[0], ms)
                if self.track_all:
                    self.keys.setdefault(key, ms)
            self.last = page[-1][0]
            if len(page) < 10_000:
                return

    def wait_first(self, wids: Sequence[str], timeout: float, e: Engines | None = None) -> None:
        missing = set(wids)

        def done() -> bool:
            if e is not None:
                e.check_alive()
            self.poll()
            missing.difference_update([w for w in list(missing) if w in self.first])
            return not missing

        wait_until(done, f"first notices of {len(wids)} warnings ({len(missing)} left)", timeout)


# --- one setup's measurements -------------------------------------------------------------------


@dataclass
class Run:
    """A throughput run: rate, wall, and CPU seconds per process over the run."""

    rate: float
    wall: float
    cpu: dict[str, float]


def throughput(
    client: redis.Redis, out: Outbox, e: Engines, servers: Mapping[str, int], tag: str, n: int
) -> Run:
    """N warnings XADDed in pipelined chunks of 1,000; until every first notice is out."""
    pids = {**servers, **e.pids()}
    before = {k: cpu_s(p) for k, p in pids.items()}
    me0 = self_cpu_s()
    busy0 = machine_busy_s()
    t0 = time.monotonic()
    wids = [f"{tag}-{i}" for i in range(n)]
    first_ms = 0
    for i in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for j in range(i, min(n, i + 1000)):
            pipe.xadd(INTAKE, {"raw": warning_raw(wids[j], j)})
        ids = pipe.execute()
        if i == 0:
            first_ms = id_ms(ids[0])
    out.wait_first(wids, timeout=max(120.0, n / 100), e=e)
    wall = time.monotonic() - t0
    after = {k: cpu_s(p) for k, p in pids.items()}
    cpu = {k: after[k] - before[k] for k in pids}
    cpu["benchmark (producer, poller)"] = self_cpu_s() - me0
    cpu[OTHER] = max(0.0, machine_busy_s() - busy0 - sum(cpu.values()))
    last_ms = max(out.first[w] for w in wids)
    return Run(n / max(0.001, (last_ms - first_ms) / 1000), wall, cpu)


def paced(
    client: redis.Redis, out: Outbox, e: Engines, tag: str, rate: float, seconds: float
) -> list[float]:
    """Warnings offered at ``rate``/s, one XADD each; intake -> first notice, in seconds."""
    n = int(rate * seconds)
    sent: dict[str, int] = {}
    start = time.monotonic()
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        wid = f"{tag}-{i}"
        sent[wid] = id_ms(client.xadd(INTAKE, {"raw": warning_raw(wid, i)}))  # type: ignore[arg-type]
    out.wait_first(list(sent), timeout=120.0, e=e)
    return [(out.first[w] - ms) / 1000 for w, ms in sent.items()]


def warm_up(client: redis.Redis, out: Outbox, e: Engines, tag: str) -> None:
    """A few warnings through every partition, so start-up is not in any measurement."""
    wids = [f"{tag}-{i}" for i in range(64)]
    pipe = client.pipeline(transaction=False)
    for i, w in enumerate(wids):
        pipe.xadd(INTAKE, {"raw": warning_raw(w, i)})
    pipe.execute()
    out.wait_first(wids, timeout=90.0, e=e)


def balanced(client: redis.Redis, members: Sequence[str]) -> bool:
    """Every partition owned, every member live and holding its share (within one)."""
    st = status_now(client, Keys(), P)
    owned = st.owned_by()
    counts = [len(owned.get(m, [])) for m in members]
    live = {m.name for m in st.members if m.heartbeat_ms > 0}
    return (
        all(p.lease.owner is not None for p in st.partitions)
        and sum(counts) == P
        and max(counts) - min(counts) <= 1
        and set(members) <= live
    )


def replica_online(primary: redis.Redis) -> bool:
    """The primary sees its replica online (initial sync done)."""
    replica = primary.info("replication").get("slave0")
    return isinstance(replica, dict) and replica.get("state") == "online"


@dataclass
class Measured:
    """One setup's results."""

    name: str
    procs: int
    runs: list[Run]
    latency: list[float]

    @property
    def rate(self) -> float:
        return statistics.median(r.rate for r in self.runs)

    def cpu(self) -> dict[str, float]:
        """Per process, the median over the runs."""
        return {k: statistics.median(r.cpu[k] for r in self.runs) for k in self.runs[0].cpu}

    @property
    def wall(self) -> float:
        return statistics.median(r.wall for r in self.runs)


@dataclass(frozen=True)
class Setup:
    """What a throughput/latency row runs: engines and Redis settings."""

    name: str
    members: int  # 0: the single-process engine
    redis_config: Mapping[str, str] = field(default_factory=dict)
    replica: bool = False
    wait_replicas: int = 0


def measure(env: Env, setup: Setup, n: int, repeats: int, rate: float, seconds: float) -> Measured:
    """Start Redis (and a replica) and the engines; throughput runs, then a paced run."""
    with ExitStack() as stack:
        # Else a replica's first sync waits 5 s for others to join it.
        config = {"repl-diskless-sync-delay": "0", **setup.redis_config}
        srv = stack.enter_context(RedisServer(config=config))
        servers = {"redis-server": srv.process.pid}  # type: ignore[union-attr]
        if setup.replica:
            rep = stack.enter_context(RedisServer(config={"replicaof": f"127.0.0.1 {srv.port}"}))
            servers["redis replica"] = rep.process.pid  # type: ignore[union-attr]
            primary = srv.client()
            wait_until(lambda: replica_online(primary), "the replica in sync", 30)
        client = srv.client(socket_timeout=10.0)
        stack.callback(client.close)
        extra = ["--wait-replicas", str(setup.wait_replicas)] if setup.wait_replicas else []
        slug = re.sub(r"[^a-z0-9]+", "-", setup.name.lower()).strip("-")
        e = stack.enter_context(engines(env, slug, srv.url, extra))
        out = Outbox(client)
        if setup.members == 0:
            e.single(env.tmp / f"journal-{slug}")
        else:
            names = [f"m{i}" for i in range(setup.members)]
            for m in names:
                e.member(m)
            wait_until(
                lambda: e.check_alive() and balanced(client, names),
                "a balanced group",
                90,
                0.2,
            )
        warm_up(client, out, e, f"{slug}-warm")
        runs = [throughput(client, out, e, servers, f"{slug}-t{r}", n) for r in range(repeats)]
        lat = paced(client, out, e, f"{slug}-lat", rate, seconds)
        e.check_alive()
        return Measured(setup.name, max(1, setup.members), runs, lat)


# --- failover -----------------------------------------------------------------------------------


@dataclass
class Kill:
    """One kill: when, which partition, and what happened after (ms since the kill)."""

    victim: str
    partition: int
    owned_ms: float
    action_ms: float
    late_ms: float
    new_owner: str
    joined_ms: float | None
    """Kill -> the restarted member's "joins group" log line (None: not restarted at once)."""


def recovery(
    client: redis.Redis, out: Outbox, p: int, old_token: int | None, esc: str
) -> tuple[float, str, float]:
    """Poll until partition ``p`` has a new token and ``esc`` is in the outbox: the wall ms of
    the first, its new owner, and the outbox entry ms of the second."""
    owned_at: float | None = None
    new_owner = "?"
    action_at: float | None = None

    def recovered() -> bool:
        nonlocal owned_at, new_owner, action_at
        if owned_at is None:
            lease = Leases(client, Keys()).read_many([p])[0]
            if lease.owner is not None and lease.token != old_token:
                owned_at = time.time() * 1000
                new_owner = lease.owner
        if action_at is None:
            out.poll()
            action_at = out.keys.get(esc)
        return owned_at is not None and action_at is not None

    wait_until(recovered, f"partition {p} owned again and {esc} sent", 60, 0.02)
    assert owned_at is not None and action_at is not None
    return owned_at, new_owner, action_at


def joined_at(log: Path) -> float:
    """Wall ms of the last "joins group" line in a member's log (local time, ms)."""
    stamps = [
        line[:23]
        for line in log.read_text(errors="replace").splitlines()
        if " joins group " in line
    ]
    when = datetime.strptime(stamps[-1], "%Y-%m-%d %H:%M:%S,%f")
    return time.mktime(when.timetuple()) * 1000 + when.microsecond / 1000


def id_in(partition: int, tag: str) -> str:
    """A warning id that hashes to ``partition``."""
    for j in range(100_000):
        wid = f"{tag}-{j}"
        if partition_of(wid, P) == partition:
            return wid
    raise AssertionError("no id found")


def failover(
    env: Env, ttl: str, kills: int, members: int, seed: int, *, restart: bool = True
) -> tuple[list[Kill], int]:
    """Kill the owner of a partition with a deadline due during the failover, ``kills`` times.
    Returns the kills and how many partitions changed hands in all (hand-overs included)."""
    rng = random.Random(seed)
    out_kills: list[Kill] = []
    names = [f"f{i}" for i in range(members)]
    with ExitStack() as stack:
        srv = stack.enter_context(RedisServer())
        client = srv.client(socket_timeout=10.0)
        stack.callback(client.close)
        extra = ["--lease-ttl", ttl, "--rules", str(env.rules)]
        slug = f"failover-{ttl}" + ("" if restart else "-no-restart")
        e = stack.enter_context(engines(env, slug, srv.url, extra))
        out = Outbox(client)
        out.track_all = True
        for m in names:
            e.member(m)
        for k in range(kills):
            wait_until(
                lambda: e.check_alive() and balanced(client, names),
                "a balanced group",
                90,
                0.2,
            )
            victim = names[k % members]
            owned = status_now(client, Keys(), P).owned_by()[victim]
            p = rng.choice(owned)
            wid = id_in(p, f"fo{ttl}-{k}")
            client.xadd(INTAKE, {"raw": warning_raw(wid, rng.randrange(RESIDENTS))})
            out.wait_first([wid], timeout=30.0, e=e)
            first = out.first[wid]
            delay = (first / 1000 + KILL_AFTER_S) - time.time()
            if delay > 0:
                time.sleep(delay)
            lease = status_now(client, Keys(), P).partitions[p].lease
            if lease.owner != victim:
                raise RuntimeError(f"partition {p} moved to {lease.owner} before the kill")
            old_token = lease.token
            kill_ms = time.time() * 1000
            e.kill(victim)
            if restart:
                e.member(victim)  # restarted at once, under the same name
            esc = f"{wid}/0{ESCALATION}"
            owned_at, new_owner, action_at = recovery(client, out, p, old_token, esc)
            if not restart:
                e.member(victim)  # back for the next kill, once the survivors took over
            joined = joined_at(e.children[victim].log) if restart else None
            due = first + ACK_WITHIN_S * 1000
            who = "restarted" if new_owner == victim else "survivor"
            out_kills.append(
                Kill(
                    victim,
                    p,
                    owned_at - kill_ms,
                    action_at - kill_ms,
                    action_at - due,
                    who,
                    None if joined is None else joined - kill_ms,
                )
            )
        moves = sum(p.lease.fence for p in status_now(client, Keys(), P).partitions)
    return out_kills, moves


# --- the report ---------------------------------------------------------------------------------


def cpu_cell(s: float, wall: float) -> str:
    return f"{s:.1f} s ({100 * s / wall:.0f}%)"


def throughput_rows(results: Sequence[Measured], base: float) -> list[list[str]]:
    rows = []
    for m in results:
        lo, hi = min(r.rate for r in m.runs), max(r.rate for r in m.runs)
        rows.append(
            [
                m.name,
                str(m.procs),
                f"{m.rate:,.0f}",
                f"{lo:,.0f}-{hi:,.0f}",
                f"{m.rate / base:.2f}x",
                fmt_seconds(pct(m.latency, 0.5)),
                fmt_seconds(pct(m.latency, 0.99)),
            ]
        )
    return rows


def cpu_rows(results: Sequence[Measured]) -> list[list[str]]:
    """Per setup: wall, redis, engines (each), benchmark, and the busiest process."""
    rows = []
    for m in results:
        cpu, wall = m.cpu(), m.wall
        redis_s = sum(v for k, v in cpu.items() if k.startswith("redis"))
        eng = {k: v for k, v in cpu.items() if not k.startswith(("redis", "benchmark", "other"))}
        ours = {k: v for k, v in cpu.items() if k != OTHER}
        busiest = max(ours, key=lambda k: ours[k])
        total = sum(ours.values())
        rows.append(
            [
                m.name,
                f"{wall:.1f} s",
                cpu_cell(redis_s, wall),
                " / ".join(f"{v:.1f}" for v in eng.values())
                + f" s ({100 * sum(eng.values()) / wall:.0f}%)",
                cpu_cell(cpu["benchmark (producer, poller)"], wall),
                f"{100 * total / (2 * wall):.0f}%",
                cpu_cell(cpu[OTHER], wall),
                f"{busiest} ({100 * cpu[busiest] / wall:.0f}%)",
            ]
        )
    return rows


def failover_rows(results: Mapping[str, tuple[list[Kill], int]]) -> list[list[str]]:
    rows = []
    for ttl, (kills, _) in results.items():
        owned = [k.owned_ms / 1000 for k in kills]
        action = [k.action_ms / 1000 for k in kills]
        late = [k.late_ms / 1000 for k in kills]
        by = sum(1 for k in kills if k.new_owner == "restarted")
        joined = [k.joined_ms / 1000 for k in kills if k.joined_ms is not None]
        up = f"{statistics.median(joined):.2f} s / {max(joined):.2f} s" if joined else "-"
        rows.append(
            [
                ttl,
                str(len(kills)),
                f"{statistics.median(owned):.2f} s / {max(owned):.2f} s",
                f"{statistics.median(action):.2f} s / {max(action):.2f} s",
                f"{statistics.median(late):.2f} s / {max(late):.2f} s",
                up,
                f"{by} restarted, {len(kills) - by} survivor",
            ]
        )
    return rows


LOG_LINE = re.compile(rb"^\S+ \S+ (WARNING|ERROR|CRITICAL) (.*)$")


def log_rows(env: Env) -> list[list[str]]:
    """Per setup: warnings and errors the children logged, with the commonest messages."""
    rows = []
    for e in env.all_engines:
        counts: dict[str, int] = {}
        tracebacks = 0
        for c in e.ended:
            text = c.log.read_bytes()
            tracebacks += text.count(b"Traceback")
            for line in text.splitlines():
                m = LOG_LINE.match(line)
                if m:
                    msg = re.sub(rb"\d+", b"N", m.group(2))[:90].decode(errors="replace")
                    key = f"{m.group(1).decode()}: {msg}"
                    counts[key] = counts.get(key, 0) + 1
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
        rows.append(
            [
                e.setup,
                str(sum(v for k, v in counts.items() if k.startswith("WARNING"))),
                str(sum(v for k, v in counts.items() if not k.startswith("WARNING"))),
                str(tracebacks),
                "; ".join(f"{v}x {k}" for k, v in top) or "-",
            ]
        )
    return rows


def failover_rules(src: Path, dst: Path) -> None:
    """The shipped rules with the urgent grid officer's ack deadline cut to ``ACK_WITHIN_S``."""
    text = src.read_text()
    old = '{ role = "grid_officer", ack_within_s = 120 },'
    if text.count(old) != 1:
        raise RuntimeError(f"rules/escalation.toml changed: {old!r} not found once")
    dst.write_text(
        text.replace(old, f'{{ role = "grid_officer", ack_within_s = {ACK_WITHIN_S} }},')
    )


def commit() -> str:
    """The commit of the engine measured (read-only git), marked when its tree has changes;
    for an export (``git archive``) the folder instead, with ``$WD_BENCH_COMMIT`` if set."""
    import engine

    where = Path(engine.__file__).resolve().parent.parent
    git = ["git", "-C", str(where)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = None
    if head is None or head.returncode != 0:
        named = os.environ.get("WD_BENCH_COMMIT")
        return f"{named or 'unknown'} (exported to {where})"
    return f"{head.stdout.strip()}{' (+ uncommitted changes)' if dirty else ''}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts, 5 kills per TTL")
    ap.add_argument("--warnings", type=int, help="per throughput run [20,000; quick 4,000]")
    ap.add_argument("--rate", type=float, default=500.0, help="offered warnings/s (latency)")
    ap.add_argument("--markdown", action="store_true", help="also print Markdown tables")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = ap.parse_args()
    n = args.warnings or (4_000 if args.quick else 20_000)
    repeats, seconds, kills = (1, 2.0, 5) if args.quick else (3, 4.0, 20)
    console = Console(width=max(160, Console().width))
    started = time.monotonic()
    load0 = f"{os.getloadavg()[0]:.2f}"
    tmp = Path(tempfile.mkdtemp(prefix="wd-group-bench-"))
    try:
        env = Env(tmp, tmp / "county", tmp / "home", tmp / "logs", tmp / "rules.toml")
        env.home.mkdir()
        env.logs.mkdir()
        spec = CountySpec(
            residents=RESIDENTS, contacts=12_000, officers=60, stations=3, villages=40
        )
        generate_county(spec).save(env.county)
        repo = Path(__file__).resolve().parent.parent
        failover_rules(repo / "rules" / "escalation.toml", env.rules)

        def say(what: str) -> None:
            console.print(f"[dim]{time.monotonic() - started:6.0f} s  {what}[/dim]")

        part1 = [
            Setup("single engine (disk journal, fsync always)", 0),
            Setup("group of 1", 1),
            Setup("group of 2", 2),
            Setup("group of 3", 3),
        ]
        part3 = [
            Setup("group of 2, no persistence", 2),
            Setup("group of 2, AOF everysec", 2, {"appendonly": "yes", "appendfsync": "everysec"}),
            Setup("group of 2, AOF always", 2, {"appendonly": "yes", "appendfsync": "always"}),
            Setup("group of 2, replica, --wait-replicas 0", 2, replica=True),
            Setup("group of 2, replica, --wait-replicas 1", 2, replica=True, wait_replicas=1),
        ]
        res1: list[Measured] = []
        for s in part1:
            say(f"throughput and latency: {s.name}")
            res1.append(measure(env, s, n, repeats, args.rate, seconds))
        res3: list[Measured] = []
        for s in part3:
            say(f"durability: {s.name}")
            res3.append(measure(env, s, n, repeats, args.rate, seconds))
        res2: dict[str, tuple[list[Kill], int]] = {}
        for k, (ttl, restart, count) in enumerate(
            (("6s", True, kills), ("3s", True, kills), ("6s", False, max(3, kills // 2)))
        ):
            label = f"--lease-ttl {ttl}, " + ("restarted at once" if restart else "not restarted")
            say(f"failover: {label}, {count} kills")
            res2[label] = failover(env, ttl, count, 3, 20261203 + k, restart=restart)
        say("done")

        head1 = ["setup", "engines", "warnings/s (median)", "min-max", "vs single", "p50", "p99"]
        t1 = f"Throughput ({n:,} warnings, {repeats} runs) and latency (paced {args.rate:g}/s)"
        show(
            make_table(t1, head1, throughput_rows(res1, res1[0].rate), labels=1),
            args.markdown,
            console,
        )
        headc = [
            "setup",
            "wall",
            "redis-server CPU",
            "engines CPU (each)",
            "benchmark CPU",
            "of 2 cores",
            "other processes",
            "busiest",
        ]
        show(
            make_table(
                "CPU seconds per process over a throughput run (median)", headc, cpu_rows(res1)
            ),
            args.markdown,
            console,
        )
        head2 = [
            "lease",
            "kills",
            "kill -> owned again (median / max)",
            "kill -> overdue action sent",
            "action after its due time",
            "kill -> restarted member up",
            "taken by",
        ]
        t2 = (
            "Failover: 3 members, SIGKILL of a partition's owner, 0.5 s after a warning's first "
            f"notice (grid officer ack {ACK_WITHIN_S} s)"
        )
        show(make_table(t2, head2, failover_rows(res2)), args.markdown, console)
        t3 = "Durability settings, group of 2"
        head3 = [*head1[:4], "vs no persistence", *head1[5:]]
        show(make_table(t3, head3, throughput_rows(res3, res3[0].rate)), args.markdown, console)
        show(
            make_table(
                "CPU seconds per process, durability settings (median)", headc, cpu_rows(res3)
            ),
            args.markdown,
            console,
        )
        headl = ["setup", "warnings", "errors", "tracebacks", "commonest"]
        show(
            make_table("Engine logs (stderr of every child)", headl, log_rows(env)),
            args.markdown,
            console,
        )
        console.print(
            f"[dim]commit {commit()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} "
            f"cores, redis-server {redis_version()}; county of {RESIDENTS:,} residents; load "
            f"average {load0} at the start, {os.getloadavg()[0]:.2f} at the end; "
            f"{time.monotonic() - started:.0f} s in all[/dim]"
        )
    finally:
        if args.keep:
            console.print(f"[dim]kept {tmp}[/dim]")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def redis_version() -> str:
    try:
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    m = re.search(r"v=(\S+)", out.stdout)
    return m.group(1) if m else "?"


if __name__ == "__main__":
    main()
