"""The journal's trio shell: append with group commit, replay, snapshot + compaction.

Appends write to the OS at once, on the trio thread, before the first checkpoint: the order of
``append`` calls is the order on disk, and a snapshot taken with no await between computing its
payload and calling ``snapshot`` covers exactly the records appended before it.

Group commit is leader-based, with no background task: an appender that needs durability and
finds no commit running becomes the leader, waits out the interval (policy ``interval``),
captures everything written so far, fsyncs it in a worker thread, and wakes that whole group.
Appends that arrive while the fsync runs join the next group, whose first waiter leads next.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import trio

from engine.journal import disk, framing
from engine.journal.disk import JournalError

log = logging.getLogger("engine.journal")

Payload = bytes | bytearray | memoryview


class JournalFailedError(JournalError):
    """An fsync or a write failed in a way that cannot be undone; the journal refuses more work.

    After a failed fsync the kernel may have dropped the dirty pages, so retrying proves
    nothing: the process should stop and recover from what is on disk.
    """


@dataclass(frozen=True, slots=True)
class FsyncPolicy:
    """When an append counts as durable.

    - ``always``: fsync before acknowledging each commit group. Survives power loss.
    - ``interval``: fsync at most every ``interval_ms``; an append is acknowledged by the first
      fsync that starts after it (within about ``interval_ms`` plus one fsync). Survives power
      loss for acknowledged records; fewer fsyncs under light load than ``always``.
    - ``none``: acknowledge after write(2). The bytes are in the kernel's page cache, so they
      survive the process being killed (SIGKILL, OOM), but NOT a power cut or kernel crash.
      Snapshots are still fsync'ed (compaction deletes what they replace).
    """

    mode: Literal["always", "interval", "none"] = "always"
    interval_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("always", "interval", "none"):
            raise ValueError(f"unknown fsync mode {self.mode!r}")
        positive = self.interval_ms > 0 and math.isfinite(self.interval_ms)
        if self.mode == "interval" and not positive:
            raise ValueError("interval policy needs a positive interval_ms")

    @classmethod
    def always(cls) -> FsyncPolicy:
        return cls("always")

    @classmethod
    def interval(cls, ms: float) -> FsyncPolicy:
        return cls("interval", ms)

    @classmethod
    def none(cls) -> FsyncPolicy:
        return cls("none")


@dataclass(frozen=True, slots=True)
class JournalStats:
    """Counters since open; ``last_fsync_latency`` is wall-clock seconds of the last commit."""

    records: int = 0
    bytes: int = 0
    appends: int = 0
    fsyncs: int = 0
    commit_groups: int = 0
    last_fsync_latency: float = 0.0
    snapshots: int = 0
    replayed_records: int = 0
    truncated_bytes: int = 0
    damaged_records: int = 0
    """Unreadable records (and those after them) set aside at open."""
    segment: int = 0
    snapshot_segment: int | None = None


class _Group:
    """The appends one fsync acknowledges."""

    __slots__ = ("done", "error", "writes")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: BaseException | None = None
        self.writes = 0


class Journal:
    """An append-only, checksummed, fsync'ed log of opaque byte records. Use ``Journal.open``."""

    def __init__(
        self, folder: Path, policy: FsyncPolicy, lock_fd: int, rec: disk.Recovery, fd: int
    ) -> None:
        self._folder = folder
        self._policy = policy
        self._lock_fd = lock_fd
        self._fd = fd
        self._segment = rec.tail
        self._tail_size = rec.tail_size
        self._snapshot_no: int | None = rec.base if rec.snapshot_payload is not None else None
        self.snapshot_payload: bytes | None = rec.snapshot_payload
        self._records: list[bytes] | None = rec.records
        self.damaged: list[disk.Damage] = rec.damaged
        """Records recovery found unreadable and set aside at open (see ``disk.Damage``)."""
        self._stats = JournalStats(
            replayed_records=len(rec.records),
            truncated_bytes=rec.truncated_bytes,
            damaged_records=sum(d.records for d in rec.damaged),
            segment=rec.tail,
            snapshot_segment=self._snapshot_no,
        )
        self._pending = _Group()
        self._unsynced: set[int] = set()
        self._retired: list[int] = []
        self._dir_dirty = False
        self._leader = False
        self._leader_freed = trio.Event()
        self._last_commit_start = -math.inf
        self._failed: BaseException | None = None
        self._closed = False
        self._snapshot_lock = trio.Lock()

    # -- opening and closing ------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | Path,
        fsync: FsyncPolicy | None = None,
        *,
        validate: disk.Validate | None = None,
        validate_snapshot: disk.Validate | None = None,
    ) -> AsyncIterator[Journal]:
        """Lock the folder, recover (truncating a torn tail), and yield the journal.

        ``validate`` / ``validate_snapshot``: the owner's check of a payload; a record that
        fails it is set aside with everything after it (``journal.damaged`` says what and
        where), never dropped, so the owner never replays a log it cannot read.
        On exit everything written is fsync'ed (under every policy), then files are closed.
        """
        folder = Path(path)
        policy = fsync if fsync is not None else FsyncPolicy.always()
        journal = await trio.to_thread.run_sync(
            cls._open_sync, folder, policy, validate, validate_snapshot
        )
        ok = False
        try:
            yield journal
            ok = True
        finally:
            with trio.CancelScope(shield=True):
                await journal._shutdown(raise_errors=ok)

    @classmethod
    def _open_sync(
        cls,
        folder: Path,
        policy: FsyncPolicy,
        validate: disk.Validate | None = None,
        validate_snapshot: disk.Validate | None = None,
    ) -> Journal:
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        if created:
            disk.fsync_dir(folder.parent)
        lock_fd = disk.lock(folder)
        try:
            rec = disk.recover(folder, validate, validate_snapshot)
            fd = disk.open_tail(folder, rec.tail)
        except BaseException:
            disk.os.close(lock_fd)
            raise
        return cls(folder, policy, lock_fd, rec, fd)

    async def _shutdown(self, *, raise_errors: bool) -> None:
        try:
            if self._failed is None and not self._closed:
                await self.sync()
        except BaseException:
            if raise_errors:
                raise
            log.exception("journal %s: final sync failed", self._folder)
        finally:
            self._closed = True
            while self._leader:  # a commit thread may still hold our fds
                await self._leader_freed.wait()
            for fd in [*self._retired, self._fd, self._lock_fd]:
                with suppress(OSError):
                    disk.os.close(fd)
            self._retired.clear()
            group, self._pending = self._pending, _Group()
            if not group.done.is_set():
                group.error = JournalError("journal closed before the record was durable")
                group.done.set()

    # -- reading ------------------------------------------------------------------------------

    def replay(self) -> Iterator[bytes]:
        """The records after ``snapshot_payload`` that were on disk at open, in append order.

        For start-up only: a ``snapshot()`` releases them (the snapshot supersedes them).
        """
        if self._records is None:
            raise JournalError("replay() after snapshot(): the records are superseded")
        return iter(self._records)

    @property
    def stats(self) -> JournalStats:
        return replace(self._stats, segment=self._segment, snapshot_segment=self._snapshot_no)

    @property
    def policy(self) -> FsyncPolicy:
        return self._policy

    @property
    def path(self) -> Path:
        return self._folder

    # -- appending ----------------------------------------------------------------------------

    async def append(self, payload: Payload) -> None:
        """Append one record; returns once it is durable under the policy."""
        await self.append_many((payload,))

    async def append_many(self, payloads: Iterable[Payload]) -> None:
        """Append records with one write(2); returns once all are durable under the policy.

        If this raises or is cancelled the records may still be on disk (at-least-once): replay
        must tolerate a record whose intake was never acknowledged.
        """
        group = self._write(payloads)
        if group is None or self._policy.mode == "none":
            await trio.lowlevel.checkpoint()
            return
        await self._await_durable(group)

    def write_nowait(self, payloads: Iterable[Payload]) -> None:
        """Write records to the OS now, without waiting for durability (no checkpoint).

        For a single writer that must record inputs in the order it applies them, inside one
        synchronous step; :meth:`sync` later makes them durable with group commit.
        """
        self._write(payloads)

    def _check_usable(self) -> None:
        if self._closed:
            raise JournalError("journal is closed")
        if self._failed is not None:
            raise JournalFailedError("journal failed earlier; restart and recover") from (
                self._failed
            )

    def _write(self, payloads: Iterable[Payload]) -> _Group | None:
        self._check_usable()
        buf, count = framing.frame_many(payloads)
        if count == 0:
            return None
        start = self._tail_size
        try:
            disk.write_all(self._fd, buf)
        except OSError as exc:
            # Cut a partial record off so later records are not hidden behind it on replay.
            try:
                disk.os.ftruncate(self._fd, start)
            except OSError as exc2:
                self._failed = exc2
                raise JournalFailedError("write failed and the partial record stayed") from exc
            raise JournalError(f"journal write failed: {exc}") from exc
        self._tail_size = start + len(buf)
        self._unsynced.add(self._fd)
        s = self._stats
        self._stats = replace(
            s, records=s.records + count, bytes=s.bytes + len(buf), appends=s.appends + 1
        )
        group = self._pending
        group.writes += 1
        return group

    async def sync(self) -> None:
        """Make everything written so far durable (and close retired segments), any policy."""
        self._check_usable()
        if self._unsynced or self._retired or self._dir_dirty:
            group = self._pending
            group.writes += 1
            await self._await_durable(group)
            return
        while self._leader:  # an fsync in flight may cover earlier writes
            await self._leader_freed.wait()
        self._check_usable()
        await trio.lowlevel.checkpoint()

    async def _await_durable(self, group: _Group) -> None:
        while not group.done.is_set():
            if not self._leader:
                await self._lead()
            else:
                await self._leader_freed.wait()
        if group.error is not None:
            if isinstance(group.error, JournalError):
                raise group.error
            raise JournalFailedError(f"fsync failed: {group.error}") from group.error

    async def _lead(self) -> None:
        self._leader = True
        try:
            if self._policy.mode == "interval":
                await trio.sleep_until(self._last_commit_start + self._policy.interval_ms / 1000)
            else:
                # One scheduling round: appenders woken by the previous commit write their next
                # records now and join this group instead of waiting a whole fsync for the next.
                await trio.lowlevel.checkpoint()
            self._last_commit_start = trio.current_time()
            group, self._pending = self._pending, _Group()
            fds = sorted(self._unsynced)
            self._unsynced.clear()
            retired, self._retired = self._retired, []
            folder = self._folder if self._dir_dirty else None
            self._dir_dirty = False
            try:
                n, seconds = await trio.to_thread.run_sync(disk.fsync_many, fds, folder)
            except BaseException as exc:
                # Every waiter of this group (the leader too) raises JournalFailedError.
                self._failed = group.error = exc
                group.done.set()
                if not isinstance(exc, OSError):
                    raise
                return
            for fd in retired:
                disk.os.close(fd)
            s = self._stats
            self._stats = replace(
                s,
                fsyncs=s.fsyncs + n,
                commit_groups=s.commit_groups + 1,
                last_fsync_latency=seconds,
            )
            group.done.set()
        finally:
            self._leader = False
            freed, self._leader_freed = self._leader_freed, trio.Event()
            freed.set()

    # -- snapshots ----------------------------------------------------------------------------

    async def snapshot(self, payload: Payload) -> None:
        """Install ``payload`` as the state covering every record appended before this call.

        Starts a new segment at once (no checkpoint before that), then writes the snapshot
        atomically and deletes the segments and snapshots it supersedes. A crash at any point
        reopens to either the old snapshot plus all records, or the new snapshot plus the
        records after it: never a mix, never a record twice.
        """
        self._check_usable()
        image = framing.encode_snapshot(payload)
        new = self._segment + 1
        fd = disk.create_segment(self._folder, new)
        self._retired.append(self._fd)
        self._fd, self._segment, self._tail_size = fd, new, framing.HEADER_SIZE
        self._unsynced.add(fd)
        self._dir_dirty = True
        self._records = None
        async with self._snapshot_lock:
            await self.sync()
            try:
                await trio.to_thread.run_sync(disk.write_snapshot, self._folder, new, image)
            except OSError as exc:
                # The journal stays usable: the old snapshot and every segment are intact.
                raise JournalError(f"snapshot {new:08d} failed: {exc}") from exc
            if self._snapshot_no is None or new > self._snapshot_no:
                self._snapshot_no = new
            self._stats = replace(self._stats, snapshots=self._stats.snapshots + 1)
            try:
                await trio.to_thread.run_sync(disk.compact, self._folder, new)
            except OSError:
                # Harmless: the next compaction or open removes what is left.
                log.warning("journal %s: compaction failed", self._folder, exc_info=True)
