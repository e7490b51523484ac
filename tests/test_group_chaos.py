"""Chaos: three ``serve --group`` processes, a steady producer and feedback, while engines are
SIGKILLed and restarted at random moments, one is SIGSTOPped past its lease and resumed, and
the Redis primary fails over to its replica (Sentinel). Seeded and bounded.

Under the documented setting (``--wait-replicas 1``: intake is acknowledged only once a
replica holds it; the producer counts a warning as acknowledged once its own XADD was WAITed
for), at the end:

- every acknowledged warning is in exactly one partition's state, the one its id hashes to;
- every one of them had its first officer notice sent;
- no action key in the outbox carries two different actions;
- every pending list (routers' and partitions') is empty;
- the engine that was stopped past its lease was fenced out (its log says so), and came back.

The worst intake-to-first-notice delay (what a failover costs a warning arriving during it)
is written to ``chaos-report.json`` in the test's temporary folder and printed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from engine.group import Keys, partition_of
from engine.group.client import connect
from engine.group.inspect import partition_state, status_now
from engine.registry.synthetic import CountySpec, generate_county
from engine.rules.escalation import load_escalation
from engine.testing.topology import SentinelTopology
from tests.transport_support import warning_json

SEED = int(os.environ.get("WD_CHAOS_SEED", "20261203"))
P = 8
TTL_S = 2.0
RESIDENTS = 2000
CHAOS_S = 24.0
"""How long engines are killed, stopped and restarted while the producer runs."""
ENGINES = ("e0", "e1", "e2")
RULES = load_escalation()


class Engines:
    """The ``serve --group`` children, their logs, and what was done to them."""

    def __init__(self, url: str, county: Path, home: Path, logs: Path) -> None:
        self.url, self.county, self.home, self.logs = url, county, home, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: dict[str, int] = defaultdict(int)

    def start(self, name: str) -> None:
        self.starts[name] += 1
        log = (self.logs / f"{name}.log").open("ab")
        cmd = [
            *(sys.executable, "-m", "engine.cli", "serve"),
            *("--county", str(self.county), "--redis", self.url, "--group", "wd"),
            *("--member", name, "--partitions", str(P), "--lease-ttl", f"{TTL_S}s"),
            *("--wait-replicas", "1", "--wait-timeout", "500ms"),
        ]
        env = {**os.environ, "WARN_DISPATCH_HOME": str(self.home)}
        self.procs[name] = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env
        )
        log.close()

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")


@pytest.fixture
def topology() -> Iterator[SentinelTopology]:
    with SentinelTopology() as topo:
        yield topo


class Producer:
    """XADD + WAIT 1 on one connection; a warning counts as acknowledged only then."""

    def __init__(self, client: redis.Redis, residents: list[int]) -> None:
        self.client = client
        self.residents = residents
        """Residents with a phone of their own: the engines correlate warnings about one
        resident, phone or household into one incident (one first notice for all of them)."""
        self.acked: dict[str, float] = {}
        self.n = 0
        self.failures = 0

    def send(self, stream: str, raw: bytes) -> bool:
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.xadd(stream, {"raw": raw})
            pipe.execute_command("WAIT", 1, 500)
            _, replicas = pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
            self.failures += 1
            return False
        return int(replicas) >= 1

    def warning(self) -> None:
        i = self.n
        self.n += 1
        body = json.loads(warning_json(self.residents[i % len(self.residents)]))
        body["id"] = f"c-{i}"
        if self.send("wd:intake", json.dumps(body).encode()):
            self.acked[body["id"]] = time.time()

    def ack(self, wid: str) -> None:
        event = {"type": "ack", "warning_id": wid, "officer": "x"}
        self.send("wd:feedback", json.dumps(event).encode())


def wait_until(check: object, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError) as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


def test_chaos(topology: SentinelTopology, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    county = tmp_path / "county"
    spec = CountySpec(
        residents=RESIDENTS, contacts=1500, officers=40, stations=2, villages=10, seed=SEED
    )
    reg = generate_county(spec)
    reg.save(county)
    seen: dict[str, int] = {}
    for rid in range(len(reg)):
        seen[reg.phone[rid]] = -1 if reg.phone[rid] in seen else rid
    own_phone = sorted(r for r in seen.values() if r >= 0)
    engines = Engines(topology.url(), county, tmp_path / "home", tmp_path)
    client = connect(topology.url())
    producer = Producer(client, own_phone)
    try:
        for name in ENGINES:
            engines.start(name)
        wait_until(
            lambda: sum(len(v) for v in status_now(client, Keys(), P).owned_by().values()) == P,
            "every partition owned",
            60,
        )
        # The schedule: kills at random moments, one SIGSTOP past the lease, one failover.
        events: list[tuple[float, str, str]] = []
        for _ in range(3):
            events.append((rng.uniform(1, CHAOS_S - 4), "kill", rng.choice(ENGINES)))
        stopped = ""
        events.append((rng.uniform(2, CHAOS_S / 2), "stop", ""))
        events.append((rng.uniform(CHAOS_S / 2, CHAOS_S - 3), "failover", ""))
        events.sort()
        done: list[str] = []
        restarts: list[tuple[float, str]] = []
        resumes: list[tuple[float, str]] = []
        t0 = time.monotonic()
        sent_at = 0.0
        while (now := time.monotonic() - t0) < CHAOS_S:
            if events and events[0][0] <= now:
                _, what, name = events.pop(0)
                done.append(f"{now:.1f}s {what} {name}".strip())  # "stop": chosen below
                paused = [n for _, n in resumes]
                if what == "kill" and engines.procs[name].poll() is None and name not in paused:
                    engines.kill(name)
                    restarts.append((now + rng.uniform(0.2, 2.0), name))
                elif what == "stop":
                    # One that owns partitions right now, so there is something to fence.
                    owners = status_now(client, Keys(), P).owned_by()
                    running = [n for n in ENGINES if engines.procs[n].poll() is None]
                    name = stopped = max(running, key=lambda n: (len(owners.get(n, [])), n))
                    engines.procs[name].send_signal(signal.SIGSTOP)
                    resumes.append((now + 2.5 * TTL_S, name))
                elif what == "failover":
                    topology.failover(timeout=30)
            for when, name in [r for r in restarts if r[0] <= now]:
                restarts.remove((when, name))
                engines.start(name)
            for when, name in [r for r in resumes if r[0] <= now]:
                resumes.remove((when, name))
                engines.procs[name].send_signal(signal.SIGCONT)
            if now - sent_at >= 0.05:
                sent_at = now
                producer.warning()
                if producer.acked and rng.random() < 0.3:
                    producer.ack(rng.choice(list(producer.acked)))
        for _, name in restarts:
            engines.start(name)
        for _, name in resumes:
            engines.procs[name].send_signal(signal.SIGCONT)
        acked = set(producer.acked)
        assert len(acked) > CHAOS_S * 5, f"the producer got too little through: {len(acked)}"

        def first_notices() -> set[str]:
            keys = (f[b"key"].decode() for _, f in client.xrange("wd:outbox", "-", "+"))
            return {k.split("/")[0] for k in keys if k.endswith("/o0/1")}

        wait_until(lambda: acked <= first_notices(), "a first notice for every warning", 60)

        def drained() -> bool:
            st = status_now(client, Keys(), P)
            return all(r.pending == 0 and r.lag == 0 for r in st.routers.values()) and all(
                p.intake.pending == 0
                and p.intake.lag == 0
                and p.feedback.pending == 0
                and p.feedback.lag == 0
                for p in st.partitions
            )

        wait_until(drained, "every stream read and acknowledged", 60)
    finally:
        engines.stop_all()
    # Every acknowledged warning: in exactly one partition's state, the one it hashes to.
    where: dict[str, list[int]] = defaultdict(list)
    for p in range(P):
        for wid in partition_state(client, Keys(), p, RULES).states:
            where[wid].append(p)
    missing = sorted(acked - set(where))
    assert missing == []
    assert {w: ps for w, ps in where.items() if ps != [partition_of(w, P)]} == {}
    # No action key carries two different actions.
    actions: dict[bytes, set[bytes]] = defaultdict(set)
    outbox = client.xrange("wd:outbox", "-", "+")
    for _, fields in outbox:
        actions[fields[b"key"]].add(fields[b"action"])
    assert {k: v for k, v in actions.items() if len(v) > 1} == {}
    # Every pending list is empty, the routers' and every partition's.
    st = status_now(client, Keys(), P)
    assert [r.pending for r in st.routers.values()] == [0, 0, 0]
    assert [p.intake.pending + p.feedback.pending for p in st.partitions] == [0] * P
    # The engine stopped past its lease was fenced out, and came back.
    log = engines.log(stopped)
    assert "lease may have lapsed" in log or "is fenced" in log or "lease lost" in log, log[-3000:]
    # What a failover cost: intake (the producer's ack) to first notice (outbox entry time).
    first: dict[str, float] = {}
    for entry_id, fields in outbox:
        key = fields[b"key"].decode()
        if key.endswith("/o0/1"):
            first.setdefault(key.split("/")[0], int(entry_id.split(b"-")[0]) / 1000)
    delays = sorted(max(0.0, first[w] - producer.acked[w]) for w in acked)
    report = {
        "seed": SEED,
        "acknowledged": len(acked),
        "producer_failures": producer.failures,
        "starts": dict(engines.starts),
        "stopped": stopped,
        "events": done,
        "first_notice_delay_s": {
            "median": delays[len(delays) // 2],
            "p99": delays[int(len(delays) * 0.99)],
            "max": delays[-1],
        },
        "outbox_entries": len(outbox),
        "repeated_actions": len(outbox) - len(actions),
    }
    (tmp_path / "chaos-report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    assert any("failover" in e for e in done) and any("stop" in e for e in done), report
    assert delays[-1] < 4 * TTL_S + 10, report
