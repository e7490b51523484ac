"""Valid messages for tests and benchmarks, timed from the wall clock so they are live on
any date the suite or a benchmark runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

__all__ = ["warning_bytes"]


def warning_bytes(
    warning_id: str,
    resident: int,
    *,
    now: datetime | None = None,
    kind: str = "fraud",
    level: int = 1,
) -> bytes:
    """A warning about ``resident``, issued a minute before ``now`` and expiring a day after."""
    now = now if now is not None else datetime.now(UTC)
    return json.dumps(
        {
            "id": warning_id,
            "kind": kind,
            "level": level,
            "target": {"type": "resident", "id": resident},
            "issued_at": (now - timedelta(minutes=1)).isoformat(),
            "expires": (now + timedelta(days=1)).isoformat(),
        }
    ).encode()
