"""Hostile input through the real ``serve`` path: one bad message never stops the engine.

Hypothesis writes warnings, feedback and campaigns the way a hostile or buggy producer would:
ints past 2**64, times outside the years a datetime can convert, audiences nested thousands of
levels deep, unknown fields named after residents, phone numbers and names in every field it can
reach. The properties:

- every message is accounted for: accepted, or dead-lettered with a reason (nothing is lost and
  nothing is stuck, including the engine's own rejections such as feedback for an unknown
  warning);
- a valid warning sent after all of them is acted on (the engine keeps serving);
- no log line, and no dead-letter *reason*, carries a planted name or phone number (the
  dead-letter record keeps the raw message, which is where it belongs).
"""

from __future__ import annotations

import contextlib
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.campaigns import CampaignService
from engine.model import InvalidMessage, decode_feedback, decode_warning
from engine.registry.responders import RegistryDirectory
from engine.scheduler import Engine
from engine.service import CampaignFeed, serve
from engine.transport import open_memory_intake, open_memory_outbox
from engine.transport.base import DeadLetter
from tests.props import examples
from tests.small_county import make_registry
from tests.test_durability import RULES

NAMES = ("张三丰", "欧阳娜娜", "Zhang Sanfeng")
PHONES = ("13912345678", "+86 139 8765 4321")
PLANTED = NAMES + PHONES
"""Personal data planted in messages: none of it may appear in a log line or a reason."""

_scalars = st.one_of(
    st.sampled_from([2**64, 2**64 - 1, 2**63, -(2**63) - 1, 2**200, -1, 0, 1.5e308, True, None]),
    st.sampled_from(["", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]),
    st.sampled_from(["2026-02-30T25:61:00+08:00", "1969-12-31T23:59:59Z", "2999-12-31T00:00Z"]),
    st.sampled_from(PLANTED),
    st.integers(),
    st.text(max_size=12),
)
HOSTILE = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(PLANTED), inner),
    max_leaves=6,
)
DEEP = st.sampled_from(
    [
        "(" * 400 + "elderly" + ")" * 400,
        "~" * 1000 + "elderly",
        " - ".join(["elderly"] * 300),
        "elderly & " * 500 + "elderly",
        "张三丰 & elderly",
        "elderly | 13912345678",
        "grid:张三丰",
        "x" * 5000,
        "elderly",
    ]
)


def _now() -> datetime:
    return datetime.now(UTC)


def warning(i: int) -> dict[str, Any]:
    now = _now()
    return {
        "id": f"p-{i}",
        "kind": "fraud",
        "level": 1,
        "target": {"type": "resident", "id": i % 6},
        "issued_at": (now - timedelta(minutes=1)).isoformat(),
        "expires": (now + timedelta(days=1)).isoformat(),
    }


FEEDBACK = (
    {"type": "ack", "warning_id": "p-0", "officer": "P01"},
    {"type": "call", "warning_id": "p-1", "result": "busy"},
    {"type": "visit", "warning_id": "nobody-knows-me", "visitor": "张三丰"},  # unknown warning
    {"type": "outcome", "warning_id": "p-2", "outcome": "dissuaded"},
)
CAMPAIGN = {"title": "防范诈骗", "text": "请勿转账", "priority": "urgent", "issuer": "county"}


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    """``base`` with hostile changes: fields replaced (nested ones too), dropped, or added
    under a resident's name; or plain hostile bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from([b"[" * 5_000, b'{"id": "\xff\xfe"}', b"null", b"13912345678"]))
    msg = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        where = msg
        if isinstance(msg.get("target"), dict) and draw(st.booleans()):
            where = msg["target"]
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        keys = sorted(where)
        if action == "add" or not keys:
            where[draw(st.sampled_from(PLANTED))] = draw(HOSTILE)
        elif action == "drop":
            where.pop(draw(st.sampled_from(keys)))
        else:
            where[draw(st.sampled_from(keys))] = draw(HOSTILE)
    return json.dumps(msg, ensure_ascii=draw(st.booleans())).encode()


class Collected:
    """A dead-letter place that keeps records in memory (the engine's own rejections)."""

    def __init__(self) -> None:
        self.records: list[DeadLetter] = []

    async def write(self, record: DeadLetter) -> None:
        self.records.append(record)
        await trio.lowlevel.checkpoint()


def _registry() -> Any:
    reg = make_registry()
    for i in range(6):
        reg.add_resident(
            f"R{i}",
            name="甲乙",
            phone=f"1380000000{i}",
            address="x",
            grid="01-11",
            officer="P01",
            tags=["elderly"],
        )
    return reg


REG = _registry()


def _valid(decode: Any, raw: bytes) -> bool:
    try:
        decode(raw)
    except InvalidMessage:
        return False
    return True


@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    warnings=st.lists(st.integers(0, 5).flatmap(lambda i: mutated(warning(i))), max_size=8),
    feedback=st.lists(st.sampled_from(FEEDBACK).flatmap(mutated), max_size=6),
    campaigns=st.lists(
        DEEP.map(lambda a: {**CAMPAIGN, "id": "cm", "audience": a}).flatmap(mutated), max_size=4
    ),
    audiences=st.lists(DEEP, max_size=3),
)
async def test_hostile_messages_never_stop_the_engine_or_reach_the_logs(
    caplog: pytest.LogCaptureFixture,
    warnings: list[bytes],
    feedback: list[bytes],
    campaigns: list[bytes],
    audiences: list[str],
) -> None:
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    send_w, intake = open_memory_intake(name="warnings")
    send_f, fb = open_memory_intake(name="feedback")
    send_c, camp_source = open_memory_intake(name="campaigns")
    sink, out = open_memory_outbox(capacity=100_000)
    c_send, c_recv = trio.open_memory_channel[object](100_000)
    engine_dead = Collected()
    stop = trio.Event()
    # CampaignFeed whose only hostility is the audience, so the audience parser is always reached.
    plain = [
        json.dumps({**CAMPAIGN, "id": f"c-{i}", "audience": a}, ensure_ascii=False).encode()
        for i, a in enumerate(audiences)
    ]
    first_actions: list[str] = []
    async with (
        Engine.open(RegistryDirectory(REG), RULES) as engine,
        CampaignService.open(REG, c_send) as service,  # type: ignore[arg-type]
        trio.open_nursery() as nursery,
    ):
        camp = CampaignFeed(camp_source, service, c_recv)  # type: ignore[arg-type]
        stats = await nursery.start(
            lambda task_status: serve(
                engine,
                intake,
                sink,
                feedback=fb,
                stop=stop,
                handle_signals=False,
                campaigns=camp,
                dead_letters=engine_dead,
                task_status=task_status,
            )
        )
        for raw in warnings:
            await send_w.send(raw)
        for raw in feedback:
            await send_f.send(raw)
        for raw in campaigns + plain:
            await send_c.send(raw)
        final = warning(99) | {"id": "final"}
        await send_w.send(json.dumps(final).encode())
        with trio.fail_after(10):
            while not first_actions:
                await trio.sleep(0.005)
                first_actions = [
                    a.key for a in sink_actions(out) if getattr(a, "warning_id", "") == "final"
                ]
        with trio.fail_after(10):  # every message taken: accepted or dead-lettered
            while intake.unacked or fb.unacked or camp_source.unacked:
                await trio.sleep(0.005)
        stop.set()

    # The engine kept serving: the warning sent after everything else was acted on.
    assert first_actions
    # Accounting: each warning was accepted or dead-lettered by the intake.
    good_w = [r for r in warnings if _valid(decode_warning, r)]
    assert len(intake.dead_letters) + stats.warnings == len(warnings) + 1
    assert len(intake.dead_letters) >= len(warnings) - len(good_w)
    # Feedback: dead-lettered at the edge, or accepted; the engine's own rejections (feedback
    # for a warning it does not hold) reach the dead-letter place too, not only the log.
    assert len(fb.dead_letters) + stats.feedback == len(feedback)
    good_f = [r for r in feedback if _valid(decode_feedback, r)]
    assert len(fb.dead_letters) == len(feedback) - len(good_f)
    known = {f"p-{i}" for i in range(6)}
    unknown = [r for r in good_f if decode_feedback(r).warning_id not in known]
    assert len([d for d in engine_dead.records if d.source == "engine:feedback"]) >= len(unknown)
    assert stats.dead_letters == (
        len(intake.dead_letters)
        + len(fb.dead_letters)
        + len(camp_source.dead_letters)
        + len(engine_dead.records)
    )
    # CampaignFeed: issued or dead-lettered, never stuck; the too-deep ones are dead-lettered.
    assert stats.campaigns + len(camp_source.dead_letters) == len(campaigns) + len(plain)
    dead_ids = set()
    for d in camp_source.dead_letters:
        with contextlib.suppress(ValueError, AttributeError, TypeError, RecursionError):
            dead_ids.add(json.loads(d.raw).get("id"))
    for i, a in enumerate(audiences):
        if a != "elderly":  # every other audience is too deep, too long or names nobody
            assert f"c-{i}" in dead_ids, a[:40]
    # Nothing planted reaches a log line or a reason.
    reasons = [
        d.reason
        for d in [
            *intake.dead_letters,
            *fb.dead_letters,
            *camp_source.dead_letters,
            *engine_dead.records,
        ]
    ]
    for text in [r.getMessage() for r in caplog.records] + reasons:
        for planted in PLANTED:
            assert planted not in text, (planted, text)


def sink_actions(out: trio.MemoryReceiveChannel[Any]) -> list[Any]:
    """Drain what the outbox has sent so far (memory outbox: one batch per send)."""
    got = []
    while True:
        try:
            got.extend(out.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return got


@pytest.mark.redis
async def test_redis_poison_is_dead_lettered_and_a_restart_does_not_loop(tmp_path: Path) -> None:
    """In Redis mode: the fuzz report's poison entries (an id of 2**64, a year-1 time, a
    400-deep audience, an entry without a payload, an ack for a warning nobody holds) each end
    in ``wd:dead`` with a reason, the next valid warning is acted on, nothing stays pending,
    and a restarted engine on the same journal and streams has nothing left to chew on."""
    from engine.journal import FsyncPolicy, Journal
    from engine.testing import RedisServer
    from engine.transport import SourceOptions, open_redis_transport

    good = warning(1) | {"id": "w-good"}
    poison = [
        warning(2) | {"id": "p-int", "target": {"type": "resident", "id": 2**64}},
        warning(3) | {"id": "p-early", "issued_at": "0001-01-01T00:00:00+14:00"},
    ]
    deep = {**CAMPAIGN, "id": "c-deep", "audience": "(" * 400 + "elderly" + ")" * 400}
    with RedisServer() as srv:
        r = srv.client()
        for p in poison:
            r.xadd("wd:intake", {"raw": json.dumps(p).encode()})
        r.xadd("wd:intake", {"something": b"else"})  # no payload at all
        r.xadd("wd:campaigns", {"raw": json.dumps(deep).encode()})
        r.xadd("wd:feedback", {"raw": b'{"type":"ack","warning_id":"nobody","officer":"P01"}'})
        r.xadd("wd:intake", {"raw": json.dumps(good).encode()})

        async def run_once() -> Any:
            opts = SourceOptions(consumer="e1", block_s=0.05)
            c_send, c_recv = trio.open_memory_channel[object](1000)
            async with (
                Journal.open(tmp_path / "j", fsync=FsyncPolicy.interval(2)) as journal,
                Engine.open(RegistryDirectory(REG), RULES, journal=journal) as engine,
                CampaignService.open(REG, c_send) as service,  # type: ignore[arg-type]
                open_redis_transport("127.0.0.1", srv.port, options=opts) as t,
                trio.open_nursery() as nursery,
            ):
                stop = trio.Event()
                camp = CampaignFeed(t.campaigns, service, c_recv)  # type: ignore[arg-type]
                stats = await nursery.start(
                    lambda task_status: serve(
                        engine,
                        t.intake,
                        t.outbox,
                        feedback=t.feedback,
                        stop=stop,
                        handle_signals=False,
                        campaigns=camp,
                        dead_letters=t.dead,
                        task_status=task_status,
                    )
                )
                with trio.fail_after(10):
                    while any(
                        g["pending"] or g["lag"]
                        for s in ("wd:intake", "wd:feedback", "wd:campaigns")
                        for g in r.xinfo_groups(s)
                    ) or not r.xlen("wd:outbox"):
                        await trio.sleep(0.02)
                stop.set()
            return stats

        first = await run_once()
        dead = {f[b"reason"].decode(): f for _, f in r.xrange("wd:dead")}
        assert any(k.startswith("target.id: ") for k in dead)
        assert any(k.startswith("issued_at: ") for k in dead)
        assert any("nested deeper than 32" in k for k in dead)
        unknown = dead["feedback for an unknown warning"]
        assert unknown[b"stream"] == b"engine:feedback" and unknown[b"source_id"] == b"nobody"
        assert len(dead) == 5 and first.dead_letters == 5 and first.warnings == 1
        outbox = [json.loads(f[b"action"]) for _, f in r.xrange("wd:outbox")]
        assert {a["warning_id"] for a in outbox} == {"w-good"}
        # A restart reads nothing again: every poison entry was acked with its dead letter.
        second = await run_once()
        assert second.warnings == second.feedback == second.dead_letters == 0
        assert r.xlen("wd:dead") == 5


async def test_an_oversized_message_from_any_transport_is_dead_lettered_unread() -> None:
    """A Redis entry has no framing bound: the service refuses anything over MAX_MESSAGE before
    decoding it, and the warning behind it is still taken."""
    from engine.service import MAX_MESSAGE, ServiceStats, run_intake

    send, intake = open_memory_intake()
    huge = json.dumps(warning(1) | {"details": "x" * (MAX_MESSAGE + 1)}).encode()
    await send.send(huge)
    await send.send(json.dumps(warning(2)).encode())
    await send.aclose()
    stats = ServiceStats()
    async with Engine.open(RegistryDirectory(REG), RULES) as engine:
        await run_intake(engine, intake, stats)
        assert engine.status("p-2") is not None and engine.status("p-1") is None
    (dead,) = intake.dead_letters
    assert dead.reason == f"(message): at most {MAX_MESSAGE} bytes" and dead.raw == huge
    assert stats.warnings == 1 and stats.dead_letters == 1
