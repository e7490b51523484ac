"""``simulate --serve``: the month replays at ``--speed`` simulated seconds per real second with
the console and its API served beside the engine (a real child process, real signals); and
``serve_http``'s timeouts follow the clock's rate. Every wait has a deadline."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from engine.cli import main
from engine.testing.redis_server import free_port
from engine.web.server import http_config, serve_http
from simulator.live import STILL
from simulator.traffic import START
from tests.child import LineReader
from tests.test_live_api import EventStream

SPEED = 20_000.0
"""A day in 4.3 s."""

# Enough warnings in a 3,000-resident county to see some within seconds (a spec file's rates are
# taken as given, not scaled to the county).
SPEC = """
days = 1
chats_per_day = 200.0
routine_audience = 300.0
urgent_audience = 300.0
[warnings_per_day]
fraud = 240.0
help_request = 48.0
"""

LINK = re.compile(r"^  (\w+)\b.*: (http://\S+)/console/#token=(wd_\S+)$")


@contextmanager
def child(tmp_path: Path, speed: float) -> Iterator[tuple[subprocess.Popen[bytes], LineReader]]:
    """``warn-dispatch simulate --serve`` on a free loopback port; killed if still running."""
    spec = tmp_path / "traffic.toml"
    spec.write_text(SPEC)
    (tmp_path / "tmp").mkdir()
    env = {
        **os.environ,
        "WARN_DISPATCH_HOME": str(tmp_path / "home"),
        "TMPDIR": str(tmp_path / "tmp"),  # where the run's tokens live, and must not outlive it
        "COLUMNS": "200",
    }
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "engine.cli", "simulate", "--residents", "3000",
            "--spec", str(spec), "--no-progress", "--out", str(tmp_path / "out"),
            "--serve", f"127.0.0.1:{free_port()}", "--speed", f"{speed:g}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        yield proc, LineReader(proc.stdout)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()


async def read_until(out: LineReader, pattern: str, seconds: float = 30) -> tuple[str, list[str]]:
    """The first line matching ``pattern``, and every line read before it."""
    seen: list[str] = []
    with trio.fail_after(seconds):
        while True:
            line = (await trio.to_thread.run_sync(out.readline, seconds)).decode()
            if re.search(pattern, line):
                return line, seen
            assert line or not out.eof, "\n".join(seen)
            seen.append(line)


async def links(out: LineReader) -> dict[str, tuple[str, str]]:
    """{role: (base URL, token)} from the printed links, up to the line after them."""
    _, lines = await read_until(out, r"tokens are for this run only")
    found = {m[1]: (m[2], m[3]) for m in map(LINK.match, lines) if m}
    assert set(found) == {"centre", "chief", "officer", "county"}, "\n".join(lines)
    return found


async def rest(proc: subprocess.Popen[bytes], out: LineReader) -> tuple[int, str]:
    """The exit status and whatever the child still writes."""
    lines: list[str] = []
    with trio.fail_after(30):
        while not out.eof:
            lines.append((await trio.to_thread.run_sync(out.readline, 30)).decode())
        return await trio.to_thread.run_sync(proc.wait, 30), "\n".join(lines)


async def test_simulate_serve_shows_the_month_live(tmp_path: Path) -> None:
    with child(tmp_path, SPEED) as (proc, out):
        found = await links(out)
        base, token = found["centre"]
        auth = {"authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=auth, timeout=5) as c:
            assert (await c.get("/console/")).status_code == 200
            listing = (await c.get("/api/v1/warnings?status=all")).json()
            assert listing["rate"] == SPEED
            # The board watches the day: warnings arrive as it plays, with the replay's clock.
            rows: list[dict[str, Any]] = []
            with trio.fail_after(10):
                async with EventStream(c, "/api/v1/events?since=0") as events:
                    assert events.status == 200
                    while not rows:
                        ((kind, data),) = await events.events(1)
                        assert data["rate"] == SPEED, (kind, data)
                        start = START.timestamp()
                        assert start <= data["now"] <= start + 86_400 + 600
                        if kind == "changed":
                            rows = data["warnings"]
            assert rows[0]["id"].startswith("w") and rows[0]["kind"] in {"fraud", "help_request"}
            during = (await c.get("/api/v1/warnings?status=all")).json()
            assert during["warnings"] and during["rate"] == SPEED

            # The day ends (4.3 s at this speed); time stands still, the console stays up.
            await read_until(out, r"time stands still")
            first = (await c.get("/api/v1/warnings?status=all")).json()
            assert first["rate"] == STILL and len(first["warnings"]) >= len(during["warnings"])
            await trio.sleep(0.3)
            again = (await c.get("/api/v1/warnings?status=all")).json()
            assert again["now"] - first["now"] < 0.01 and again["warnings"] == first["warnings"]
            assert (await c.get("/metrics")).status_code == 200  # metrics on when serving
            for role, (_, other) in found.items():
                me = await c.get("/api/v1/me", headers={"authorization": f"Bearer {other}"})
                assert me.status_code == 200 and me.json()["role"] in {role, "admin"}
        proc.send_signal(signal.SIGINT)
        status, text = await rest(proc, out)
        assert status == 0, text
        assert "county summary" in text
        assert (tmp_path / "out" / "summary.json").exists()
        assert list((tmp_path / "tmp").iterdir()) == []  # the tokens died with the run


async def test_ctrl_c_while_the_month_plays_stops_without_a_report(tmp_path: Path) -> None:
    with child(tmp_path, 60) as (proc, out):
        base, token = (await links(out))["centre"]
        auth = {"authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=auth, timeout=5) as c:
            assert (await c.get("/api/v1/warnings")).json()["rate"] == 60
        proc.send_signal(signal.SIGINT)
        status, text = await rest(proc, out)
        assert status == 130, text
        assert "stopped at 2026-11-01 " in text and "no report" in text
        assert "county summary" not in text and not (tmp_path / "out").exists()
        assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--serve", "127.0.0.1:0", "--ack-deadline", "30s"], "leave out --officers, --ack"),
        (["--serve", "127.0.0.1:0", "--officers", "800"], "leave out --officers, --ack"),
        (["--serve", "8080"], "--serve 8080: expected HOST:PORT"),
        (["--serve", "127.0.0.1:{busy}"], "in use"),
        (["--speed", "600"], "give --serve HOST:PORT too"),
    ],
)
def test_serve_refuses_what_it_cannot_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.setenv("WARN_DISPATCH_HOME", str(tmp_path / "home"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args = [a.format(busy=busy.getsockname()[1]) for a in args]
        result = CliRunner().invoke(main, ["simulate", "--residents", "3000", "--days", "1", *args])
    assert result.exit_code == 2
    assert "error:" in result.output and message in result.output, result.output
    assert not (tmp_path / "home").exists()  # refused before any county was generated


def test_http_timeouts_follow_the_clock_rate() -> None:
    async def configs() -> list[Any]:
        return [http_config("127.0.0.1:0"), http_config("127.0.0.1:0", 10)]

    real, ten = trio.run(configs)
    fast, explicit = trio.run(configs, clock=trio.testing.MockClock(rate=3600))
    jumping, _ = trio.run(configs, clock=trio.testing.MockClock(autojump_threshold=0))
    assert (real.keep_alive_timeout, real.graceful_timeout, real.read_timeout) == (5, 2, None)
    assert (jumping.keep_alive_timeout, jumping.graceful_timeout) == (5, 2)  # rate 0: as real
    assert (fast.keep_alive_timeout, fast.graceful_timeout) == (5 * 3600, 2 * 3600)
    assert (fast.startup_timeout, fast.shutdown_timeout) == (60 * 3600, 60 * 3600)
    assert fast.ssl_handshake_timeout == 60 * 3600
    assert ten.keep_alive_timeout == explicit.keep_alive_timeout == 50


def test_a_kept_alive_connection_outlives_a_fast_clock() -> None:
    """At 1000 trio seconds per second, hypercorn's 5 s keep-alive would be 5 ms unscaled: an
    idle connection would be closed before its second request."""

    async def hello(_: Any) -> PlainTextResponse:
        return PlainTextResponse("hi")

    asgi = Starlette(routes=[Route("/", hello)])

    async def main_() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as n:
            binds = await n.start(serve_http, asgi, "127.0.0.1:0", stop)
            port = int(binds[0].rsplit(":", 1)[1])
            with trio.fail_after(10 * 1000):  # 10 real seconds
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                for _ in range(2):
                    await stream.send_all(request)
                    got = b""
                    while not got.endswith(b"hi"):
                        chunk = await stream.receive_some(4096)
                        assert chunk, "the server closed the idle connection"
                        got += chunk
                    assert got.startswith(b"HTTP/1.1 200")
                    await trio.sleep(0.3 * 1000)  # 0.3 real seconds idle
                await stream.aclose()
            stop.set()

    trio.run(main_, clock=trio.testing.MockClock(rate=1000))
