"""API tokens: created once, shown once, stored only as a hash, checked in constant time.

A token reads ``wd_<id>_<secret>``: the id (public, 8 hex digits) finds the record, the secret
(32 random bytes, URL-safe base64) proves possession. The store keeps SHA-256 of the secret,
not the secret: an API token is 256 random bits, so a slow password hash would add cost
without adding safety (there is nothing to guess), which is also how GitHub and others store
theirs. Comparisons use :func:`hmac.compare_digest`.

The store is a JSON file (``<cache>/tokens.json`` by default, mode 0600), written whole to a
temporary file and renamed, so a crash never leaves half a store. Secrets never enter the
repository, the logs or this file.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from engine.access.policy import ROLES, Role
from engine.errors import WarnDispatchError

log = logging.getLogger("engine.access.tokens")

__all__ = ["TokenError", "TokenRecord", "TokenStore", "new_token", "parse_token"]

_TOKEN = re.compile(r"^wd_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")


class TokenError(WarnDispatchError):
    """A token store that cannot be read, or a token that does not fit the format."""


class TokenRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the store keeps of one token (never the secret)."""

    id: str
    role: Role
    subject: str | None = None
    label: str = ""
    created: str = ""
    sha256: str
    revoked: bool = False


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(role: Role, subject: str | None, label: str = "") -> tuple[str, TokenRecord]:
    """A fresh token (to show once) and the record to store."""
    if role not in ROLES:
        raise TokenError(f"role: expected one of {', '.join(ROLES)}, not {role!r}")
    token_id = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    record = TokenRecord(
        id=token_id,
        role=role,
        subject=subject,
        label=label,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        sha256=_digest(secret),
    )
    return f"wd_{token_id}_{secret}", record


def parse_token(token: str) -> tuple[str, str]:
    """``(id, secret)``, or TokenError without echoing the token."""
    m = _TOKEN.match(token.strip())
    if m is None:
        raise TokenError("token: expected wd_<8 hex digits>_<43 characters>")
    return m.group(1), m.group(2)


class TokenStore:
    """Token records on disk. Load with :meth:`load`; every change is written at once."""

    def __init__(self, path: Path, records: dict[str, TokenRecord]) -> None:
        self.path = path
        self.records = records
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    @staticmethod
    def _read(path: Path) -> dict[str, TokenRecord]:
        try:
            records = msgspec.json.decode(path.read_bytes(), type=list[TokenRecord])
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise TokenError(f"{path}: not a token store ({exc})") from exc
        return {r.id: r for r in records}

    @classmethod
    def load(cls, path: Path) -> TokenStore:
        if not path.exists():
            return cls(path, {})
        return cls(path, cls._read(path))

    def refresh(self) -> None:
        """Re-read the file if another process changed it (``token create`` or ``revoke``
        beside a running server): a revoked token stops working at its next request. A file
        that cannot be read keeps the records held (and says so in the log)."""
        stamp = self._stamp()
        if stamp == self._seen:
            return
        self._seen = stamp
        try:
            self.records = self._read(self.path) if stamp is not None else {}
        except (OSError, TokenError) as exc:
            log.error("token store not re-read, keeping %d tokens: %s", len(self.records), exc)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = msgspec.json.format(msgspec.json.encode(list(self.records.values())))
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tokens-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._seen = self._stamp()
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def create(self, role: Role, subject: str | None, label: str = "") -> str:
        """Store a new token's record and return the token (shown once, never again)."""
        token, record = new_token(role, subject, label)
        while record.id in self.records:  # 32-bit ids: a clash is rare, never silent
            token, record = new_token(role, subject, label)
        self.records[record.id] = record
        self._save()
        return token

    def revoke(self, token_id: str) -> bool:
        """Revoke a token by id; False if there is no such token."""
        record = self.records.get(token_id)
        if record is None:
            return False
        self.records[token_id] = msgspec.structs.replace(record, revoked=True)
        self._save()
        return True

    def authenticate(self, token: str) -> TokenRecord | None:
        """The record of a valid, unrevoked token; None otherwise (never says which part
        failed). Hashes even when the id is unknown, so timing does not tell ids apart."""
        try:
            token_id, secret = parse_token(token)
        except TokenError:
            return None
        self.refresh()
        record = self.records.get(token_id)
        expected = record.sha256 if record is not None else "0" * 64
        ok = hmac.compare_digest(_digest(secret), expected)
        if record is None or record.revoked or not ok:
            return None
        return record
