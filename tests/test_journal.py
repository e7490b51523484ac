"""The journal's shell: recovery of torn and corrupt tails, snapshots, crashes, group commit."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import trio

from engine.journal import (
    FsyncPolicy,
    Journal,
    JournalCorruptError,
    JournalError,
    JournalFailedError,
    JournalLockedError,
    disk,
)
from engine.journal.framing import HEADER_SIZE, SEGMENT_MAGIC, frame, header

PII = b"Zhang San 13800138000"  # must never show up in a log line


def rec(i: int) -> bytes:
    return b"%06d|" % i + PII + b"x" * (i % 7)


def rid(payload: bytes) -> int:
    return int(payload.split(b"|", 1)[0])


async def read_state(path: Path) -> tuple[bytes | None, list[bytes]]:
    async with Journal.open(path) as j:
        return j.snapshot_payload, list(j.replay())


def files(path: Path) -> set[str]:
    return set(os.listdir(path)) - {"LOCK"}


# -- torn and corrupt tails ------------------------------------------------------------------


async def test_torn_tail_at_every_offset_of_the_last_records(tmp_path, caplog):
    src = tmp_path / "src"
    payloads = [rec(i) for i in range(12)]
    async with Journal.open(src) as j:
        await j.append_many(payloads[:9])
        for p in payloads[9:]:
            await j.append(p)
    seg = (src / "00000001.wal").read_bytes()
    ends, pos = [], HEADER_SIZE
    for p in payloads:
        pos += 8 + len(p)
        ends.append(pos)
    assert ends[-1] == len(seg)
    first_cut = ends[-4]  # every offset inside the last three records
    caplog.set_level(logging.WARNING, "engine.journal")
    for cut in [0, 3, HEADER_SIZE, *range(first_cut, len(seg) + 1)]:
        caplog.clear()
        dst = tmp_path / f"cut{cut}"
        dst.mkdir()
        (dst / "00000001.wal").write_bytes(seg[:cut])
        whole = [p for p, e in zip(payloads, ends, strict=True) if e <= cut]
        async with Journal.open(dst) as j:
            assert list(j.replay()) == whole
            torn = cut >= HEADER_SIZE and cut not in ends and cut != HEADER_SIZE
            assert j.stats.truncated_bytes == (
                cut - max([HEADER_SIZE, *ends[: len(whole)]]) if torn else 0
            )
            await j.append(b"after")
        if torn:
            [msg] = [r.getMessage() for r in caplog.records]
            assert "00000001.wal" in msg and f"offset {cut - j.stats.truncated_bytes}" in msg
            assert f"{j.stats.truncated_bytes} bytes dropped" in msg
        assert PII.decode() not in caplog.text
        _, again = await read_state(dst)
        assert again == [*whole, b"after"]


async def test_flipped_byte_in_the_tail_truncates_at_the_last_good_record(tmp_path, caplog):
    payloads = [rec(i) for i in range(10)]
    async with Journal.open(tmp_path) as j:
        await j.append_many(payloads)
    seg = tmp_path / "00000001.wal"
    data = bytearray(seg.read_bytes())
    bad_at = len(data) - 3  # inside the last record's payload
    data[bad_at] ^= 0x40
    seg.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, "engine.journal"):
        _, records = await read_state(tmp_path)
    assert records == payloads[:-1]
    assert "crc mismatch" in caplog.text and PII.decode() not in caplog.text
    assert seg.stat().st_size == len(data) - 8 - len(payloads[-1])


async def test_corruption_before_a_later_segment_sets_the_later_one_aside(tmp_path, caplog):
    one = header(SEGMENT_MAGIC) + frame(b"a") + frame(b"b") + frame(b"c")
    bad = bytearray(one)
    bad[-1] ^= 1
    (tmp_path / "00000001.wal").write_bytes(bytes(bad))
    (tmp_path / "00000002.wal").write_bytes(header(SEGMENT_MAGIC) + frame(b"d"))
    with caplog.at_level(logging.WARNING, "engine.journal"):
        _, records = await read_state(tmp_path)
    assert records == [b"a", b"b"]  # a prefix: never b"d" after a gap
    assert files(tmp_path) == {"00000001.wal", "00000002.wal.orphan"}


async def test_zero_length_new_segment(tmp_path, caplog):
    async with Journal.open(tmp_path) as j:
        await j.append(b"a")
        await j.snapshot(b"S")
        await j.append(b"b")
    (tmp_path / "00000002.wal").write_bytes(b"")  # killed between O_CREAT and the header
    with caplog.at_level(logging.WARNING, "engine.journal"):
        snap, records = await read_state(tmp_path)
    assert (snap, records) == (b"S", [])
    assert caplog.text == ""  # a missing header is not data loss
    async with Journal.open(tmp_path) as j:
        await j.append(b"c")
    assert await read_state(tmp_path) == (b"S", [b"c"])


async def test_missing_history_is_an_error_not_a_silent_gap(tmp_path):
    seg = header(SEGMENT_MAGIC) + frame(b"a")
    (tmp_path / "00000001.wal").write_bytes(seg)
    (tmp_path / "00000003.wal").write_bytes(seg)
    with pytest.raises(JournalCorruptError, match="00000002"):
        await read_state(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "00000002.wal").write_bytes(seg)
    with pytest.raises(JournalCorruptError, match="history is missing"):
        await read_state(other)


async def test_second_open_is_refused(tmp_path):
    async with Journal.open(tmp_path):
        with pytest.raises(JournalLockedError):
            async with Journal.open(tmp_path):
                pass


async def test_empty_payload_is_refused_and_writes_nothing(tmp_path):
    async with Journal.open(tmp_path) as j:
        with pytest.raises(ValueError):
            await j.append_many([b"ok", b""])
        await j.append(b"a")
    assert await read_state(tmp_path) == (None, [b"a"])


# -- snapshots and compaction ----------------------------------------------------------------


async def test_snapshot_compacts_and_startup_reads_only_snapshot_and_tail(tmp_path, monkeypatch):
    async with Journal.open(tmp_path) as j:
        for gen in range(3):
            await j.append_many([rec(gen * 100 + i) for i in range(50)])
            await j.snapshot(b"state-%d" % gen)
        await j.append_many([rec(i) for i in range(900, 905)])
        assert j.stats.snapshots == 3 and j.stats.segment == 4
        with pytest.raises(JournalError):
            j.replay()
    assert files(tmp_path) == {"00000004.snapshot", "00000004.wal"}
    read: list[str] = []
    real = disk.read_all
    monkeypatch.setattr(disk, "read_all", lambda p: read.append(p.name) or real(p))
    async with Journal.open(tmp_path) as j:
        assert j.snapshot_payload == b"state-2"
        assert list(j.replay()) == [rec(i) for i in range(900, 905)]
    assert sorted(read) == ["00000004.snapshot", "00000004.wal"]


async def test_leftovers_of_an_interrupted_compaction_are_removed_not_replayed(tmp_path):
    async with Journal.open(tmp_path) as j:
        await j.append(b"old")
        await j.snapshot(b"S1")
        await j.append(b"mid")
        await j.snapshot(b"S2")
        await j.append(b"new")
    # put back what compaction deleted, as if killed before the unlinks
    (tmp_path / "00000001.wal").write_bytes(header(SEGMENT_MAGIC) + frame(b"old"))
    (tmp_path / "00000002.wal").write_bytes(header(SEGMENT_MAGIC) + frame(b"mid"))
    (tmp_path / "00000002.snapshot.tmp").write_bytes(b"half")
    assert await read_state(tmp_path) == (b"S2", [b"new"])
    assert files(tmp_path) == {"00000003.snapshot", "00000003.wal"}


async def test_corrupt_newest_snapshot_falls_back_when_history_allows(tmp_path, caplog):
    # killed between segment rotation and the rename: segments 1 and 2, snapshot 2 corrupt
    (tmp_path / "00000001.wal").write_bytes(header(SEGMENT_MAGIC) + frame(b"a"))
    (tmp_path / "00000002.wal").write_bytes(header(SEGMENT_MAGIC) + frame(b"b"))
    (tmp_path / "00000002.snapshot").write_bytes(b"WDJS garbage")
    with caplog.at_level(logging.WARNING, "engine.journal"):
        assert await read_state(tmp_path) == (None, [b"a", b"b"])
    assert "snapshot is corrupt" in caplog.text


class Crash(OSError):
    """An injected failure: from here on the 'process' is dead."""


class FaultyOs:
    """Stand-in for ``os`` in engine.journal.disk: the k-th mutating syscall and all later ones
    fail, as if the process had been killed there (closing fds still works: no disk effect)."""

    COUNTED = frozenset({"open", "write", "fsync", "rename", "unlink", "ftruncate", "lseek"})

    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> object:
        real = getattr(os, name)
        if name not in self.COUNTED:
            return real

        def call(*args: object, **kwargs: object) -> object:
            self.calls.append(name)
            if len(self.calls) > self.fail_at:
                raise Crash(errno.EIO, f"crash before {name} #{len(self.calls)}")
            return real(*args, **kwargs)

        return call


def ids_state(snapshot: bytes | None, records: list[bytes]) -> list[int]:
    base = msgspec.msgpack.decode(snapshot) if snapshot is not None else []
    return [*base, *(rid(r) for r in records)]


async def crash_sweep(tmp_path: Path, prepare: Callable, action: Callable, want: Callable) -> int:
    """Run ``action`` against a fresh copy with a crash at step k = 0, 1, ...; after each crash a
    clean reopen must give ``want`` (or ``want`` minus the unfinished step). Returns the steps."""
    template = tmp_path / "template"
    await prepare(template)
    for k in range(1000):
        work = tmp_path / f"k{k}"
        shutil.copytree(template, work)
        faulty = FaultyOs(k)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(disk, "os", faulty)
            try:
                await action(work)
            except (OSError, JournalError):
                assert len(faulty.calls) > k  # only the injected crash may fail it
        await want(work)
        if len(faulty.calls) <= k:  # finished before the crash point: every step was covered
            return k
    raise AssertionError("action never finished")


async def test_crash_at_every_step_of_snapshot(tmp_path, caplog):
    caplog.set_level(logging.CRITICAL, "engine.journal")

    async def prepare(path: Path) -> None:
        async with Journal.open(path) as j:
            await j.append_many([rec(i) for i in range(5)])
            await j.snapshot(msgspec.msgpack.encode(list(range(5))))
            await j.append_many([rec(i) for i in range(5, 12)])

    async def action(path: Path) -> None:
        async with Journal.open(path) as j:
            await j.snapshot(msgspec.msgpack.encode(list(range(12))))

    async def want(path: Path) -> None:
        snap, records = await read_state(path)
        state = ids_state(snap, records)
        assert state == list(range(12)), (snap, records)
        assert snap in (msgspec.msgpack.encode(list(range(5))), msgspec.msgpack.encode(state))
        async with Journal.open(path) as j:  # and it stays usable
            await j.append(rec(12))
        assert ids_state(*await read_state(path)) == list(range(13))

    steps = await crash_sweep(tmp_path, prepare, action, want)
    assert steps > 10  # open, rotation, syncs, temp file, rename, folder fsync, unlinks


async def test_crash_at_every_step_of_recovery(tmp_path, caplog):
    caplog.set_level(logging.CRITICAL, "engine.journal")

    async def prepare(path: Path) -> None:
        async with Journal.open(path) as j:
            await j.append_many([rec(i) for i in range(4)])
            await j.snapshot(msgspec.msgpack.encode(list(range(4))))
            await j.append_many([rec(i) for i in range(4, 9)])
        (path / "00000001.wal").write_bytes(header(SEGMENT_MAGIC) + frame(rec(0)))  # leftover
        (path / "00000002.snapshot.tmp").write_bytes(b"half")
        with open(path / "00000002.wal", "ab") as f:
            f.write(frame(rec(9))[:-2])  # torn tail

    async def action(path: Path) -> None:
        async with Journal.open(path):
            pass

    async def want(path: Path) -> None:
        assert ids_state(*await read_state(path)) == list(range(9))

    assert await crash_sweep(tmp_path, prepare, action, want) > 5


class TracingOs:
    """Stand-in for ``os`` that records mutating syscalls with the file they touch."""

    def __init__(self) -> None:
        self.trace: list[tuple[str, str]] = []
        self._names: dict[int, str] = {}

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    def open(self, path: object, flags: int, mode: int = 0o777) -> int:
        fd = os.open(path, flags, mode)  # type: ignore[arg-type]
        self._names[fd] = Path(str(path)).name
        return fd

    def _log(self, name: str, what: object) -> None:
        label = self._names.get(what, "?") if isinstance(what, int) else Path(str(what)).name
        self.trace.append((name, label))

    def write(self, fd: int, buf: bytes) -> int:
        self._log("write", fd)
        return os.write(fd, buf)

    def fsync(self, fd: int) -> None:
        self._log("fsync", fd)
        os.fsync(fd)

    def rename(self, a: object, b: object) -> None:
        self._log("rename", b)
        os.rename(a, b)  # type: ignore[arg-type]

    def unlink(self, path: object) -> None:
        self._log("unlink", path)
        os.unlink(path)  # type: ignore[arg-type]


async def test_snapshot_syscall_order_survives_a_power_cut(tmp_path, monkeypatch):
    """What a power cut needs (a SIGKILL test cannot see it): the snapshot's bytes are fsync'ed
    before the rename, the rename and the new segment are made durable by a folder fsync, and
    only then are the superseded files unlinked."""
    tracer = TracingOs()
    monkeypatch.setattr(disk, "os", tracer)
    async with Journal.open(tmp_path, fsync=FsyncPolicy.none()) as j:
        await j.append(b"a")  # not yet fsync'ed: the snapshot must sync it first
        tracer.trace.clear()
        await j.snapshot(b"S")
    t = tracer.trace
    folder = tmp_path.name
    i_fsync_tmp = t.index(("fsync", "00000002.snapshot.tmp"))
    i_rename = t.index(("rename", "00000002.snapshot"))
    i_dir = t.index(("fsync", folder), i_rename)
    i_unlink = t.index(("unlink", "00000001.wal"))
    assert t.index(("write", "00000002.snapshot.tmp")) < i_fsync_tmp < i_rename < i_dir < i_unlink
    # the old segment and the new segment's directory entry are synced before the snapshot
    assert t.index(("fsync", folder)) < i_fsync_tmp
    assert t.index(("fsync", "00000001.wal")) < i_fsync_tmp


# -- appending, group commit, policies -------------------------------------------------------


async def test_group_commit_many_concurrent_appenders(tmp_path):
    n = 300
    async with Journal.open(tmp_path, fsync=FsyncPolicy.always()) as j:
        done: list[int] = []

        async def one(i: int) -> None:
            await j.append(rec(i))
            done.append(i)

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
        stats = j.stats
    assert sorted(done) == list(range(n))
    assert stats.records == n and 1 <= stats.commit_groups < n and stats.fsyncs < n
    _, records = await read_state(tmp_path)
    assert sorted(rid(r) for r in records) == list(range(n))


async def test_always_acknowledges_only_after_fsync(tmp_path, monkeypatch):
    synced: list[int] = []
    real = disk.fsync_many

    def spy(fds: list[int], folder: Path | None) -> tuple[int, float]:
        out = real(fds, folder)
        synced.extend(fds)
        return out

    monkeypatch.setattr(disk, "fsync_many", spy)
    async with Journal.open(tmp_path) as j:
        for i in range(5):
            before = len(synced)
            await j.append(rec(i))
            assert len(synced) == before + 1  # this append's segment


async def test_interval_policy_acknowledges_within_the_interval(tmp_path, autojump_clock):
    interval = 0.010
    latencies: list[float] = []
    async with Journal.open(tmp_path, fsync=FsyncPolicy.interval(interval * 1000)) as j:
        start = trio.current_time()
        gaps = [0.0, 0.001, 0.0005, 0.013, 0.002, 0.0, 0.030, 0.0099, 0.004]
        for i, gap in enumerate(gaps * 3):
            await trio.sleep(gap)
            t0 = trio.current_time()
            await j.append(rec(i))
            latencies.append(trio.current_time() - t0)
        elapsed = trio.current_time() - start
        # a burst within one interval shares one fsync
        groups = j.stats.commit_groups
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(j.append, rec(100 + i))
        assert j.stats.commit_groups == groups + 1
    assert max(latencies) <= interval + 1e-9
    assert groups <= elapsed / interval + 1
    assert any(lat > 0 for lat in latencies)  # it does wait for the interval


async def test_interval_policy_real_clock(tmp_path):
    interval = 0.005
    async with Journal.open(tmp_path, fsync=FsyncPolicy.interval(interval * 1000)) as j:
        with trio.fail_after(5):
            lat = []
            for i in range(10):
                t0 = trio.current_time()
                await j.append(rec(i))
                lat.append(trio.current_time() - t0)
                await trio.sleep(0.001)
    lat.sort()
    assert lat[len(lat) // 2] < interval + 0.05  # generous: the machine is shared
    assert j.stats.commit_groups <= 10


async def test_none_policy_does_not_fsync_appends_but_close_does(tmp_path):
    async with Journal.open(tmp_path, fsync=FsyncPolicy.none()) as j:
        await j.append_many([rec(i) for i in range(10)])
        assert j.stats.fsyncs == 0
    assert j.stats.fsyncs >= 1
    assert len((await read_state(tmp_path))[1]) == 10


async def test_failed_fsync_fails_the_journal(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.CRITICAL, "engine.journal")

    def broken(fds: list[int], folder: Path | None) -> tuple[int, float]:
        raise OSError(errno.EIO, "fsync: I/O error")

    async with Journal.open(tmp_path) as j:
        await j.append(b"a")
        monkeypatch.setattr(disk, "fsync_many", broken)
        with pytest.raises(JournalFailedError):
            await j.append(b"b")
        with pytest.raises(JournalFailedError):
            await j.append(b"c")


async def test_failed_write_is_rolled_back(tmp_path, caplog):
    class HalfWrite:
        def __getattr__(self, name: str) -> object:
            return getattr(os, name)

        @staticmethod
        def write(fd: int, buf: bytes) -> int:
            os.write(fd, bytes(buf[: len(buf) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")

    async with Journal.open(tmp_path) as j:
        await j.append(b"a")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(disk, "os", HalfWrite())
            with pytest.raises(JournalError, match="No space"):
                await j.append(b"bbbbbbbbbbbbbbbb")
        await j.append(b"c")
    with caplog.at_level(logging.WARNING, "engine.journal"):
        assert await read_state(tmp_path) == (None, [b"a", b"c"])
    assert caplog.text == ""


def test_policy_validation():
    with pytest.raises(ValueError):
        FsyncPolicy.interval(0)
    with pytest.raises(ValueError):
        FsyncPolicy("sometimes")  # type: ignore[arg-type]
