"""A journal record whose frame and checksum are intact but whose contents do not decode.

Written by a real engine; the damage is planted by hand: a valid frame around garbage, in the
middle of the log. Recovery keeps every record before it, sets the rest of its segment aside in
a file beside it (never deletes it), reports segment and offset, and the engine opens on the
readable prefix. The read-only reader reports the same place and changes nothing; neither
``serve`` nor ``status`` ever prints a traceback.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from engine import durability
from engine.cli import main
from engine.journal import Journal
from engine.journal.framing import frame
from engine.journal.reader import read_journal
from engine.model import Responders
from tests.test_durability import RULES, busy_history, engine_on, warning

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "engine.cli"]
GARBAGE = frame(b"\xc1 not msgpack, not ours")  # 0xc1 is never valid msgpack


async def damaged_journal(folder: Path) -> tuple[Path, int, bytes]:
    """A journal with a good prefix, then a garbage record, then more good records; returns
    the segment, the garbage's offset and the segment's bytes from there on."""
    async with engine_on(folder, sent=[]) as engine:
        await busy_history(engine)
        await engine.durable()
    (segment,) = sorted(folder.glob("*.wal"))
    offset = segment.stat().st_size
    later = durability.Accepted(0.0, warning("w-after", rid=40), Responders(county_centre="cc"))
    with segment.open("ab") as f:  # the garbage, then a good record written after it
        f.write(GARBAGE + frame(durability.encode(later)))
    return segment, offset, segment.read_bytes()[offset:]


async def test_recovery_keeps_the_prefix_and_sets_the_rest_aside(tmp_path: Path) -> None:
    folder = tmp_path / "j"
    segment, offset, tail = await damaged_journal(folder)
    image = read_journal(folder, durability.decode_record, durability.decode_snapshot)
    assert image.damaged == f"{segment} offset {offset}: unreadable record (JournalFormatError)"
    prefix = image.records
    assert segment.read_bytes()[offset:] == tail  # the reader changed nothing
    async with Journal.open(
        folder,
        validate=durability.decode_record,
        validate_snapshot=durability.decode_snapshot,
    ) as journal:
        (damage,) = journal.damaged
        assert (damage.segment, damage.offset, damage.nbytes) == (segment, offset, len(tail))
        assert damage.aside.read_bytes() == tail  # set aside whole, not dropped
        assert damage.records >= 2  # the garbage and the alert written after it
        assert list(journal.replay()) == prefix
        assert journal.stats.damaged_records == damage.records
    assert segment.stat().st_size == offset  # cut exactly there
    rebuilt = durability.rebuild(None, prefix, RULES)
    assert "w-after" not in rebuilt.states and {"w0", "w4", "w7"} <= set(rebuilt.states)


def test_status_reports_the_damage_in_one_line_and_serve_does_not_crash(tmp_path: Path) -> None:
    import trio

    folder = tmp_path / "j"
    segment, offset, _ = trio.run(damaged_journal, folder)
    result = CliRunner().invoke(main, ["status", "w4", "--journal", str(folder)])
    assert result.exit_code == 0, result.output
    assert f"journal damaged at {segment} offset {offset}" in result.output
    assert "warning w4: fraud" in result.output and "Traceback" not in result.output
    # serve: starts on the readable prefix, says so in its log, never a traceback.
    county = tmp_path / "county"
    gen = [*CLI, "county", "generate", str(county)]
    subprocess.run([*gen, "--residents", "1000"], cwd=ROOT, check=True, capture_output=True)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as err:
        proc = subprocess.Popen(
            [*CLI, "serve", "--county", str(county), "--journal", str(folder)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 30
        while " INFO serving: " not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    log = log_path.read_text()
    assert returncode == 0, log[-2000:]
    assert f"{segment} offset {offset}: unreadable record" in log and "Traceback" not in log
    assert (segment.parent / f"{segment.name}.damaged-{offset}").exists()
