"""What :meth:`engine.stats.Stats.summary` returns: plain msgspec structs, JSON-encodable.

Times are seconds. Percentiles are ``None`` where there were no samples, so JSON stays valid
(no NaN) and a reader can tell "no data" from "zero".
"""

from __future__ import annotations

import msgspec

OUTCOMES: tuple[str, ...] = (
    "dissuaded",
    "defrauded",
    "unreachable",
    "false_alarm",
    "resolved",
    "expired",
    "cancelled",
)
"""Reported outcomes (``engine.model.OutcomeKind``) plus how the engine itself ends warnings."""


class Percentiles(msgspec.Struct, frozen=True):
    """p50/p90/p99 of ``n`` samples (seconds)."""

    n: int = 0
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


class Counters(msgspec.Struct, frozen=True, kw_only=True):
    """The same counters at every level: officer, station, county.

    ``messages_sent`` = ``chats`` (one-to-one) + ``campaign_messages`` (chat and SMS) +
    ``warning_chats`` (chat actions of the contact ladder).
    """

    contacts: int = 0
    messages_sent: int = 0
    chats: int = 0
    campaign_messages: int = 0
    sms: int = 0
    warning_chats: int = 0
    confirm_requests: int = 0
    warnings: int = 0
    notifications: int = 0
    warnings_handled: int = 0
    escalations: int = 0
    deadlines_missed: int = 0
    calls: int = 0
    visits: int = 0
    outcomes: dict[str, int] = {}
    time_to_ack: Percentiles = Percentiles()
    time_to_reach: Percentiles = Percentiles()


class OfficerStats(msgspec.Struct, frozen=True, kw_only=True):
    """One officer. ``warnings`` are those first notified to this officer (their own);
    ``warnings_handled`` those this officer acknowledged; ``deadlines_missed`` notifications to
    this officer that timed out."""

    key: str
    station: str
    role: str
    counters: Counters


class StationStats(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    officers: int
    counters: Counters


class GridStats(msgspec.Struct, frozen=True, kw_only=True):
    """Prevention reached vs warnings raised in one grid."""

    key: str
    residents: int
    prevention_messages: int
    antifraud_messages: int
    urgent_messages: int
    warnings: int
    fraud_warnings: int


class Histogram(msgspec.Struct, frozen=True):
    """``counts[i]`` samples in ``[lower[i], lower[i+1])`` seconds; the last bin is open-ended
    (no infinity, which JSON cannot carry)."""

    lower: list[float]
    counts: list[int]


class FunnelStep(msgspec.Struct, frozen=True):
    label: str
    warnings: int


class ExerciseStats(msgspec.Struct, frozen=True, kw_only=True):
    """Exercises (CAP status Exercise), counted apart: none of their traffic is in the officer,
    station, grid or county figures, so a drill never shows as a missed deadline."""

    warnings: int = 0
    actions: dict[str, int] = {}
    acknowledged: int = 0
    outcomes: dict[str, int] = {}
    campaigns: int = 0
    campaign_notices: int = 0


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the recorder knows, aggregated. ``hours`` is the length of the hourly series."""

    hours: int
    warnings: int
    open_warnings: int
    county: Counters
    stations: list[StationStats]
    officers: list[OfficerStats]
    grids: list[GridStats]
    kinds: dict[str, int]
    levels: dict[str, int]
    warnings_per_hour: dict[str, list[int]]
    messages_per_hour: list[int]
    ack_histogram: Histogram
    funnel: list[FunnelStep]
    deadlines_missed_by_level: dict[str, int]
    campaigns: int
    exercise: ExerciseStats = ExerciseStats()
