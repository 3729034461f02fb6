"""Randomized waits for periodic background work, so a cluster's nodes do not act in lockstep.

The nodes of a cluster usually start together (``coffer dev up``, a rolling restart, a power
cut). Work they repeat on a fixed interval (repair scans, compaction passes) would then run on
every node at the same moment, forever: a burst of CPU and disk load on the whole cluster, and of
RPCs among its nodes, instead of a small steady load. Spreading each wait uniformly around the
interval decorrelates them within a few periods, as Ceph does for scrubs
(``osd_scrub_interval_randomize_ratio``) and Swift for its replicators and auditors (a random
initial delay).
"""

from __future__ import annotations

import random
from collections.abc import Callable

#: How far a wait may stray from its interval, as a fraction of it (0.2: 48-72 s for 60 s).
DEFAULT_SPREAD = 0.2


def jittered(seconds: float, spread: float = DEFAULT_SPREAD,
             uniform: Callable[[], float] = random.random) -> float:
    """``seconds`` moved by a uniformly random amount of at most ``spread * seconds`` either way.

    ``seconds`` >= 0 (a wait, seconds); ``spread`` in [0, 1]; ``uniform`` returns a float in
    [0, 1) (``random.random`` by default; tests pass their own). The mean wait stays ``seconds``.

    Raises:
        ValueError: ``seconds`` negative or ``spread`` outside [0, 1].
    """
    if seconds < 0:
        raise ValueError(f"a wait cannot be negative, got {seconds} s")
    if not 0 <= spread <= 1:
        raise ValueError(f"spread must be in [0, 1], got {spread}")
    return seconds * (1 + spread * (2 * uniform() - 1))
