"""Shared helpers for the transport tests: valid warnings, garbage, and a stand-in engine loop
that decodes with the real model and dead-letters what it rejects (as the engine will)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from engine.model import Action, InvalidWarning, decode_warning
from engine.transport.base import IntakeSource


def warning_json(i: int, now: datetime | None = None) -> bytes:
    """A valid warning instruction, numbered so order can be checked.

    Issued a minute before ``now`` (default: the wall clock, which is what a ``serve`` child
    and an engine opened without ``wall_clock`` use) and expiring a day after it, so it is
    live whatever the date the suite runs on.
    """
    now = now if now is not None else datetime.now(UTC)
    return json.dumps(
        {
            "id": f"w-{i}",
            "kind": "fraud",
            "level": 1 + i % 4,
            "target": {"type": "resident", "id": i},
            "issued_at": (now - timedelta(minutes=1)).isoformat(),
            "expires": (now + timedelta(days=1)).isoformat(),
        }
    ).encode()


def action(i: int, attempt: int = 1) -> Action:
    return Action(
        key=f"w-{i}/0/o1/{attempt}",
        warning_id=f"w-{i}",
        action="notify_officer",
        to=f"officer:{i % 7}",
        kind="fraud",
        level=1,
        step=1,
        attempt=attempt,
    )


_json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_wrong_types = st.fixed_dictionaries(
    {
        "id": st.integers() | st.none() | st.just(""),
        "kind": st.integers() | st.just("Not A Kind!"),
        "level": st.text() | st.integers(min_value=5) | st.integers(max_value=0),
        "target": _json_scalars | st.just({"type": "rocket"}),
        "issued_at": st.text(max_size=10) | st.integers(),
        "expires": st.just("2026-11-26T08:00:00"),  # no time zone: rejected
    }
).map(lambda d: json.dumps(d).encode())
_wrong_json = st.recursive(
    _json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(), c, max_size=3)
).map(lambda v: json.dumps(v).encode())

garbage = st.one_of(st.binary(max_size=200), _wrong_json, _wrong_types).filter(
    lambda b: b"\n" not in b and b.strip() != b""  # one line each; blank lines are skipped
)
"""Bytes that are not a valid warning: random bytes, JSON of the wrong shape, wrong types."""


def is_garbage(raw: bytes) -> bool:
    try:
        decode_warning(raw)
    except InvalidWarning:
        return True
    return False


async def consume(source: IntakeSource, expect_good: int) -> list[str]:
    """What the engine does with a source: decode, dead-letter the bad with the reason, ack the
    good (here nothing to journal). Returns the good warning ids in delivery order."""
    good: list[str] = []
    first = True
    while len(good) < expect_good or first:  # at least one batch, even when expecting none
        first = False
        batch = await source.receive_batch()
        ok: list[str] = []
        for d in batch:
            try:
                good.append(decode_warning(d.raw).id)
                ok.append(d.id)
            except InvalidWarning as exc:
                await source.dead_letter(d, str(exc))
        await source.ack(ok)
    return good
