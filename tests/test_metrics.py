"""Prometheus metrics: counted from the engine's state at scrape time and observed from what it
sends and accepts; served over HTTP by ``serve --http`` (a real child process, real socket)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import trio
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine import AppConfig, CountySpec, Registry, generate_county, open_app
from engine.testing.redis_server import free_port
from engine.transport import open_memory_intake, open_memory_outbox
from tests.transport_support import warning_json


def _county() -> Registry:
    return generate_county(CountySpec(residents=2000, contacts=1200))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_states_and_observe_acks_and_first_contacts() -> None:
    reg = _county()
    send, intake = open_memory_intake()
    fb_send, feedback = open_memory_intake(name="feedback")
    sink, _out = open_memory_outbox(capacity=1000)
    stop = trio.Event()
    async with open_app(AppConfig(registry=reg, metrics=True)) as app, trio.open_nursery() as n:
        assert app.metrics is not None
        stats = await n.start(
            lambda task_status: app.serve(
                intake,
                sink,
                feedback=feedback,
                stop=stop,
                handle_signals=False,
                task_status=task_status,
            )
        )
        for i in range(4):
            await send.send(warning_json(i))  # fraud, levels 1-4
        with trio.fail_after(5):
            while stats.sent < 8:
                await trio.sleep(0.005)
        officer = app.engine.status("w-0").notified[0]  # type: ignore[union-attr]
        await fb_send.send(
            json.dumps({"type": "ack", "warning_id": "w-0", "officer": officer}).encode()
        )
        await fb_send.send(
            json.dumps({"type": "outcome", "warning_id": "w-1", "outcome": "dissuaded"}).encode()
        )
        with trio.fail_after(5):
            while stats.feedback < 2:
                await trio.sleep(0.005)
        text = generate_latest(app.metrics.registry).decode()
        stop.set()
    assert value(text, "wd_warnings", kind="fraud", level="1", state="active") == 1
    assert value(text, "wd_warnings", kind="fraud", level="2", state="closed") == 1
    assert value(text, "wd_intake_total", type="warning") == 4
    assert value(text, "wd_intake_total", type="feedback") == 2
    assert value(text, "wd_actions_sent_total", action="notify_officer") >= 4
    first_contacts = sum(
        v
        for (name, _), v in samples(text).items()
        if name == "wd_time_to_reach_resident_seconds_count"
    )
    assert first_contacts == 4
    acks = sum(
        v
        for (name, _), v in samples(text).items()
        if name == "wd_time_to_acknowledge_seconds_count"
    )
    assert acks == 1
    # Bounded labels: no warning, resident or officer ids anywhere in the exposition.
    for (_name, labels), _v in samples(text).items():
        for _k, v in labels:
            assert not v.startswith(("w-", "resident:", "P0")), labels


def test_serve_http_serves_metrics_health_and_readiness(tmp_path: Path) -> None:
    county = tmp_path / "county"
    _county().save(county)
    port = free_port()
    env = {**os.environ, "WARN_DISPATCH_HOME": str(tmp_path / "home")}
    cmd = [
        sys.executable,
        "-m",
        "engine.cli",
        "serve",
        "--county",
        str(county),
        "--journal",
        str(tmp_path / "j"),
        "--http",
        f"127.0.0.1:{port}",
    ]
    err = (tmp_path / "serve.err").open("wb")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=env
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.err").read_text()
            time.sleep(0.1)
        assert httpx.get(f"{base}/healthz", timeout=2).json() == {"status": "ok"}
        assert proc.stdin is not None
        for i in range(3):
            proc.stdin.write(warning_json(i) + b"\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 15
        while True:
            r = httpx.get(f"{base}/metrics", timeout=2)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            if value(r.text, "wd_intake_total", type="warning") == 3:
                break
            assert time.monotonic() < deadline, r.text[-2000:]
            time.sleep(0.1)
        assert value(r.text, "wd_warnings_pending") == 3
        assert "wd_journal_last_commit_seconds" in r.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdin is not None:
            proc.stdin.close()
        err.close()
    assert proc.returncode == 0, (tmp_path / "serve.err").read_text()
    assert f"http: http://127.0.0.1:{port} (" in (tmp_path / "serve.err").read_text()
