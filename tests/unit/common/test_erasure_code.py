"""common.erasure_code against real pyeclib: round trips, rebuilds of every index, input validation."""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Callable
from typing import Any

import pytest

from common.erasure_code import (
    ChunkHashMismatch,
    data_fragment_payload_range,
    decode_chunk,
    encode_chunk,
    fragment_bytes,
    fragment_header_bytes,
    fragment_payload_bytes,
    next_combination,
    rebuild_fragment,
)
from common.layout import CHUNK_SIZE, DATA_FRAGMENTS, STRIPE_WIDTH

CHUNK = random.Random(7).randbytes(100_003)
CHUNK_HASH = hashlib.sha256(CHUNK).digest()


@pytest.fixture(scope="module")
def stripe() -> list[bytes]:
    return encode_chunk(CHUNK)


def test_encode_gives_14_fragments_of_the_computed_size(stripe: list[bytes]) -> None:
    assert len(stripe) == STRIPE_WIDTH
    assert {len(fragment) for fragment in stripe} == {fragment_bytes(len(CHUNK))}
    assert fragment_bytes(len(CHUNK)) == fragment_header_bytes() + fragment_payload_bytes(len(CHUNK))
    # Systematic code: data fragment i carries chunk[i*s:(i+1)*s] after the header.
    payload = fragment_payload_bytes(len(CHUNK))
    header = fragment_header_bytes()
    assert stripe[3][header : header + payload] == CHUNK[3 * payload : 4 * payload]


@pytest.mark.parametrize("size", [0, CHUNK_SIZE + 1])
def test_encode_refuses_empty_and_oversized_chunks(size: int) -> None:
    with pytest.raises(ValueError, match="chunk must be"):
        encode_chunk(b"x" * size)


def test_decode_from_parity_heavy_sets(stripe: list[bytes]) -> None:
    for kept in ([*range(4, 14)], [0, 2, 4, 6, 8, 10, 11, 12, 13, 1], list(range(14))):
        assert decode_chunk({i: stripe[i] for i in kept}, len(CHUNK)) == CHUNK


def test_rebuild_gives_every_index_byte_identical(stripe: list[bytes]) -> None:
    rng = random.Random(3)
    for index in range(STRIPE_WIDTH):
        others = [i for i in range(STRIPE_WIDTH) if i != index]
        sources = rng.sample(others, DATA_FRAGMENTS)
        rebuilt = rebuild_fragment({i: stripe[i] for i in sources}, len(CHUNK), CHUNK_HASH, index)
        assert rebuilt == stripe[index]


def test_rebuild_from_a_corrupt_source_raises_hash_mismatch(stripe: list[bytes]) -> None:
    bad = bytearray(stripe[2])
    bad[-1] ^= 0xFF  # payload byte: the header still parses, the decoded chunk differs
    fragments = {i: stripe[i] for i in range(DATA_FRAGMENTS)}
    fragments[2] = bytes(bad)
    with pytest.raises(ChunkHashMismatch):
        rebuild_fragment(fragments, len(CHUNK), CHUNK_HASH, 12)
    assert issubclass(ChunkHashMismatch, ValueError)


def test_rebuild_with_the_wrong_hash_raises(stripe: list[bytes]) -> None:
    with pytest.raises(ChunkHashMismatch):
        rebuild_fragment({i: stripe[i] for i in range(10)}, len(CHUNK), hashlib.sha256(b"other").digest(), 11)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: {i: f[i] for i in range(9)}, "at least 10"),
        (lambda f: {**{i: f[i] for i in range(9)}, 9: bytearray(f[9])}, "must be bytes"),
        (lambda f: {**{i: f[i] for i in range(9)}, 9: f[9][:-1]}, "bytes, a"),
        (lambda f: {**{i: f[i] for i in range(9)}, 14: f[9]}, "index must be"),
        (lambda f: {**{i: f[i] for i in range(9)}, 9: f[10]}, "says it is index 10"),
    ],
)
def test_decode_validates_before_pyeclib_sees_the_input(
    stripe: list[bytes], change: Callable[[list[bytes]], dict[int, Any]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        decode_chunk(change(stripe), len(CHUNK))


def test_decode_refuses_a_bad_chunk_size(stripe: list[bytes]) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        decode_chunk({i: stripe[i] for i in range(10)}, 0)


def test_rebuild_refuses_a_bad_index(stripe: list[bytes]) -> None:
    with pytest.raises(ValueError, match="index"):
        rebuild_fragment({i: stripe[i] for i in range(10)}, len(CHUNK), CHUNK_HASH, 14)


def test_payload_range_covers_the_chunk_once() -> None:
    size = 1000
    ranges = data_fragment_payload_range(size, 0, size)
    assert sum(end - start for _, start, end in ranges) == size
    assert data_fragment_payload_range(size, 5, 5) == []
    with pytest.raises(ValueError):
        data_fragment_payload_range(size, 0, size + 1)


def test_next_combination_tries_every_combination_once_lowest_first() -> None:
    good = dict.fromkeys(range(12), b"")
    tried: set[frozenset[int]] = set()
    first = next_combination(good, tried)
    assert first == frozenset(range(10))
    while (combination := next_combination(good, tried)) is not None:
        assert combination not in tried and len(combination) == DATA_FRAGMENTS
        tried.add(combination)
    assert len(tried) == len(list(itertools.combinations(range(12), 10)))
    assert next_combination(dict.fromkeys(range(9), b""), set()) is None
