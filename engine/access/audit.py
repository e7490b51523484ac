"""The audit log: who did what, when, to which ids, one JSON line per write.

Every write through an API (a warning submitted, an ack, an outcome, a campaign issued or
cancelled, a token created or revoked) is recorded before its answer goes back. A record holds
ids and the principal, never message contents: names and phones stay out of it, as they stay
out of the logs. Lines are appended and flushed one by one (an audit trail is read rarely and
must survive a crash of the process that wrote it).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from engine.access.policy import Principal

__all__ = ["AuditLog", "AuditRecord"]


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    at: str
    token_id: str
    role: str
    subject: str | None
    action: str
    target: str
    outcome: str


class AuditLog:
    """Append-only JSON lines at ``path`` (created 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "ab")

    def record(self, who: Principal, action: str, target: str, outcome: str = "ok") -> AuditRecord:
        """Write one record (flushed before returning) and return it."""
        rec = AuditRecord(
            at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            token_id=who.token_id,
            role=who.role,
            subject=who.subject,
            action=action,
            target=target,
            outcome=outcome,
        )
        self._file.write(msgspec.json.encode(rec) + b"\n")
        self._file.flush()
        return rec

    def close(self) -> None:
        self._file.close()

    @staticmethod
    def read(path: Path) -> list[AuditRecord]:
        """Every record in ``path`` (for tests and for reviewing a day's writes)."""
        dec = msgspec.json.Decoder(AuditRecord)
        return [dec.decode(line) for line in path.read_bytes().splitlines() if line.strip()]
