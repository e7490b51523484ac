"""Example counts for property tests, scaled by the hypothesis profile.

Tests state their own ``max_examples`` (what a CI run can afford); ``HYPOTHESIS_PROFILE=explore``
multiplies every one of them by ten for a long local hunt.
"""

from __future__ import annotations

import os

SCALE = 10 if os.environ.get("HYPOTHESIS_PROFILE") == "explore" else 1


def examples(n: int) -> int:
    """``n`` examples, or ``10 * n`` under the explore profile."""
    return n * SCALE
