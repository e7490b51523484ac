"""Record framing for journal segments and snapshots: pure functions over bytes, no I/O.

A file is an 8-byte header (4-byte magic, u16 format version, u16 reserved) followed by records
``[u32 length][u32 crc32(payload)][payload]``, little-endian, ``zlib.crc32``. The scanner walks
the valid prefix and says why it stopped, so the shell can truncate a torn or corrupt tail at the
last good record.

Empty payloads are refused on write and treated as corruption on read: a file whose tail was
extended with zeros (some filesystems do that after a power cut) would otherwise parse as a run
of valid empty records, since ``crc32(b"") == 0``.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

SEGMENT_MAGIC = b"WDJW"
SNAPSHOT_MAGIC = b"WDJS"
FORMAT_VERSION = 1
HEADER = struct.Struct("<4sHH")
HEADER_SIZE = HEADER.size  # 8
RECORD_HEAD = struct.Struct("<II")
RECORD_HEAD_SIZE = RECORD_HEAD.size  # 8
MAX_PAYLOAD = 0xFFFF_FFFF


class Stop(enum.Enum):
    """Why a scan stopped: only ``CLEAN`` means the whole buffer was valid."""

    CLEAN = "clean end"
    BAD_HEADER = "bad header"
    TORN_LENGTH = "torn length"
    TORN_PAYLOAD = "torn payload"
    CRC_MISMATCH = "crc mismatch"
    ZERO_LENGTH = "zero length"


def header(magic: bytes) -> bytes:
    """The file header for ``magic`` at the current format version."""
    return HEADER.pack(magic, FORMAT_VERSION, 0)


def frame(payload: bytes | bytearray | memoryview) -> bytes:
    """One framed record. Raises ValueError for an empty or over-long payload."""
    n = len(payload)
    if n == 0:
        raise ValueError("journal records must not be empty")
    if n > MAX_PAYLOAD:
        raise ValueError(f"journal record of {n} bytes exceeds the u32 length field")
    return RECORD_HEAD.pack(n, zlib.crc32(payload)) + bytes(payload)


def frame_many(payloads: Iterable[bytes | bytearray | memoryview]) -> tuple[bytes, int]:
    """Frame several records into one buffer (one write(2)); returns (buffer, record count)."""
    parts = [frame(p) for p in payloads]
    return b"".join(parts), len(parts)


@dataclass(frozen=True, slots=True)
class ScanEnd:
    """Where the valid prefix of a buffer ends and why the scan stopped there."""

    end: int
    stop: Stop
    records: int

    @property
    def clean(self) -> bool:
        return self.stop is Stop.CLEAN


class Scanner:
    """Iterate the valid records of one file image; ``result`` is set once iteration ends.

    Yields ``(offset, payload)`` where ``offset`` is the start of the record's length field.
    Stops at the first record that is not wholly present and intact; everything before it is
    yielded, nothing after it.
    """

    def __init__(self, buf: bytes | bytearray | memoryview, magic: bytes = SEGMENT_MAGIC) -> None:
        self._buf = memoryview(buf)
        self._magic = magic
        self.result: ScanEnd | None = None

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        buf, size = self._buf, len(self._buf)
        if size < HEADER_SIZE or HEADER.unpack_from(buf, 0) != (self._magic, FORMAT_VERSION, 0):
            self.result = ScanEnd(0, Stop.BAD_HEADER, 0)
            return
        pos, count = HEADER_SIZE, 0
        unpack, crc32 = RECORD_HEAD.unpack_from, zlib.crc32
        while True:
            if pos == size:
                stop = Stop.CLEAN
                break
            if size - pos < RECORD_HEAD_SIZE:
                stop = Stop.TORN_LENGTH
                break
            length, crc = unpack(buf, pos)
            if length == 0:
                stop = Stop.ZERO_LENGTH
                break
            start = pos + RECORD_HEAD_SIZE
            if size - start < length:
                stop = Stop.TORN_PAYLOAD
                break
            payload = buf[start : start + length]
            if crc32(payload) != crc:
                stop = Stop.CRC_MISMATCH
                break
            self.result = ScanEnd(start + length, Stop.CLEAN, count + 1)  # provisional
            yield pos, payload.tobytes()
            pos, count = start + length, count + 1
        self.result = ScanEnd(pos, stop, count)


def scan(
    buf: bytes | bytearray | memoryview, magic: bytes = SEGMENT_MAGIC
) -> tuple[list[tuple[int, bytes]], ScanEnd]:
    """Scan a whole buffer: the valid records and where/why the valid prefix ends."""
    scanner = Scanner(buf, magic)
    records = list(scanner)
    assert scanner.result is not None
    return records, scanner.result


def encode_snapshot(payload: bytes | bytearray | memoryview) -> bytes:
    """A snapshot file image: header plus exactly one framed record."""
    return header(SNAPSHOT_MAGIC) + frame(payload)


def decode_snapshot(buf: bytes | bytearray | memoryview) -> bytes | None:
    """The payload of a snapshot file image, or None unless it is exactly one intact record."""
    records, end = scan(buf, SNAPSHOT_MAGIC)
    if not end.clean or len(records) != 1:
        return None
    return records[0][1]
