"""Exercises (CAP status Exercise) beyond the machine: a campaign that plans for real and sends
nothing to residents, caps untouched; statistics and metrics that count exercises apart."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import numpy as np
import trio
from prometheus_client import generate_latest

from engine import AppConfig, CountySpec, generate_county, open_app
from engine.campaigns.campaign import Campaign, CampaignAction, ChatSend, ConfirmRequest, SmsSend
from engine.campaigns.dispatch import CampaignService
from engine.model import Acknowledged, Action, Outcome, ResidentTarget, WarningInstruction
from engine.stats import Stats
from engine.transport import open_memory_intake, open_memory_outbox
from tests.test_campaign_support import POLICY, build, wall
from tests.test_metrics import value
from tests.transport_support import warning_json


def county():  # type: ignore[no-untyped-def]
    rows = [("01-11", True, frozenset({"elderly"}))] * 10
    rows += [("02-11", False, frozenset({"elderly"}))] * 3
    return build(rows)[0]


def campaign(**kw: object) -> Campaign:
    base: dict[str, object] = {
        "id": "c1",
        "title": "提醒",
        "text": "谨防诈骗",
        "audience": "all",
        "priority": "urgent",
        "issuer": "admin",
    }
    return Campaign(**{**base, **kw})  # type: ignore[arg-type]


@asynccontextmanager
async def service(reg: object) -> AsyncIterator[tuple[CampaignService, list[CampaignAction]]]:
    send, recv = trio.open_memory_channel[CampaignAction](0)
    out: list[CampaignAction] = []

    async def drain() -> None:
        async for a in recv:
            out.append(a)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        async with CampaignService.open(
            reg,  # type: ignore[arg-type]
            send,
            policy=POLICY,
            wall_clock=wall,
            exercise_recipients=lambda: ("drill-desk", "county_centre"),
        ) as svc:
            yield svc, out
        nursery.cancel_scope.cancel()


async def test_an_exercise_campaign_tells_its_recipients_and_nobody_else(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with service(county()) as (svc, out):
        p = await svc.issue(campaign(status="exercise"))
        assert p.exercise and p.state == "done"
        assert (p.resolved, p.to_send, p.sms, p.tasks, p.sent) == (13, 13, 3, 1, 0)
        await trio.sleep(60)
        assert all(isinstance(a, ChatSend) and a.exercise for a in out)
        assert sorted(a.to for a in out) == ["officer:county_centre", "officer:drill-desk"]  # type: ignore[union-attr]
        assert "would reach 13 of 13 residents" in out[0].text  # type: ignore[union-attr]
        # The frequency caps never saw it: a real routine campaign of the same content still
        # reaches everyone (the policy allows one routine message per resident per window).
        real = await svc.issue(campaign(id="c2", priority="routine", category="antifraud"))
        assert (real.capped, real.duplicate, real.to_send) == (0, 0, 13)
        await trio.sleep(60)
        assert any(isinstance(a, ConfirmRequest) for a in out)
        assert len([a for a in out if isinstance(a, SmsSend)]) == 3


async def test_a_real_campaign_after_a_real_one_is_capped_so_the_test_above_can_fail(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with service(county()) as (svc, _):
        await svc.issue(campaign(priority="routine", category="antifraud"))
        again = await svc.issue(
            campaign(id="c2", priority="routine", category="antifraud", text="另一条")
        )
        assert again.capped > 0


def stats() -> Stats:
    return Stats(
        officers=["o1", "o2"],
        officer_station=[0, 0],
        stations=["01"],
        grids=["01-11"],
        resident_grid=np.zeros(10, np.int64),
    )


def test_statistics_count_an_exercise_apart() -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    drill = WarningInstruction(
        id="x1",
        kind="fraud",
        level=1,
        target=ResidentTarget(3),
        issued_at=t0,
        expires=t0 + timedelta(hours=1),
        status="exercise",
    )
    s = stats()
    before = s.summary(until=3600)
    s.observe_warning(drill, 0.0)
    s.observe_actions(
        [
            Action(
                key="x1/0/o0/1",
                warning_id="x1",
                action="notify_officer",
                to="county_centre",
                kind="fraud",
                level=1,
                exercise=True,
            ),
            Action(
                key="x1/0/o1/1",
                warning_id="x1",
                action="notify_officer",
                to="county_centre",
                kind="fraud",
                level=1,
                step=1,
                cause="escalation",
                exercise=True,
            ),
        ],
        120.0,
    )
    s.observe_feedback(Acknowledged(warning_id="x1", officer="county_centre"), 200.0)
    s.observe_feedback(Outcome(warning_id="x1", outcome="dissuaded"), 300.0)
    after = s.summary(until=3600)
    assert after.county == before.county and after.warnings == before.warnings == 0
    assert after.exercise.warnings == 1
    assert after.exercise.actions == {"notify_officer": 2}
    assert after.exercise.acknowledged == 1 and after.exercise.outcomes == {"dissuaded": 1}
    assert s.unknown_feedback == 0


async def test_metrics_count_an_exercise_apart() -> None:
    reg = generate_county(CountySpec(residents=2000, contacts=1200))
    send, intake = open_memory_intake()
    sink, _out = open_memory_outbox(capacity=1000)
    stop = trio.Event()
    async with open_app(AppConfig(registry=reg, metrics=True)) as app, trio.open_nursery() as n:
        assert app.metrics is not None
        stats_ = await n.start(
            lambda task_status: app.serve(
                intake, sink, stop=stop, handle_signals=False, task_status=task_status
            )
        )
        drill = json.loads(warning_json(0))
        drill.update(id="x-0", status="exercise")
        await send.send(json.dumps(drill).encode())
        await send.send(warning_json(1))
        with trio.fail_after(5):
            # Actions may leave before the intake's observers have run: wait for both.
            while True:
                text = generate_latest(app.metrics.registry).decode()
                intakes = value(text, "wd_exercise_intake_total") + value(
                    text, "wd_intake_total", type="warning"
                )
                if stats_.sent >= 3 and intakes >= 2:
                    break
                await trio.sleep(0.005)
        summary = app.summary()
        stop.set()
    assert value(text, "wd_exercise_intake_total") == 1
    assert value(text, "wd_intake_total", type="warning") == 1
    assert value(text, "wd_exercise_warnings", kind="fraud", level="1", state="active") == 1
    assert value(text, "wd_warnings", kind="fraud", level="1", state="active") == 0
    assert value(text, "wd_exercise_actions_total", action="inform") >= 1
    assert value(text, "wd_rules_reloads_total", result="ok") == 0
    assert value(text, "wd_rules_generation") == 0
    assert summary.exercise.warnings == 1 and summary.warnings == 1
