"""Send-rate limits per account: a token bucket kept as one number (GCRA).

Why GCRA rather than a counter of tokens: taking a slot is one synchronous call that returns
the time the send may happen and books it. Several trio tasks sending from the same officer
account (two campaigns at once) then interleave fairly with no lock and no polling, and the
rate holds exactly: over any interval of ``d`` seconds at most ``burst + rate * d`` sends.
"""

from __future__ import annotations

import math


class TokenBucket:
    """``rate`` sends per second on average, up to ``burst`` back to back. Pure: time is passed."""

    __slots__ = ("burst", "interval", "tat")

    def __init__(self, rate: float, burst: int) -> None:
        if not (rate > 0 and burst >= 1):
            raise ValueError("rate must be > 0 and burst >= 1")
        self.interval = 1.0 / rate
        self.burst = burst
        self.tat = -math.inf  # theoretical arrival time of the next send

    def reserve(self, now: float) -> float:
        """Book the next slot: the time (>= ``now``) at which one send may go out."""
        tolerance = (self.burst - 1) * self.interval
        at = max(now, self.tat - tolerance)
        self.tat = max(self.tat, at) + self.interval
        return at
