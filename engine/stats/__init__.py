"""Statistics kept by the engine: per officer, station, grid and county (see ``recorder``)."""

from engine.stats.percentiles import group_percentiles
from engine.stats.recorder import Stats
from engine.stats.summary import (
    OUTCOMES,
    Counters,
    ExerciseStats,
    FunnelStep,
    GridStats,
    Histogram,
    OfficerStats,
    Percentiles,
    StationStats,
    Summary,
)

__all__ = [
    "OUTCOMES",
    "Counters",
    "ExerciseStats",
    "FunnelStep",
    "GridStats",
    "Histogram",
    "OfficerStats",
    "Percentiles",
    "StationStats",
    "Stats",
    "Summary",
    "group_percentiles",
]
