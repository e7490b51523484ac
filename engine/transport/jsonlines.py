"""JSON lines over pipes and files: intake on stdin or a file/FIFO, actions on stdout or a file.

One JSON object per line. A line ends at ``\n`` and is every byte before it, exactly as it
arrived: a ``\r`` before the ``\n`` (CRLF files) stays part of the line, where the JSON decoder
reads it as whitespace, and a dead letter keeps it. A line of only whitespace is skipped. The
transport frames lines and nothing more: a line that is not a
valid warning is dead-lettered by the engine (``dead_letter(delivery, reason)``), which writes
``{"reason", "source", "source_id" (line number), "at", "raw" | "raw_b64"}`` as one JSON line
to the dead-letter file (stderr by default). Lines longer than ``max_line`` bytes are
dead-lettered here, truncated, since they cannot be framed without unbounded memory.

I/O never blocks the trio thread. Pipes, FIFOs and ttys are read through
``trio.lowlevel.FdStream`` (non-blocking, so a cancelled read has read nothing); regular files
through trio's async file wrapper, whose thread read is not abandoned on cancel, so the bytes it
returns are buffered before the cancellation is delivered. Either way a cancelled
``receive_batch`` loses no line. Output goes through a worker thread (write + flush in one hop
per batch): setting O_NONBLOCK on a shared stdout would break other writers to it.

There are no acks on a pipe: ``ack`` only forgets the line. Restart-safety needs Redis.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Protocol

import msgspec
import trio

from engine.model import Action
from engine.transport.base import DeadLetter, Delivery, dead_letter_for, raw_as_text

log = logging.getLogger("engine.transport.jsonlines")

READ_SIZE = 65536
MAX_LINE = 1 << 20
"""A warning is a few hundred bytes; a megabyte-long line is garbage or an attack."""


class _Reader(Protocol):
    async def read_some(self) -> bytes: ...

    async def aclose(self) -> None: ...


class _StreamReader:
    """Pipes, FIFOs, ttys: trio's non-blocking fd stream."""

    def __init__(self, fd: int) -> None:
        self._stream = trio.lowlevel.FdStream(fd)

    async def read_some(self) -> bytes:
        return bytes(await self._stream.receive_some(READ_SIZE))

    async def aclose(self) -> None:
        await self._stream.aclose()


class _FileReader:
    """Regular files: reads in a worker thread (regular files are never 'not ready')."""

    def __init__(self, f: trio.abc.AsyncResource) -> None:
        self._file = f

    async def read_some(self) -> bytes:
        return bytes(await self._file.read(READ_SIZE))  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        await self._file.aclose()


async def _open_fifo(path: str) -> int:
    """Open a FIFO for reading; POSIX blocks that until a writer appears, so do it in a thread.

    If we are cancelled meanwhile the thread is abandoned; it closes the fd it eventually gets.
    """
    lock = threading.Lock()
    abandoned = False

    def op() -> int:
        fd = os.open(path, os.O_RDONLY)
        with lock:
            if abandoned:
                os.close(fd)
        return fd

    try:
        return await trio.to_thread.run_sync(op, abandon_on_cancel=True)
    except trio.Cancelled:
        with lock:
            abandoned = True
        raise


async def _open_reader(path: str | os.PathLike[str] | None) -> tuple[_Reader, str]:
    if path is None or str(path) == "-":
        fd = os.dup(sys.stdin.fileno())
        if stat.S_ISREG(os.fstat(fd).st_mode):
            f = trio.wrap_file(open(fd, "rb", buffering=0))  # noqa: SIM115 (closed by aclose)
            return _FileReader(f), "stdin"
        return _StreamReader(fd), "stdin"
    p = str(path)
    if stat.S_ISFIFO(os.stat(p).st_mode):
        return _StreamReader(await _open_fifo(p)), Path(p).name
    return _FileReader(await trio.open_file(p, "rb", buffering=0)), Path(p).name


class JsonLinesIntake:
    """An :class:`~engine.transport.base.IntakeSource` over lines of a file, FIFO or stdin.

    Create with ``await JsonLinesIntake.open(path)`` (``None`` or ``"-"``: stdin). Delivery ids
    are 1-based line numbers, so an operator can find a dead-lettered line in the input.
    Blank lines are skipped. At end of input ``receive_batch`` raises ``trio.EndOfChannel``.
    """

    def __init__(
        self,
        reader: _Reader,
        *,
        name: str,
        dead_letters: JsonLinesDeadLetters | None = None,
        batch_size: int = 512,
        max_line: int = MAX_LINE,
    ) -> None:
        self.name = name
        self._reader = reader
        self._dead = dead_letters if dead_letters is not None else JsonLinesDeadLetters()
        self._batch_size = batch_size
        self._max_line = max_line
        self._buf = bytearray()
        self._skipping = False  # inside an over-long line, until its newline
        self._ready: deque[Delivery] = deque()
        self._line = 0
        self._eof = False
        self.unacked: set[str] = set()

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        dead_letters: JsonLinesDeadLetters | None = None,
        batch_size: int = 512,
        max_line: int = MAX_LINE,
    ) -> JsonLinesIntake:
        reader, label = await _open_reader(path)
        return cls(
            reader,
            name=f"jsonl:{label}",
            dead_letters=dead_letters,
            batch_size=batch_size,
            max_line=max_line,
        )

    async def __aenter__(self) -> JsonLinesIntake:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def receive_batch(self) -> list[Delivery]:
        while not self._ready:
            if self._eof:
                raise trio.EndOfChannel
            chunk = await self._reader.read_some()
            # No checkpoint from here until the lines are queued: a cancel cannot drop bytes.
            too_long = self._frame(chunk)
            for d in too_long:
                await self._dead.write(dead_letter_for(d, f"line longer than {self._max_line} B"))
        n = min(len(self._ready), self._batch_size)
        batch = [self._ready.popleft() for _ in range(n)]
        self.unacked.update(d.id for d in batch)
        return batch

    def _frame(self, chunk: bytes) -> list[Delivery]:
        """Split complete lines off the buffer; returns over-long lines (truncated) to reject."""
        rejected: list[Delivery] = []
        if not chunk:
            self._eof = True
            if self._buf and not self._skipping:
                self._emit(bytes(self._buf))
            self._buf.clear()
            return rejected
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            piece = chunk[start:] if nl < 0 else chunk[start:nl]
            if self._skipping:
                if nl >= 0:
                    self._skipping = False
            elif len(self._buf) + len(piece) > self._max_line:
                self._line += 1
                head = bytes(self._buf) + piece[: max(0, 256 - len(self._buf))]
                rejected.append(Delivery(str(self._line), head[:256], self.name))
                self._buf.clear()
                self._skipping = nl < 0
            elif nl >= 0:
                self._buf += piece
                self._emit(bytes(self._buf))
                self._buf.clear()
            else:
                self._buf += piece
            if nl < 0:
                return rejected
            start = nl + 1

    def _emit(self, line: bytes) -> None:
        self._line += 1
        if line.strip():
            self._ready.append(Delivery(str(self._line), line, self.name))

    async def ack(self, ids: Sequence[str]) -> None:
        """Nothing to tell a pipe; just forget the lines."""
        await trio.lowlevel.checkpoint()
        self.unacked.difference_update(ids)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        await self._dead.write(dead_letter_for(delivery, reason))
        await self.ack([delivery.id])

    async def aclose(self) -> None:
        await self._reader.aclose()


class _LineWriter:
    """Appends bytes to a file object in a worker thread, write and flush in one hop."""

    def __init__(self, f: IO[bytes], *, owned: bool) -> None:
        self._file = f
        self._owned = owned
        self._lock = trio.Lock()  # one writer at a time keeps lines whole

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None, default: IO[bytes]) -> _LineWriter:
        if path is None or str(path) == "-":
            return cls(default, owned=False)
        return cls(open(path, "ab"), owned=True)

    async def write(self, data: bytes) -> None:
        def op() -> None:
            self._file.write(data)
            self._file.flush()

        async with self._lock:
            await trio.to_thread.run_sync(op)

    async def aclose(self) -> None:
        if self._owned:
            await trio.to_thread.run_sync(self._file.close)
        else:
            await trio.lowlevel.checkpoint()


def _binary(stream: IO[str]) -> IO[bytes]:
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        raise TypeError(f"{stream!r} has no binary buffer; pass a path instead")
    return buffer


class JsonLinesDeadLetters:
    """Dead letters as JSON lines, to a file (appended) or stderr (default).

    The raw payload is kept exactly: as ``raw`` if it is UTF-8, else base64 as ``raw_b64``.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._path = path
        self._writer: _LineWriter | None = None
        self.count = 0

    async def write(self, record: DeadLetter) -> None:
        if self._writer is None:
            self._writer = _LineWriter.open(self._path, _binary(sys.stderr))
        line = {
            "reason": record.reason,
            "source": record.source,
            "source_id": record.source_id,
            "at": record.at,
            **raw_as_text(record.raw),
        }
        self.count += 1
        log.warning("dead letter %s#%s: %s", record.source, record.source_id, record.reason)
        await self._writer.write(msgspec.json.encode(line) + b"\n")

    async def aclose(self) -> None:
        if self._writer is not None:
            await self._writer.aclose()


class JsonLinesOutbox:
    """An :class:`~engine.transport.base.OutboxSink` writing one JSON object per action
    (the action itself, ``key`` included) to stdout (default) or a file; one flush per batch."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, name: str | None = None):
        self.name = name or f"jsonl:{'stdout' if path in (None, '-') else Path(str(path)).name}"
        self._writer = _LineWriter.open(path, _binary(sys.stdout))
        self._encoder = msgspec.json.Encoder()

    async def send(self, actions: Sequence[Action]) -> None:
        if not actions:
            await trio.lowlevel.checkpoint()
            return
        buf = bytearray()
        for a in actions:
            self._encoder.encode_into(a, buf, -1)
            buf += b"\n"
        await self._writer.write(bytes(buf))

    async def aclose(self) -> None:
        await self._writer.aclose()
