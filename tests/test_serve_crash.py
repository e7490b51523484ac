"""``warn-dispatch serve --redis`` killed with SIGKILL at random moments while a producer pushes
thousands of warnings: after the last restart every pushed warning exists exactly once with a
consistent state (read back from the journal, read-only), and every outbox key that repeats
always carries the same action. Also: serve over JSON lines stops cleanly on SIGTERM.

Real clock, real redis-server, real subprocesses; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import durability
from engine.journal.reader import read_journal
from engine.rules.escalation import load_escalation
from engine.testing import RedisServer
from tests.child import LineReader
from tests.transport_support import warning_json

pytestmark = pytest.mark.redis

WARNINGS = 3000
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("county") / "c"
    subprocess.run(
        [sys.executable, "-m", "engine.cli", "county", "generate", str(out), "--residents", "2000"],
        check=True,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    return out


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


def start(args: list[str], log: Path, **kw: object) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:  # the child has its own copy of the fd
        return subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "serve", *args],
            cwd=ROOT,
            stderr=err,
            **kw,  # type: ignore[call-overload]
        )


def reap(proc: subprocess.Popen[bytes]) -> None:
    """Whatever happened in the test: the child is gone and its pipes are closed."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=5)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


def serving(log: Path) -> int:
    """How many starts completed (signal handlers installed) so far, by the log."""
    return log.read_text().count(" INFO serving: ") if log.exists() else 0


def wait_serving(log: Path, starts: int) -> None:
    """Until the log shows the ``starts``-th start completed (signal handlers installed)."""
    deadline = time.monotonic() + 30
    while log.read_text().count(" INFO serving: ") < starts:
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
        raise


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    server: RedisServer, county: Path, tmp_path: Path
) -> None:
    rng = random.Random(20261125)
    journal, log = tmp_path / "journal", tmp_path / "serve.log"
    args = ["--county", str(county), "--journal", str(journal), "--redis", server.url]
    args += ["--consumer", "engine-1", "--snapshot-every", "2000"]
    r = server.client()
    pushed: list[str] = []
    done = threading.Event()

    def produce() -> None:
        """3,000 warnings (plus a little garbage) in small pipelined bursts over ~4 s."""
        i = 0
        while i < WARNINGS:
            pipe = r.pipeline(transaction=False)
            for _ in range(30):
                pipe.xadd("wd:intake", {"raw": warning_json(i)})
                pushed.append(f"w-{i}")
                i += 1
            if i % 600 == 0:
                pipe.xadd("wd:intake", {"raw": b'{"id": "broken", "kind": 3}'})
            pipe.execute()
            time.sleep(0.04)
        done.set()

    producer = threading.Thread(target=produce, daemon=True)
    proc = start(args, log)
    producer.start()
    kills = 0
    try:
        for _ in range(4):
            time.sleep(rng.uniform(0.8, 2.0))  # start-up takes ~0.5-1 s: some kills hit it
            assert stop(proc, signal.SIGKILL) == -signal.SIGKILL
            kills += 1
            # A kill that hit a start-up left no "serving" line: count from here.
            before = serving(log)
            proc = start(args, log)
        producer.join(timeout=30)
        assert done.is_set(), "producer did not finish"
        wait_serving(log, before + 1)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:  # until every entry is delivered and acked
            group = r.xinfo_groups("wd:intake")[0]
            if group["pending"] == 0 and group["lag"] == 0:
                break
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.1)
        else:
            pytest.fail(f"intake not drained: {group}\n{log.read_text()[-2000:]}")
        time.sleep(0.3)  # let the last outbox batch go out
        assert stop(proc, signal.SIGTERM) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert kills == 4
    text = log.read_text()
    assert "stopped after" in text and "13800" not in text

    image = read_journal(journal)
    rebuilt = durability.rebuild(image.snapshot_payload, image.records, load_escalation())
    assert len(pushed) == WARNINGS and set(rebuilt.states) == set(pushed)
    for wid, s in rebuilt.states.items():
        starts = [t for t in s.timeline if t.frm == "new"]
        assert len(starts) == 1, (wid, s.timeline)  # started exactly once
        assert s.officer.status == "running" and s.officer.key.startswith(f"{wid}/0/o")
        assert s.notified == (s.officer.to,)
        if int(wid[2:]) < 2000:  # a resident of the county: both ladders run
            assert s.status == "active" and s.next_deadline is not None
        else:  # an unknown resident: nobody to contact, and level-4 rules then close
            assert s.status == "active" or (s.status, s.outcome) == ("closed", "unreachable")
    assert rebuilt.unsent == {}  # the clean stop sent everything

    by_key: dict[str, set[bytes]] = defaultdict(set)
    for _, fields in r.xrange("wd:outbox"):
        by_key[fields[b"key"].decode()].add(fields[b"action"])
    assert all(len(v) == 1 for v in by_key.values())
    for s in rebuilt.states.values():  # at least once: every officer notice went out
        assert s.officer.key in by_key
    dead = r.xrange("wd:dead")
    assert len(dead) == WARNINGS // 600 and all(f[b"reason"] for _, f in dead)


def test_serve_json_lines_stops_cleanly_on_sigterm(county: Path, tmp_path: Path) -> None:
    journal, log = tmp_path / "journal", tmp_path / "serve.log"
    stats_file = tmp_path / "stats.json"
    proc = start(
        [
            "--county",
            str(county),
            "--journal",
            str(journal),
            "--fsync",
            "interval:5",
            "--stats-out",
            str(stats_file),
        ],
        log,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        for i in range(20):
            proc.stdin.write(warning_json(i) + b"\n")
        proc.stdin.write(b"not json\n")
        proc.stdin.flush()
        actions = [json.loads(line) for line in LineReader(proc.stdout).lines(40)]  # 2 each
        wait_serving(log, 1)
        assert stop(proc, signal.SIGTERM) == 0, log.read_text()[-2000:]
    finally:
        reap(proc)
    assert {a["warning_id"] for a in actions} == {f"w-{i}" for i in range(20)}
    text = log.read_text()
    # Dead letters go to their own file beside the journal, never into the log.
    (dead,) = [
        json.loads(x) for x in (tmp_path / "dead-letters.jsonl").read_bytes().split(b"\n") if x
    ]
    assert dead["reason"].startswith("(message): JSON is malformed") and dead["source_id"] == "21"
    assert dead["raw"] == "not json" and "not json" not in text
    assert "20 warnings and 0 feedback accepted, 1 dead letters, 40 actions sent" in text
    image = read_journal(journal)
    assert image.snapshot_payload is not None and image.records == []
    # The engine's own statistics of the run: every accepted warning, every action sent.
    summary = json.loads(stats_file.read_text())
    assert summary["warnings"] == 20
    county_stats = summary["county"]
    assert county_stats["warnings"] == county_stats["notifications"] == 20
    # The first contact rung of each warning: a call or a chat, 20 in all, as sent.
    assert county_stats["calls"] + county_stats["warning_chats"] == 20


def test_serve_survives_each_poison_message_of_the_fuzz_report(county: Path, tmp_path: Path):
    """The reproductions that stalled or killed ``serve`` (an id of 2**64, times outside the
    years a datetime can convert, a 400-deep audience, a phone number as an enum value, an ack
    for an unknown warning): each is dead-lettered with a reason, in its own file, and the
    warning sent after them is acted on. No log line carries the planted phone or name."""
    journal, log = tmp_path / "journal", tmp_path / "serve.log"
    feedback_file, campaigns_file = tmp_path / "feedback.jsonl", tmp_path / "campaigns.jsonl"
    good = json.loads(warning_json(1))
    poison = [
        {**good, "id": "p-int", "target": {"type": "resident", "id": 2**64}},
        {**good, "id": "p-early", "issued_at": "0001-01-01T00:00:00+14:00"},
        {**good, "id": "p-late", "expires": "9999-12-31T23:59:59-14:00"},
        {**good, "id": "p-name", "张三丰": "13912345678"},
    ]
    feedback_file.write_text(
        json.dumps({"type": "call", "warning_id": "w-1", "result": "13912345678"})
        + "\n"
        + json.dumps({"type": "ack", "warning_id": "nobody", "officer": "P0101"})
        + "\n"
    )
    campaign = {"title": "t", "text": "x", "priority": "urgent", "issuer": "county"}
    campaigns_file.write_text(
        json.dumps({**campaign, "id": "c-deep", "audience": "(" * 400 + "elderly" + ")" * 400})
        + "\n"
        + json.dumps({**campaign, "id": "c-tilde", "audience": "~" * 1000 + "elderly"})
        + "\n"
    )
    args = ["--county", str(county), "--journal", str(journal), "--fsync", "interval:5"]
    args += ["--feedback", str(feedback_file), "--campaigns", str(campaigns_file)]
    proc = start(args, log, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        for p in poison:
            proc.stdin.write(json.dumps(p, ensure_ascii=False).encode() + b"\n")
        proc.stdin.write(warning_json(1) + b"\n")
        proc.stdin.flush()
        first = json.loads(LineReader(proc.stdout).readline(timeout=20))
        assert first["warning_id"] == "w-1"
        wait_serving(log, 1)
        dead_path = tmp_path / "dead-letters.jsonl"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            lines = dead_path.read_bytes().split(b"\n") if dead_path.exists() else []
            if len([x for x in lines if x]) >= 8:
                break
            time.sleep(0.05)
        assert stop(proc, signal.SIGTERM) == 0, log.read_text()[-2000:]
    finally:
        reap(proc)
    dead = [json.loads(x) for x in dead_path.read_bytes().split(b"\n") if x]
    by_id = {}
    for d in dead:
        with contextlib.suppress(ValueError, AttributeError):
            by_id[json.loads(d["raw"]).get("id") or json.loads(d["raw"]).get("warning_id")] = d
    assert by_id["p-int"]["reason"].startswith("target.id: ")
    assert by_id["p-early"]["reason"].startswith("issued_at: ")
    assert by_id["p-late"]["reason"].startswith("expires: ")
    assert by_id["p-name"]["reason"].startswith("(message): only the fields")
    assert "nested deeper than 32" in by_id["c-deep"]["reason"]
    assert "nested deeper than 32" in by_id["c-tilde"]["reason"]
    assert by_id["w-1"]["reason"] == "result: one of answered, busy, no_answer"
    assert by_id["nobody"]["reason"] == "feedback for an unknown warning"
    assert by_id["nobody"]["source"] == "engine:feedback"
    text = log.read_text()
    assert "13912345678" not in text and "张三丰" not in text and "Traceback" not in text
    assert "8 dead letters" in text
