"""Read a journal folder without owning it: no lock, no truncation, no file changes.

For inspection tools (``warn-dispatch status``) that may run beside a live engine. The rules are
recovery's (``disk.recover``) without its repairs: the newest valid snapshot, then the valid
prefix of the segments after it, stopping at the first torn or corrupt record. A live writer may
be appending meanwhile; the reader then simply sees a slightly older prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.journal import disk, framing
from engine.journal.disk import JournalError
from engine.journal.framing import SEGMENT_MAGIC


@dataclass(frozen=True)
class JournalImage:
    """What a read-only look found: the base snapshot payload and the records after it."""

    snapshot_payload: bytes | None
    records: list[bytes]
    base: int
    damaged: str | None = None
    """Where the log stops being readable (segment, offset, kind of error), if it does before
    its end; the records are the readable prefix. The engine sets the rest aside at its next
    start; this reader never changes a file."""


def read_journal(
    path: str | Path,
    validate: disk.Validate | None = None,
    validate_snapshot: disk.Validate | None = None,
) -> JournalImage:
    """The snapshot and records of the journal at ``path``; ``JournalError`` if there is none.

    With ``validate`` the records stop at the first one it rejects (see ``JournalImage``)."""
    folder = Path(path)
    if not folder.is_dir():
        raise JournalError(f"{folder}: no journal here")
    segments, snapshots, _ = disk._listing(folder)
    if not segments and not snapshots:
        raise JournalError(f"{folder}: no journal here (no segment or snapshot files)")
    base: int | None = None
    payload: bytes | None = None
    for n in sorted(snapshots, reverse=True):
        try:
            found = framing.decode_snapshot(disk.read_all(snapshots[n]))
        except FileNotFoundError:  # compacted away by a live writer meanwhile
            continue
        if found is not None and disk.check_payload(validate_snapshot, found) is None:
            base, payload = n, found
            break
    if base is None:
        base = min(segments, default=1)
    records: list[bytes] = []
    for i, n in enumerate(sorted(k for k in segments if k >= base)):
        if n != base + i:
            break  # a gap: history after it cannot be trusted
        try:
            data = disk.read_all(segments[n])
        except FileNotFoundError:
            break
        scanner = framing.Scanner(data, SEGMENT_MAGIC)
        for offset, p in scanner:
            reason = disk.check_payload(validate, p)
            if reason is not None:
                where = f"{segments[n]} offset {offset}: unreadable record ({reason})"
                return JournalImage(payload, records, base, where)
            records.append(p)
        assert scanner.result is not None
        if not scanner.result.clean:
            break
    return JournalImage(payload, records, base)
