"""This machine's single-core memory read bandwidth, measured with numpy, and a time bound.

Why: the bitset index resolves an audience by streaming packed bitsets, so its floor is the
time to read those bytes once. ``read_time_bound(nbytes)`` gives that floor at the measured DRAM
bandwidth; a result near it means the index is memory-bound, far above it means overhead.

How: a reduction over a ``uint64`` buffer (one load per 8 bytes, trivial arithmetic, no writes,
single-threaded like the index). We time three such reductions (``max``, ``sum``,
``bitwise_or.reduce``) and keep the fastest, because the fastest is the least compute-bound,
i.e. closest to pure reading. On this 2-core AMD EPYC, numpy 2.4, all three reach the same ~33
GB/s on a 512 MiB buffer (DRAM-bound), while in cache ``max`` is clearly fastest (SIMD max has a
shorter dependency chain). ``OPENBLAS_CORETYPE`` does not matter: no BLAS is involved.

Run ``python3 -m benchmarks.bandwidth`` to print the numbers.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable

import numpy as np

from benchmarks.timing import measure

MiB = 1 << 20
DRAM_BUFFER_BYTES = 512 * MiB  # far larger than the 32 MiB L3 here

_OPS: dict[str, Callable[[np.ndarray], object]] = {
    "max": lambda a: a.max(),
    "sum": lambda a: a.sum(),
    "bitwise_or.reduce": lambda a: np.bitwise_or.reduce(a),
}


def read_bandwidth(nbytes: int, repeats: int = 7, min_time: float = 0.1) -> tuple[float, str]:
    """Median sequential read bandwidth in bytes/s over an ``nbytes`` buffer, and the op used.

    Small buffers stay cache-resident across repeats, so they measure cache bandwidth.
    """
    a = np.full(max(1, nbytes // 8), 0x0101010101010101, dtype=np.uint64)  # pages touched now
    best_rate, best_op = 0.0, ""
    for name, op in _OPS.items():
        median, _ = measure(lambda op=op: op(a), repeats=repeats, min_time=min_time)
        rate = a.nbytes / median
        if rate > best_rate:
            best_rate, best_op = rate, name
    return best_rate, best_op


@functools.cache
def dram_bandwidth() -> float:
    """DRAM read bandwidth in bytes/s (measured once per process, ~1 s, then cached)."""
    return read_bandwidth(DRAM_BUFFER_BYTES)[0]


def read_time_bound(nbytes: int) -> float:
    """Seconds to stream ``nbytes`` once from DRAM at the measured bandwidth (a floor)."""
    return nbytes / dram_bandwidth()


def environment() -> dict[str, str]:
    """What the numbers depend on, to print beside them."""
    return {
        "numpy": np.__version__,
        "np.bitwise_count": str(hasattr(np, "bitwise_count")),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def main() -> None:
    """Print DRAM and cache bandwidths for a few working-set sizes."""
    for key, value in environment().items():
        print(f"{key}: {value}")
    for nbytes in (DRAM_BUFFER_BYTES, 64 * MiB, 16 * MiB, 1 * MiB, 256 * 1024):
        rate, op = read_bandwidth(nbytes)
        print(f"{nbytes / MiB:8.2f} MiB: {rate / 1e9:6.1f} GB/s ({op})")
    print(f"read_time_bound(162.5 KB bitset) = {read_time_bound(162_500) * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
