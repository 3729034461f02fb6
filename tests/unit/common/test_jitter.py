"""Jittered waits (common.jitter): bounded, centred on the interval, and actually random."""

from __future__ import annotations

import pytest

from common.jitter import DEFAULT_SPREAD, jittered


def test_a_wait_strays_at_most_the_spread_either_way_and_is_centred() -> None:
    assert jittered(60, uniform=lambda: 0.0) == pytest.approx(60 * (1 - DEFAULT_SPREAD))
    assert jittered(60, uniform=lambda: 0.5) == pytest.approx(60)
    assert jittered(60, uniform=lambda: 0.999999) == pytest.approx(60 * (1 + DEFAULT_SPREAD))
    assert jittered(10, spread=0.5, uniform=lambda: 0.0) == pytest.approx(5)
    assert jittered(10, spread=0.0, uniform=lambda: 0.9) == 10
    assert jittered(0) == 0


def test_waits_drawn_by_default_differ_and_stay_in_bounds() -> None:
    waits = [jittered(60) for _ in range(200)]
    assert all(60 * (1 - DEFAULT_SPREAD) <= wait <= 60 * (1 + DEFAULT_SPREAD) for wait in waits)
    assert len(set(waits)) > 100  # two nodes starting together drift apart
    assert min(waits) < 55 and max(waits) > 65


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        jittered(-1)
    with pytest.raises(ValueError, match="spread"):
        jittered(1, spread=1.5)
