"""Nearest-rank percentiles."""

import pytest

from bench.stats import percentile


def test_nearest_rank_returns_observed_values() -> None:
    assert percentile([4, 1, 3, 2], 50) == 2
    assert percentile([4, 1, 3, 2], 75) == 3
    assert percentile([4, 1, 3, 2], 100) == 4
    assert percentile([7.5], 99) == 7.5


def test_p99_of_hundred_samples_is_the_99th_smallest() -> None:
    samples = list(range(100, 0, -1))  # 1..100, unsorted
    assert percentile(samples, 99) == 99
    assert percentile(samples, 50) == 50
    assert percentile(samples, 1) == 1


def test_p99_of_few_samples_is_the_maximum() -> None:
    assert percentile([1.0, 2.0, 30.0], 99) == 30.0


@pytest.mark.parametrize("percent", [0, -1, 100.5])
def test_percent_out_of_range_raises(percent: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], percent)


def test_no_samples_raises() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
