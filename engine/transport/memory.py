"""In-process transport over trio memory channels, for library use and tests.

The producer side is a plain ``trio.MemorySendChannel[bytes]``: embedding code sends raw JSON,
exactly what a network producer would, so the same decode / dead-letter path runs. Nothing here
is durable: unacked deliveries are only remembered (``unacked``) for tests and health checks.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

import trio

from engine.model import Action
from engine.transport.base import DeadLetter, Delivery, dead_letter_for

log = logging.getLogger("engine.transport.memory")


class MemoryIntake:
    """An :class:`~engine.transport.base.IntakeSource` reading raw bytes from a memory channel.

    ``dead_letters`` keeps the last ``dead_letter_capacity`` records; pass ``dead_letter_channel``
    to forward them too (a full channel drops the forward, never blocks the engine).
    """

    def __init__(
        self,
        receive: trio.MemoryReceiveChannel[bytes],
        *,
        name: str = "memory",
        batch_size: int = 512,
        dead_letter_capacity: int = 10_000,
        dead_letter_channel: trio.MemorySendChannel[DeadLetter] | None = None,
    ) -> None:
        self.name = name
        self._receive = receive
        self._batch_size = batch_size
        self._seq = 0
        self.unacked: dict[str, Delivery] = {}
        self.dead_letters: deque[DeadLetter] = deque(maxlen=dead_letter_capacity)
        self._dead_channel = dead_letter_channel

    async def receive_batch(self) -> list[Delivery]:
        """Wait for one message, then take whatever else is ready (up to the batch size).

        A trio channel receive that is cancelled has taken nothing, so cancellation is clean.
        """
        first = await self._receive.receive()
        raws = [first]
        while len(raws) < self._batch_size:
            try:
                raws.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        out: list[Delivery] = []
        for raw in raws:
            self._seq += 1
            d = Delivery(str(self._seq), bytes(raw), self.name)
            self.unacked[d.id] = d
            out.append(d)
        return out

    async def ack(self, ids: Sequence[str]) -> None:
        await trio.lowlevel.checkpoint()
        for i in ids:
            self.unacked.pop(i, None)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        record = dead_letter_for(delivery, reason)
        self.dead_letters.append(record)
        log.warning("dead letter %s#%s: %s", delivery.source, delivery.id, reason)
        if self._dead_channel is not None:
            try:
                self._dead_channel.send_nowait(record)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                log.error("dead-letter channel full or closed: %s#%s", self.name, delivery.id)
        await self.ack([delivery.id])

    async def aclose(self) -> None:
        await self._receive.aclose()


def open_memory_intake(
    capacity: int = 65536, *, name: str = "memory", batch_size: int = 512
) -> tuple[trio.MemorySendChannel[bytes], MemoryIntake]:
    """A producer channel and the intake reading it; closing the producer ends the intake."""
    send, receive = trio.open_memory_channel[bytes](capacity)
    return send, MemoryIntake(receive, name=name, batch_size=batch_size)


class MemoryOutbox:
    """An :class:`~engine.transport.base.OutboxSink` that sends each batch as one tuple.

    One channel item per batch keeps a wake-up per batch, as the engine's own outbox does.
    """

    def __init__(self, send: trio.MemorySendChannel[tuple[Action, ...]], *, name: str = "memory"):
        self.name = name
        self._send = send

    async def send(self, actions: Sequence[Action]) -> None:
        if actions:
            await self._send.send(tuple(actions))
        else:
            await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await self._send.aclose()


def open_memory_outbox(
    capacity: int = 1024, *, name: str = "memory"
) -> tuple[MemoryOutbox, trio.MemoryReceiveChannel[tuple[Action, ...]]]:
    """The sink and the channel end an in-process consumer (an adapter, a test) reads."""
    send, receive = trio.open_memory_channel[tuple[Action, ...]](capacity)
    return MemoryOutbox(send, name=name), receive
