"""``simulate --serve``: the month replays in real time times the speed, and the console's API
answers during the replay with the replay's clock rate. A real child process; every read has a
deadline."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from engine.testing.redis_server import free_port
from tests.child import LineReader

SPEED = 20_000.0


def test_simulate_serve_shows_the_month_live(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "WARN_DISPATCH_HOME": str(tmp_path / "home"), "COLUMNS": "80"}
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "engine.cli", "simulate", "--residents", "50000", "--days", "1",
            "--no-progress", "--out", str(tmp_path / "out"),
            "--serve", f"127.0.0.1:{port}", "--speed", f"{SPEED:g}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    out = LineReader(proc.stdout)
    try:
        link = None
        deadline = time.monotonic() + 60
        while link is None and time.monotonic() < deadline:
            line = out.readline(timeout=60).decode()
            m = re.search(r"centre: (http://\S+/console/#token=(\S+))", line)
            if m:
                link = m
        assert link is not None, "no console link printed"
        base, token = link.group(1).split("/console/")[0], link.group(2)
        headers = {"authorization": f"Bearer {token}"}
        during = httpx.get(f"{base}/api/v1/warnings?status=all", headers=headers, timeout=5)
        assert during.status_code == 200 and during.json()["rate"] == SPEED
        assert httpx.get(f"{base}/console/", timeout=5).status_code == 200
        # The day passes in 86,400 / 20,000 = 4.3 s; then the console stays up, showing it.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "console stays up" in out.readline(timeout=60).decode():
                break
        listing = httpx.get(f"{base}/api/v1/warnings?status=all", headers=headers, timeout=5)
        warnings = listing.json()["warnings"]
        assert warnings, "the day's warnings are not on the console"
        assert {w["status"] for w in warnings} <= {"active", "closed", "expired", "cancelled"}
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        proc.send_signal(signal.SIGINT)
        rest = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = out.readline(timeout=60)
            if not line and out.eof:
                break
            rest += line + b"\n"
        assert proc.wait(timeout=30) == 0, rest.decode()
        assert (tmp_path / "out" / "summary.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
