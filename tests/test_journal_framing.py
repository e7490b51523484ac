"""Properties of the journal's record framing (pure, no I/O)."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.journal.framing import (
    HEADER_SIZE,
    SEGMENT_MAGIC,
    SNAPSHOT_MAGIC,
    Stop,
    decode_snapshot,
    encode_snapshot,
    frame,
    header,
    scan,
)

payloads_st = st.lists(st.binary(min_size=1, max_size=200), max_size=12)


def image(payloads: list[bytes]) -> tuple[bytes, list[int]]:
    """A segment image and the end offset of each record."""
    buf, ends = bytearray(header(SEGMENT_MAGIC)), []
    for p in payloads:
        buf += frame(p)
        ends.append(len(buf))
    return bytes(buf), ends


def test_layout_is_little_endian_length_crc_payload():
    assert frame(b"abc") == struct.pack("<II", 3, zlib.crc32(b"abc")) + b"abc"
    assert header(SEGMENT_MAGIC) == b"WDJW\x01\x00\x00\x00"
    assert HEADER_SIZE == 8


def test_empty_payload_refused():
    with pytest.raises(ValueError):
        frame(b"")


@given(payloads_st)
def test_round_trip(payloads):
    buf, _ = image(payloads)
    records, end = scan(buf)
    assert [p for _, p in records] == payloads
    assert end.stop is Stop.CLEAN and end.end == len(buf) and end.records == len(payloads)


@given(payloads_st, st.data())
def test_truncation_at_any_offset_keeps_exactly_the_whole_records(payloads, data):
    buf, ends = image(payloads)
    cut = data.draw(st.integers(0, len(buf)), label="cut")
    records, end = scan(buf[:cut])
    whole = [p for p, e in zip(payloads, ends, strict=True) if e <= cut]
    assert [p for _, p in records] == whole
    if cut < HEADER_SIZE:
        assert end.stop is Stop.BAD_HEADER and end.end == 0
        return
    boundary = max([HEADER_SIZE, *[e for e in ends if e <= cut]])
    assert end.end == boundary
    if cut == boundary:
        assert end.stop is Stop.CLEAN
    elif cut - boundary < 8:
        assert end.stop is Stop.TORN_LENGTH
    else:
        assert end.stop is Stop.TORN_PAYLOAD


def test_truncation_exhaustive_small():
    payloads = [b"a", b"bc" * 5, b"\x00" * 9, b"last"]
    buf, ends = image(payloads)
    for cut in range(len(buf) + 1):
        records, _ = scan(buf[:cut])
        assert [p for _, p in records] == [
            p for p, e in zip(payloads, ends, strict=True) if e <= cut
        ]


@given(payloads_st.filter(bool), st.data())
def test_flipped_byte_stops_the_scan_at_that_record(payloads, data):
    buf, ends = image(payloads)
    i = data.draw(st.integers(0, len(payloads) - 1), label="record")
    start = HEADER_SIZE if i == 0 else ends[i - 1]
    pos = data.draw(st.integers(start, ends[i] - 1), label="pos")
    xor = data.draw(st.integers(1, 255), label="xor")
    bad = bytearray(buf)
    bad[pos] ^= xor
    records, end = scan(bytes(bad))
    assert [p for _, p in records] == payloads[:i]
    assert end.end == start
    assert end.stop in (Stop.CRC_MISMATCH, Stop.TORN_PAYLOAD, Stop.ZERO_LENGTH, Stop.TORN_LENGTH)


@given(st.integers(0, HEADER_SIZE - 1), st.integers(1, 255))
def test_bad_header(pos, xor):
    buf, _ = image([b"x"])
    bad = bytearray(buf)
    bad[pos] ^= xor
    records, end = scan(bytes(bad))
    assert records == [] and end.stop is Stop.BAD_HEADER


def test_zero_filled_tail_is_not_a_run_of_empty_records():
    buf, ends = image([b"one"])
    records, end = scan(buf + b"\x00" * 64)
    assert [p for _, p in records] == [b"one"]
    assert end.stop is Stop.ZERO_LENGTH and end.end == ends[0]


@given(st.binary(min_size=1, max_size=300))
def test_snapshot_image(payload):
    img = encode_snapshot(payload)
    assert img.startswith(SNAPSHOT_MAGIC)
    assert decode_snapshot(img) == payload
    assert decode_snapshot(img[:-1]) is None
    assert decode_snapshot(img + frame(b"x")) is None  # exactly one record
    assert decode_snapshot(header(SEGMENT_MAGIC) + img[HEADER_SIZE:]) is None
