"""The composition root assembles the engine the way serve and the simulator get it: journal,
engine, campaign service, statistics and window tags, and a restart on the same journal."""

from __future__ import annotations

from pathlib import Path

import trio

from engine import AppConfig, CountySpec, Registry, generate_county, open_app
from engine.transport import open_memory_intake, open_memory_outbox
from tests.transport_support import warning_json


def _county() -> Registry:
    """A small generated county with the shipped taxonomy (its window tags are dynamic)."""
    return generate_county(CountySpec(residents=2000, contacts=1200))


async def test_open_app_serves_records_statistics_and_window_tags(tmp_path: Path) -> None:
    reg = _county()
    config = AppConfig(registry=reg, journal=tmp_path / "j")
    send, intake = open_memory_intake()
    sink, _out = open_memory_outbox(capacity=1000)
    stop = trio.Event()
    async with open_app(config) as app, trio.open_nursery() as nursery:
        assert app.journal is not None and app.engine.campaign_records.pending() == []
        stats = await nursery.start(
            lambda task_status: app.serve(
                intake, sink, stop=stop, handle_signals=False, task_status=task_status
            )
        )
        for i in range(3):
            await send.send(warning_json(i))
        with trio.fail_after(5):
            while stats.sent < 6:  # a notice and a first contact each
                await trio.sleep(0.005)
        stop.set()
        summary = app.summary()
    assert stats.warnings == 3 and summary.warnings == 3
    assert summary.county.notifications == 3  # the recorder saw what was sent
    assert any(reg.has_tag(r, "warned_24h") for r in range(reg.n_ids))  # window tags kept
    async with open_app(config) as again:  # the same journal: the warnings are back
        assert {again.engine.status(f"w-{i}") is not None for i in range(3)} == {True}
