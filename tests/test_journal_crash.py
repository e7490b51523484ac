"""Real SIGKILLs: a child process appends and prints acknowledged ids; we kill it at random
moments, restart it, and finally check every acknowledged id is in the journal exactly once,
in order."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import trio

from engine.journal import Journal
from tests.child import LineReader

ROOT = Path(__file__).resolve().parent.parent


def run_and_kill(folder: Path, rng: random.Random) -> tuple[int, list[int]]:
    """Start the child, let it append for a random while, SIGKILL it; (start id, acked ids)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.journal_child", str(folder)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    try:
        assert proc.stdout is not None
        reader = LineReader(proc.stdout)
        first = reader.readline(timeout=20)
        assert first.startswith(b"ready "), first
        start = int(first.split()[1])
        time.sleep(rng.uniform(0.02, 0.35))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        out = reader.take_buffered() + out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, err
    acked = [int(line) for line in out.split(b"\n")[:-1]]  # a cut-off last line is not an ack
    return start, acked


async def test_sigkill_at_random_moments_loses_no_acknowledged_record(tmp_path):
    rng = random.Random(int(os.environ.get("JOURNAL_CRASH_SEED", "20261125")))
    folder = tmp_path / "journal"
    acked: list[int] = []
    for _ in range(6):
        start, ids = await trio.to_thread.run_sync(run_and_kill, folder, rng)
        assert not acked or start > acked[-1]  # the restart saw every earlier ack
        acked += ids
    assert len(acked) > 100, "the child barely ran; the test proves little"
    async with Journal.open(folder) as j:
        state = []
        if j.snapshot_payload is not None:
            state = msgspec.msgpack.decode(j.snapshot_payload, type=list[int])
        state += [int(r) for r in j.replay()]
    # every record ever written (acknowledged or not) is there once, in write order
    assert state == list(range(len(state)))
    assert set(acked) <= set(state)
    assert len(set(acked)) == len(acked)
