"""Blocking file operations of the journal: layout, recovery, snapshot files, compaction.

Everything here is synchronous and runs in a worker thread (or at open, before the engine
starts). Raw ``os`` calls only, no buffered Python files, so the bytes on disk are exactly the
bytes written; tests replace this module's ``os`` to inject a crash between any two syscalls.

Layout of a journal folder::

    LOCK                 flock'ed while a process has the journal open
    00000007.snapshot    state covering every record of segments < 7
    00000007.wal         records after that snapshot, in order
    00000008.wal         (only if a snapshot was interrupted before its rename)

The log is the valid prefix of the segments from the newest valid snapshot on: the first torn
or corrupt record ends it. Files numbered below that snapshot are leftovers of an interrupted
compaction and are removed, never replayed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import WarnDispatchError
from engine.journal import framing
from engine.journal.framing import HEADER_SIZE, SEGMENT_MAGIC, Stop

log = logging.getLogger("engine.journal")

_SEGMENT = re.compile(r"^(\d{8})\.wal$")
_SNAPSHOT = re.compile(r"^(\d{8})\.snapshot$")
_TEMP = re.compile(r"^\d{8}\.snapshot\.tmp$")
FILE_MODE = 0o600  # records hold personal data


class JournalError(WarnDispatchError):
    """Base of the journal's errors."""


class JournalCorruptError(JournalError):
    """History is missing (a gap in the segments, or no snapshot for the oldest segment)."""


class JournalLockedError(JournalError):
    """Another process holds the journal open."""


def segment_path(folder: Path, n: int) -> Path:
    return folder / f"{n:08d}.wal"


def snapshot_path(folder: Path, n: int) -> Path:
    return folder / f"{n:08d}.snapshot"


def write_all(fd: int, buf: bytes) -> None:
    """write(2) until every byte is out; regular files only return short on errors."""
    view = memoryview(buf)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read_all(path: Path) -> bytes:
    """The whole file via raw reads."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make creations, renames and unlinks in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_many(fds: list[int], folder: Path | None) -> tuple[int, float]:
    """fsync each fd (and the folder if given); returns (fsync count, seconds taken)."""
    t0 = time.perf_counter()
    for fd in fds:
        os.fsync(fd)
    if folder is not None:
        fsync_dir(folder)
    return len(fds) + (folder is not None), time.perf_counter() - t0


def lock(folder: Path) -> int:
    """Take the folder's exclusive lock (released by the kernel if the process dies)."""
    fd = os.open(folder / "LOCK", os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalLockedError(f"{folder} is open in another process") from None
    return fd


def create_segment(folder: Path, n: int) -> int:
    """Create segment ``n`` with its header; returns an O_APPEND fd. Not yet fsync'ed."""
    fd = os.open(
        segment_path(folder, n), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, FILE_MODE
    )
    try:
        write_all(fd, framing.header(SEGMENT_MAGIC))
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_snapshot(folder: Path, n: int, image: bytes) -> None:
    """Atomically install snapshot ``n``: temp file, fsync, rename, fsync the folder.

    The fsync before the rename matters even under FsyncPolicy.none: compaction deletes the
    segments the snapshot replaces, so a renamed snapshot must never be empty after a power cut.
    """
    final = snapshot_path(folder, n)
    tmp = final.with_name(final.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        try:
            write_all(fd, image)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def compact(folder: Path, base: int) -> list[str]:
    """Delete the segments and snapshots numbered below ``base`` (superseded by snapshot base).

    Segments go first, oldest first; a crash part-way leaves files that the next open removes.
    """
    segments, snapshots = _listing(folder)[:2]
    doomed = [segments[n] for n in sorted(segments) if n < base]
    doomed += [snapshots[n] for n in sorted(snapshots) if n < base]
    for path in doomed:
        os.unlink(path)
    if doomed:
        fsync_dir(folder)
    return [p.name for p in doomed]


def _listing(folder: Path) -> tuple[dict[int, Path], dict[int, Path], list[Path]]:
    segments: dict[int, Path] = {}
    snapshots: dict[int, Path] = {}
    temps: list[Path] = []
    for name in os.listdir(folder):
        if m := _SEGMENT.match(name):
            segments[int(m[1])] = folder / name
        elif m := _SNAPSHOT.match(name):
            snapshots[int(m[1])] = folder / name
        elif _TEMP.match(name):
            temps.append(folder / name)
    return segments, snapshots, temps


@dataclass
class Recovery:
    """What open found: the base snapshot, the records after it, and the segment to append to."""

    base: int
    snapshot_payload: bytes | None
    records: list[bytes]
    tail: int
    tail_size: int
    truncated_bytes: int = 0
    removed: list[str] = field(default_factory=list)
    damaged: list[Damage] = field(default_factory=list)


@dataclass(frozen=True)
class Damage:
    """A record whose frame and checksum are intact but whose contents the owner cannot read
    (another version's format, or a bug that wrote garbage). Everything before it is kept;
    the rest of its segment is moved to ``aside`` (never deleted) and later segments get an
    ``.orphan`` suffix, so the log stays a prefix of what was written."""

    segment: Path
    offset: int
    records: int
    """Records set aside: the damaged one and every later one in its segment."""
    nbytes: int
    aside: Path
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.segment} offset {self.offset}: unreadable record ({self.reason}); kept "
            f"the records before it, set {self.records} records ({self.nbytes} bytes) aside "
            f"in {self.aside.name}"
        )


def _truncate(path: Path, end: int, *, rewrite_header: bool) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, end)
        if rewrite_header:
            os.lseek(fd, 0, os.SEEK_SET)
            write_all(fd, framing.header(SEGMENT_MAGIC))
        os.fsync(fd)
    finally:
        os.close(fd)


Validate = Callable[[bytes], object]
"""The owner's check of one payload (e.g. decode it); raising means the payload is damaged."""


def recover(
    folder: Path,
    validate: Validate | None = None,
    validate_snapshot: Validate | None = None,
) -> Recovery:
    """Find the newest valid snapshot, scan the segments after it, repair the tail.

    With ``validate``, a record that passes its checksum but fails ``validate`` ends the log
    like a torn record does, except that nothing is dropped: see :class:`Damage`. A snapshot
    failing ``validate_snapshot`` is set aside like a corrupt one (an older one is used).
    Idempotent: a crash during recovery leaves a state that recovers to the same log.
    """
    segments, snapshots, temps = _listing(folder)
    removed: list[str] = []
    changed_dir = False
    for tmp in temps:
        os.unlink(tmp)
        removed.append(tmp.name)
        changed_dir = True

    base: int | None = None
    snap_payload: bytes | None = None
    for n in sorted(snapshots, reverse=True):
        payload = framing.decode_snapshot(read_all(snapshots[n]))
        if payload is not None and check_payload(validate_snapshot, payload) is None:
            base, snap_payload = n, payload
            break
        aside = snapshots[n].with_name(snapshots[n].name + ".corrupt")
        log.warning("journal %s: snapshot is corrupt; moved aside to %s", snapshots[n], aside.name)
        os.rename(snapshots[n], aside)
        changed_dir = True
    if base is None:
        base = min(segments, default=1)
        if base != 1:
            raise JournalCorruptError(
                f"{folder}: no valid snapshot, and the oldest segment is {base}: history is missing"
            )

    for path in [segments[n] for n in sorted(segments) if n < base] + [
        snapshots[n] for n in sorted(snapshots) if n < base and n in snapshots
    ]:
        if path.exists():  # a corrupt snapshot may already be moved aside
            os.unlink(path)
            removed.append(path.name)
            changed_dir = True
    if removed:
        log.info("journal %s: removed superseded files %s", folder, removed)

    live = sorted(n for n in segments if n >= base)
    for i, n in enumerate(live):
        if n != base + i:
            raise JournalCorruptError(f"{folder}: segment {base + i:08d} is missing")

    records: list[bytes] = []
    damaged: list[Damage] = []
    truncated = 0
    tail, tail_size = base, HEADER_SIZE
    for i, n in enumerate(live):
        path = segments[n]
        data = read_all(path)
        scanner = framing.Scanner(data, SEGMENT_MAGIC)
        frames = iter(scanner)
        for offset, payload in frames:
            reason = check_payload(validate, payload)
            if reason is None:
                records.append(payload)
                continue
            damage = _set_aside(path, data, offset, 1 + sum(1 for _ in frames), reason)
            log.error("journal %s", damage)
            damaged.append(damage)
            tail, tail_size = n, offset
            _orphan_after(live[i + 1 :], segments)
            changed_dir = True
            break
        else:
            end = scanner.result
            assert end is not None
            tail, tail_size = n, max(end.end, HEADER_SIZE)
            if end.clean:
                continue
        if damaged:
            break
        end = scanner.result
        assert end is not None
        benign = end.stop is Stop.BAD_HEADER and framing.header(SEGMENT_MAGIC).startswith(data)
        if not benign:
            dropped = len(data) - end.end
            truncated += dropped
            log.warning(
                "journal %s: %s at offset %d; truncating there, %d bytes dropped",
                path,
                end.stop.value,
                end.end,
                dropped,
            )
        # A header that never fully reached the disk (killed right after creating the file).
        _truncate(path, end.end, rewrite_header=end.stop is Stop.BAD_HEADER)
        # Only a power cut or disk corruption can leave a bad record before a later segment
        # (rotation happens after the old segment's last write returned): replaying the later
        # one would skip history, so it is set aside, not replayed.
        changed_dir = _orphan_after(live[i + 1 :], segments) or changed_dir
        break

    if not live:
        fd = create_segment(folder, base)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        tail, tail_size = base, HEADER_SIZE
        changed_dir = True
    if changed_dir:
        fsync_dir(folder)
    return Recovery(base, snap_payload, records, tail, tail_size, truncated, removed, damaged)


def check_payload(validate: Validate | None, payload: bytes) -> str | None:
    """None if ``payload`` passes ``validate``, else the kind of error (never its text, which
    may quote the payload)."""
    if validate is None:
        return None
    try:
        validate(payload)
    except Exception as exc:
        return type(exc).__name__
    return None


def _set_aside(path: Path, data: bytes, offset: int, records: int, reason: str) -> Damage:
    """Copy ``data[offset:]`` beside the segment (fsync'ed), then cut the segment there."""
    aside = path.with_name(f"{path.name}.damaged-{offset}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data[offset:])
        os.fsync(fd)
    finally:
        os.close(fd)
    _truncate(path, offset, rewrite_header=False)
    return Damage(path, offset, records, len(data) - offset, aside, reason)


def _orphan_after(later: list[int], segments: dict[int, Path]) -> bool:
    """Give every later segment an ``.orphan`` suffix; True if any was renamed."""
    for n in later:
        lpath = segments[n]
        log.warning("journal %s: follows a cut segment; moved aside as .orphan", lpath)
        os.rename(lpath, lpath.with_name(lpath.name + ".orphan"))
    return bool(later)


def open_tail(folder: Path, n: int) -> int:
    """An O_APPEND fd on segment ``n`` (recovery made its valid prefix its whole length)."""
    return os.open(segment_path(folder, n), os.O_WRONLY | os.O_APPEND)
