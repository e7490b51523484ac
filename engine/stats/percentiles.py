"""Percentiles of many groups at once (per officer, per station), without a Python loop per group.

Sorting once by (group, value) puts every group's samples next to each other in order; each
percentile is then one gather at a computed position. Matches ``numpy.percentile``'s default
("linear") method, which the tests check against the raw samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def group_percentiles(
    groups: np.ndarray, values: np.ndarray, n_groups: int, qs: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """``(counts[n_groups], out[n_groups, len(qs)])``; rows of empty groups are NaN.

    ``groups`` are ints in ``[0, n_groups)``; NaN values are ignored.
    """
    groups = np.asarray(groups, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(values)
    groups, values = groups[keep], values[keep]
    order = np.lexsort((values, groups))
    v = values[order]
    counts = np.bincount(groups, minlength=n_groups)[:n_groups]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    out = np.full((n_groups, len(qs)), np.nan)
    has = counts > 0
    c, s = counts[has], starts[has]
    for j, q in enumerate(qs):
        pos = (q / 100.0) * (c - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, c - 1)
        t = pos - lo
        a, b = v[s + lo], v[s + hi]
        # numpy's lerp: exact at both ends, the same rounding as np.percentile.
        out[has, j] = np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)
    return counts, out
