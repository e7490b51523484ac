"""The urgent campaign an area alert starts (rules/correlation.toml ``[area_alert.campaign]``):
built by a pure function, issued by the app while it serves, journaled, never twice."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np
import trio

from engine import AppConfig, CountySpec, generate_county, open_app
from engine.incidents import area_campaign
from engine.model import Action
from engine.rules.correlation import load_correlation
from engine.transport import open_memory_intake, open_memory_outbox

RULES = load_correlation()


def alert(wid: str = "w-9", grid: str = "03-17") -> Action:
    return Action(
        key=f"{wid}/area/{grid}",
        warning_id=wid,
        action="area_alert",
        to="G0317",
        kind="fraud",
        level=1,
        cause="linked",
    )


def test_the_campaign_is_urgent_for_the_grid_with_an_id_a_replay_repeats() -> None:
    raw = area_campaign(alert(), RULES, 1_000.0)
    assert raw is not None
    c = json.loads(raw)
    assert c["id"] == "area-03-17-w-9" and c["priority"] == "urgent"
    assert c["audience"] == "(all) & grid:03-17"
    assert c["issuer"] == "area-alert"
    expires = datetime.fromisoformat(c["expires_at"])
    assert expires == datetime.fromtimestamp(1_000.0, UTC) + timedelta(hours=6)
    assert area_campaign(alert(), RULES, 1_000.0) == raw


def test_no_campaign_without_the_table_or_for_other_actions() -> None:
    area = RULES.area_alert
    assert area is not None
    without = msgspec.structs.replace(
        RULES, area_alert=msgspec.structs.replace(area, campaign=None)
    )
    assert area_campaign(alert(), without, 0.0) is None
    other = msgspec.structs.replace(alert(), action="notify_officer")
    assert area_campaign(other, RULES, 0.0) is None


def test_a_long_or_odd_warning_id_still_makes_a_valid_campaign_id() -> None:
    raw = area_campaign(alert(wid="centre/2026/" + "x" * 80), RULES, 0.0)
    assert raw is not None
    ident = json.loads(raw)["id"]
    assert len(ident) <= 64 and "/" not in ident and ident.startswith("area-03-17-")


async def test_five_fraud_warnings_in_one_grid_start_the_grids_campaign(tmp_path: Path) -> None:
    reg = generate_county(CountySpec(residents=3000, contacts=2000))
    grids = np.asarray(reg.grid[: len(reg)])
    busiest = int(np.bincount(grids[grids >= 0]).argmax())
    residents = np.flatnonzero(grids == busiest)[:6].tolist()
    phones = {reg.phone[r] for r in residents}
    assert len(phones) == len(residents), "distinct phones, so no two warnings correlate"
    send, intake = open_memory_intake()
    sink, _out = open_memory_outbox(capacity=10_000)
    stop = trio.Event()
    now = datetime.now(UTC)
    async with (
        open_app(AppConfig(registry=reg, journal=tmp_path / "journal")) as app,
        trio.open_nursery() as n,
    ):
        assert app.area_campaigns is not None
        stats = await n.start(
            lambda task_status: app.serve(
                intake, sink, stop=stop, handle_signals=False, task_status=task_status
            )
        )
        for i, rid in enumerate(residents):
            body = {
                "id": f"ring-{i}",
                "kind": "fraud",
                "level": 1,
                "target": {"type": "resident", "id": rid},
                "issued_at": (now - timedelta(minutes=1)).isoformat(),
                "expires": (now + timedelta(hours=4)).isoformat(),
            }
            await send.send(json.dumps(body).encode())
        with trio.fail_after(10):
            while app.area_campaigns.started < 1 or stats.warnings < len(residents):
                await trio.sleep(0.01)
        ids = app.campaigns.campaign_ids()
        grid_key = reg.jurisdiction.units["grid"][busiest].key
        assert ids == [f"area-{grid_key}-ring-4"]  # the fifth warning crossed the threshold
        progress = app.campaigns.progress(ids[0])
        audience = {rid for rid in range(len(reg)) if int(reg.grid[rid]) == busiest}
        assert progress.resolved == len(audience)
        assert app.engine.campaign_records.used(ids[0])  # journaled: re-issued after a restart
        assert app.area_campaigns.started == 1  # the sixth is inside the cooldown
        assert app.summary().campaigns == 1
        stop.set()
