"""Byte sizes as people write them (``4KiB``, ``1MiB``, ``256MiB``, ``1GB``) and back."""

from __future__ import annotations

import re

# Binary (IEC) and decimal (SI) multipliers; lower-cased suffix -> bytes.
_MULTIPLIERS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gib": 1 << 30,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
}
_SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Parse a size such as ``4KiB``, ``1.5MiB``, ``1GB`` or ``4096`` into bytes.

    Suffixes are case-insensitive: ``KiB``/``K`` = 1024, ``MiB``/``M`` = 2**20, ``GiB``/``G`` = 2**30,
    ``KB``/``MB``/``GB`` are powers of 10, ``B`` or none = bytes. Raises ``ValueError`` for anything
    else, for fractions of a byte and for sizes below 1 byte.
    """
    match = _SIZE_PATTERN.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 4KiB, 1MiB, 256MiB, 1GB)")
    number, suffix = match.groups()
    multiplier = _MULTIPLIERS.get(suffix.lower())
    if multiplier is None:
        raise ValueError(f"unknown size unit {suffix!r} in {text!r}")
    value = float(number) * multiplier
    if value != int(value) or value < 1:
        raise ValueError(f"size {text!r} is not a whole, positive number of bytes")
    return int(value)


def format_size(size: int) -> str:
    """Render ``size`` bytes compactly and exactly: ``4096`` -> ``4KiB``, ``1000`` -> ``1000B``."""
    for unit, multiplier in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= multiplier and size % multiplier == 0:
            return f"{size // multiplier}{unit}"
    return f"{size}B"


def parse_size_list(text: str) -> list[int]:
    """Parse a comma-separated list of sizes (``4KiB,1MiB``) into bytes, in the given order.

    Raises ``ValueError`` on a bad item or an empty list.
    """
    sizes = [parse_size(item) for item in text.split(",") if item.strip()]
    if not sizes:
        raise ValueError("empty size list")
    return sizes


def parse_int_list(text: str) -> list[int]:
    """Parse a comma-separated list of positive integers (``1,8``). Raises ``ValueError``."""
    values = [int(item) for item in text.split(",") if item.strip()]
    if not values or any(value < 1 for value in values):
        raise ValueError(f"need a list of positive integers, got {text!r}")
    return values
