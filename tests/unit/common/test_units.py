"""Size parsing and formatting."""

import pytest

from common.units import format_size, parse_int_list, parse_size, parse_size_list


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4KiB", 4096),
        ("4kib", 4096),
        ("1MiB", 1 << 20),
        ("256MiB", 256 << 20),
        ("1GiB", 1 << 30),
        ("1.5MiB", 3 << 19),
        ("4K", 4096),
        ("1GB", 10**9),
        ("10kb", 10_000),
        ("4096", 4096),
        ("17B", 17),
        (" 2 MiB ", 2 << 20),
    ],
)
def test_parse_size_accepts_binary_decimal_and_bare_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "4XB", "-1KiB", "0", "0.5", "1.0001KiB", "4 Ki B"])
def test_parse_size_rejects_garbage_fractions_and_zero(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("size", "label"),
    [
        (4096, "4KiB"),
        (1 << 20, "1MiB"),
        (256 << 20, "256MiB"),
        (3 << 30, "3GiB"),
        (1000, "1000B"),
        (1536, "1536B"),
    ],
)
def test_format_size_is_exact(size: int, label: str) -> None:
    assert format_size(size) == label
    assert parse_size(label) == size


def test_lists_keep_order_and_reject_empty_or_non_positive() -> None:
    assert parse_size_list("1MiB,4KiB,") == [1 << 20, 4096]
    assert parse_int_list("8, 1") == [8, 1]
    with pytest.raises(ValueError):
        parse_size_list(" , ")
    with pytest.raises(ValueError):
        parse_int_list("1,0")
