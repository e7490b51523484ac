"""A small, reusable timing helper: warm up, then time single calls, report median and p99.

Why single calls rather than ``timeit``-style batches: we care about the tail (p99) of one
audience resolution, which batching would average away. ``perf_counter_ns`` has ~100 ns overhead
here, negligible next to the microseconds we measure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any


def measure(
    fn: Callable[[], Any],
    repeats: int = 50,
    min_time: float = 0.2,
    *,
    warmup: int = 3,
    max_time: float = 10.0,
) -> tuple[float, float]:
    """Time ``fn()``: ``(median, p99)`` in seconds.

    Runs ``warmup`` untimed calls (caches, lazy imports, first allocations), then at least
    ``repeats`` timed calls and keeps going until ``min_time`` seconds of timed calls have passed
    (more samples for fast functions), stopping early once ``max_time`` is spent. p99 is the
    nearest-rank 99th percentile, so with fewer than 100 samples it is the maximum.
    """
    for _ in range(warmup):
        fn()
    samples: list[int] = []
    total = 0
    min_ns, max_ns = int(min_time * 1e9), int(max_time * 1e9)
    clock = time.perf_counter_ns
    while len(samples) < repeats or total < min_ns:
        t0 = clock()
        fn()
        dt = clock() - t0
        samples.append(dt)
        total += dt
        if total >= max_ns and samples:
            break
    samples.sort()
    n = len(samples)
    median = (samples[(n - 1) // 2] + samples[n // 2]) / 2
    p99 = samples[min(n - 1, math.ceil(0.99 * n) - 1)]
    return median / 1e9, p99 / 1e9


def fmt_seconds(s: float) -> str:
    """Human-friendly duration: ns, µs, ms or s with three significant digits."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_bytes(n: float) -> str:
    """Human-friendly size in binary units."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
