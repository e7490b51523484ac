"""In-process transport: trio memory channels."""

from __future__ import annotations

import trio

from engine.transport import IntakeSource, OutboxSink, open_memory_intake, open_memory_outbox
from tests.transport_support import action, consume, warning_json


async def test_round_trip_in_order_and_acks():
    send, intake = open_memory_intake(batch_size=4)
    assert isinstance(intake, IntakeSource)
    for i in range(10):
        await send.send(warning_json(i))
    await send.send(b"{not json")
    await send.aclose()
    with trio.fail_after(2):
        got = await consume(intake, 10)
    assert got == [f"w-{i}" for i in range(10)]
    assert not intake.unacked
    (dead,) = intake.dead_letters
    assert dead.raw == b"{not json" and dead.source_id == "11"
    with trio.fail_after(1):
        try:
            await intake.receive_batch()
            raise AssertionError("expected the end of the channel")
        except trio.EndOfChannel:
            pass


async def test_cancelled_receive_loses_nothing():
    send, intake = open_memory_intake()
    with trio.move_on_after(0.01):
        await intake.receive_batch()
    await send.send(b"x")
    with trio.fail_after(1):
        (d,) = await intake.receive_batch()
    assert d.raw == b"x"
    assert set(intake.unacked) == {d.id}


async def test_outbox_batches_and_repeats_keep_keys():
    outbox, receive = open_memory_outbox()
    assert isinstance(outbox, OutboxSink)
    actions = [action(i) for i in range(3)]
    await outbox.send(actions)
    await outbox.send(actions)  # a retry after an error: at-least-once
    first, second = receive.receive_nowait(), receive.receive_nowait()
    assert first == second == tuple(actions)
    assert [a.key for a in first] == [a.key for a in second]
