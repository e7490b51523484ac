"""Durability layer: an append-only, checksummed, group-committed journal with snapshots.

``framing`` is the pure record format, ``disk`` the blocking file operations and recovery,
``journal`` the trio shell the engine uses::

    async with Journal.open(path, fsync=FsyncPolicy.always()) as j:
        state = rebuild(j.snapshot_payload, j.replay())
        await j.append(record)        # returns once durable: acknowledge intake after this
        await j.snapshot(encode(state))
"""

from engine.journal.disk import JournalCorruptError, JournalError, JournalLockedError
from engine.journal.framing import ScanEnd, Scanner, Stop, frame, scan
from engine.journal.journal import FsyncPolicy, Journal, JournalFailedError, JournalStats

__all__ = [
    "FsyncPolicy",
    "Journal",
    "JournalCorruptError",
    "JournalError",
    "JournalFailedError",
    "JournalLockedError",
    "JournalStats",
    "ScanEnd",
    "Scanner",
    "Stop",
    "frame",
    "scan",
]
