"""Small statistics over measured samples (latencies, run throughputs)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(samples: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile of ``samples`` (any unit; returned in the same unit).

    Nearest rank: the smallest sample such that at least ``percent`` % of samples are <= it
    (rank ``ceil(percent / 100 * n)``, 1-based), so the result is always an observed value:
    p50 of [1, 2, 3, 4] is 2, p99 of 100 samples is the 99th smallest. ``percent`` in (0, 100].
    Raises ``ValueError`` for no samples or a percent outside (0, 100].
    """
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    ordered = sorted(samples)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]
