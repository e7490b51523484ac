"""JSON lines: files, FIFOs, stdin, stdout; garbage lines go to the dead-letter file."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import msgspec
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.model import Action
from engine.transport import JsonLinesDeadLetters, JsonLinesIntake, JsonLinesOutbox
from tests.props import examples
from tests.transport_support import action, consume, garbage, is_garbage, warning_json


def _dead_records(path: Path) -> list[dict]:
    """JSON lines split on ``\n`` only: ``str.splitlines`` would also split on U+0085 or
    U+2028, which a JSON string may legally hold unescaped."""
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line]


def _raw_of(record: dict) -> bytes:
    if "raw" in record:
        return record["raw"].encode()
    return base64.b64decode(record["raw_b64"])


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), garbage), min_size=1, max_size=12))
async def test_garbage_is_dead_lettered_and_good_lines_come_through_in_order(mix):
    with tempfile.TemporaryDirectory() as tmp:
        src, dead_path = Path(tmp, "in.jsonl"), Path(tmp, "dead.jsonl")
        lines, good, bad = [], [], []
        for i, (is_good, junk) in enumerate(mix):
            if is_good:
                lines.append(warning_json(i))
                good.append(f"w-{i}")
            elif is_garbage(junk):
                lines.append(junk)
                bad.append((len(lines), junk))
        src.write_bytes(b"\n".join(lines) + b"\n")
        dead = JsonLinesDeadLetters(dead_path)
        intake = await JsonLinesIntake.open(src, dead_letters=dead, batch_size=3)
        with trio.fail_after(5):
            got = await consume(intake, len(good))
            with pytest.raises(trio.EndOfChannel):
                while True:  # the rest can only be garbage
                    await consume(intake, 1)
        await intake.aclose()
        await dead.aclose()
        assert got == good
        records = _dead_records(dead_path) if bad else []
        assert [(int(r["source_id"]), _raw_of(r)) for r in records] == bad
        assert all(r["reason"] and r["source"] == "jsonl:in.jsonl" for r in records)
        assert not intake.unacked


async def test_long_line_is_dead_lettered_and_framing_recovers(tmp_path):
    src, dead_path = tmp_path / "in.jsonl", tmp_path / "dead.jsonl"
    src.write_bytes(warning_json(1) + b"\n" + b"x" * 5000 + b"\n" + warning_json(2))  # no final \n
    dead = JsonLinesDeadLetters(dead_path)
    intake = await JsonLinesIntake.open(src, dead_letters=dead, max_line=1000)
    with trio.fail_after(5):
        assert await consume(intake, 2) == ["w-1", "w-2"]
    await intake.aclose()
    await dead.aclose()
    (rec,) = _dead_records(dead_path)
    assert rec["source_id"] == "2" and "longer than" in rec["reason"]


async def test_fifo_cancelled_read_loses_nothing(tmp_path):
    fifo = tmp_path / "feedback.fifo"
    os.mkfifo(fifo)
    wfd = -1

    async def open_writer():
        nonlocal wfd
        await trio.sleep(0.02)
        wfd = os.open(fifo, os.O_WRONLY)  # the reader is opening: does not block for long

    async with trio.open_nursery() as n:
        n.start_soon(open_writer)
        with trio.fail_after(5):
            intake = await JsonLinesIntake.open(fifo, dead_letters=JsonLinesDeadLetters(os.devnull))
    with trio.move_on_after(0.05) as scope:
        await intake.receive_batch()  # nothing written yet: blocks, then is cancelled
    assert scope.cancelled_caught
    w2 = warning_json(2)
    os.write(wfd, warning_json(1) + b"\n" + w2[:20])
    with trio.move_on_after(0.05):  # a partial line is buffered, not lost, across a cancel
        assert [d.id for d in await intake.receive_batch()] == ["1"]
        await intake.receive_batch()
    os.write(wfd, w2[20:] + b"\n")
    os.close(wfd)
    with trio.fail_after(5):
        (d,) = await intake.receive_batch()
        assert d.raw == w2 and d.id == "2"
        with pytest.raises(trio.EndOfChannel):
            await intake.receive_batch()
    await intake.aclose()


async def test_outbox_file_lines_flushed_per_batch_and_repeats_keep_keys(tmp_path):
    out = tmp_path / "actions.jsonl"
    outbox = JsonLinesOutbox(out)
    batch = [action(i) for i in range(3)]
    await outbox.send(batch)
    assert len(out.read_bytes().splitlines()) == 3  # flushed before send returned
    await outbox.send(batch)  # at-least-once retry
    await outbox.aclose()
    got = [msgspec.json.decode(line, type=Action) for line in out.read_bytes().splitlines()]
    assert got == batch + batch
    assert [a.key for a in got[:3]] == [a.key for a in got[3:]]


_PIPE_SCRIPT = """
import trio
from engine.model import InvalidWarning, decode_warning
from engine.transport import JsonLinesIntake, JsonLinesOutbox
from tests.transport_support import action

async def main():
    intake = await JsonLinesIntake.open()          # stdin
    outbox = JsonLinesOutbox()                     # stdout
    while True:
        try:
            batch = await intake.receive_batch()
        except trio.EndOfChannel:
            break
        ok = []
        for d in batch:
            try:
                w = decode_warning(d.raw)
            except InvalidWarning as exc:
                await intake.dead_letter(d, str(exc))   # stderr by default
                continue
            ok.append(action(int(w.id[2:])))
        await outbox.send(ok)
        await intake.ack([d.id for d in batch])

trio.run(main)
"""


def test_stdin_to_stdout_pipe():
    """The quick-integration path end to end, in a child process with real pipes."""
    stdin = warning_json(1) + b"\n\xff\xfe garbage\n" + warning_json(2) + b"\n"
    proc = subprocess.run(
        [sys.executable, "-c", _PIPE_SCRIPT],
        input=stdin,
        capture_output=True,
        timeout=30,
        cwd=Path(__file__).parent.parent,
        check=True,
    )
    out = [msgspec.json.decode(line, type=Action) for line in proc.stdout.splitlines()]
    assert [a.key for a in out] == [action(1).key, action(2).key]
    (dead,) = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith(b"{")]
    assert dead["source"] == "jsonl:stdin" and dead["source_id"] == "2"
    assert base64.b64decode(dead["raw_b64"]) == b"\xff\xfe garbage"


async def test_crlf_lines_decode_and_dead_letters_keep_their_bytes(tmp_path):
    """A line is every byte before ``\\n``: a CRLF warning is accepted (``\\r`` is JSON
    whitespace), and a bad CRLF line is dead-lettered with its ``\\r`` intact."""
    src, dead_path = tmp_path / "in.jsonl", tmp_path / "dead.jsonl"
    src.write_bytes(warning_json(1) + b"\r\n" + b"\x00\r\n" + b"\r\n" + warning_json(2) + b"\r\n")
    dead = JsonLinesDeadLetters(dead_path)
    intake = await JsonLinesIntake.open(src, dead_letters=dead)
    with trio.fail_after(5):
        assert await consume(intake, 2) == ["w-1", "w-2"]
    await intake.aclose()
    await dead.aclose()
    (rec,) = _dead_records(dead_path)
    assert (rec["source_id"], _raw_of(rec)) == ("2", b"\x00\r")  # line 3 was blank: skipped
