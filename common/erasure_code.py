"""Reed-Solomon 10+4 coding of one chunk: pure, synchronous helpers shared by frontend and storage nodes.

A chunk encodes to a stripe of ``STRIPE_WIDTH`` (14) fragments: ``DATA_FRAGMENTS`` (10) data and
``PARITY_FRAGMENTS`` (4) parity, pyeclib ``isa_l_rs_vand`` (systematic Reed-Solomon over GF(2^8),
Vandermonde matrix, Intel ISA-L). Every pyeclib fragment is a fixed header (80 bytes, measured at
first use through ``ECDriver.get_metadata``) followed by a payload of ``s = ceil(chunk_size / 10)``
bytes; data fragment ``i`` carries ``chunk[i*s:(i+1)*s]`` (the last ones zero-padded), so healthy
reads slice data fragments and never decode (``data_fragment_payload_range``).

Every coding function here blocks and holds the GIL while pyeclib runs (~1.3 ms to encode a 4 MiB
chunk, ~2.5 ms to rebuild a fragment): call them from a worker thread or process, never from an
event loop. pyeclib aborts the whole process on malformed input (non-bytes, unequal lengths;
/work/shared/perf-notes.md), so ``decode_chunk`` and ``rebuild_fragment`` validate first.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Mapping
from typing import Any

from common.layout import CHUNK_SIZE, DATA_FRAGMENTS, EC_TYPE, PARITY_FRAGMENTS, STRIPE_WIDTH


class ChunkHashMismatch(ValueError):
    """A chunk decoded from fragments does not have the expected SHA-256: some source fragment is
    wrong although its CRC32C matched (written wrong, or a different chunk's fragment)."""


def new_driver() -> Any:
    """A fresh pyeclib ``ECDriver`` for the 10+4 ``EC_TYPE`` code (import is deferred: it loads ISA-L)."""
    from pyeclib.ec_iface import ECDriver

    return ECDriver(k=DATA_FRAGMENTS, m=PARITY_FRAGMENTS, ec_type=EC_TYPE)


@functools.lru_cache(maxsize=1)
def driver() -> Any:
    """The process's pyeclib driver (created on first use; one per process, thread-safe to call)."""
    return new_driver()


@functools.lru_cache(maxsize=1)
def fragment_header_bytes() -> int:
    """Length in bytes of pyeclib's per-fragment header (80 for liberasurecode 1.6+).

    Measured rather than assumed: encodes a small buffer and subtracts the payload size that
    ``ECDriver.get_metadata`` reports from the fragment length.
    """
    ec_driver = driver()
    fragment = ec_driver.encode(b"\x00" * DATA_FRAGMENTS * 7)[0]
    payload = int(ec_driver.get_metadata(fragment, formatted=True)["size"])
    return len(fragment) - payload


def fragment_payload_bytes(chunk_size: int) -> int:
    """Payload bytes of every fragment of a ``chunk_size``-byte chunk: ``ceil(chunk_size / 10)``.

    Raises:
        ValueError: if ``chunk_size`` is not positive.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return -(-chunk_size // DATA_FRAGMENTS)


def fragment_bytes(chunk_size: int) -> int:
    """Total bytes of one fragment (header + payload) of a ``chunk_size``-byte chunk.

    Raises:
        ValueError: if ``chunk_size`` is not positive.
    """
    return fragment_header_bytes() + fragment_payload_bytes(chunk_size)


def data_fragment_payload_range(chunk_size: int, start: int, end: int) -> list[tuple[int, int, int]]:
    """Which data fragments hold bytes ``[start, end)`` of a chunk, and where in their payloads.

    Returns ``[(index, payload_start, payload_end), ...]`` in chunk order: fragment ``index``
    (0..9) holds ``chunk[start:end]``'s part at payload offsets ``[payload_start, payload_end)``
    (offsets after the fragment header). An empty range returns ``[]``. Pure arithmetic on the
    systematic layout (module docstring).

    Raises:
        ValueError: if ``chunk_size <= 0`` or not ``0 <= start <= end <= chunk_size``.
    """
    payload = fragment_payload_bytes(chunk_size)
    if not 0 <= start <= end <= chunk_size:
        raise ValueError(f"range [{start}, {end}) is not within a chunk of {chunk_size} bytes")
    if start == end:
        return []
    first = start // payload
    last = (end - 1) // payload
    ranges = []
    for index in range(first, last + 1):
        base = index * payload
        ranges.append((index, max(start, base) - base, min(end, base + payload) - base))
    return ranges


def encode_chunk(chunk: bytes | bytearray | memoryview) -> list[bytes]:
    """Encode a chunk (1..``CHUNK_SIZE`` bytes) into its 14 fragments, index order (blocking).

    Every fragment is ``fragment_bytes(len(chunk))`` bytes: header then payload.

    Raises:
        ValueError: empty or oversized chunk.
    """
    view = memoryview(chunk).cast("B")
    if not 0 < len(view) <= CHUNK_SIZE:
        raise ValueError(f"chunk must be 1..{CHUNK_SIZE} bytes, got {len(view)}")
    # pyeclib's encode accepts only bytes (perf-notes); bytes(bytes) does not copy.
    return list(driver().encode(bytes(view)))


def validate_fragments(fragments: Mapping[int, bytes], chunk_size: int, max_chunk_size: int = CHUNK_SIZE) -> None:
    """Check what ``decode_chunk`` is given before pyeclib sees it (it aborts the process on bad input).

    ``fragments`` maps index (0..13) to a whole fragment as ``bytes`` of ``fragment_bytes(chunk_size)``
    bytes; at least 10 are needed. The headers' own index is checked by ``decode_fragments``.

    Raises:
        ValueError: ``chunk_size`` outside 1..``max_chunk_size``, fewer than 10 fragments, an index
            outside 0..13, a fragment that is not ``bytes`` or has the wrong length.
    """
    if not 0 < chunk_size <= max_chunk_size:
        raise ValueError(f"chunk_size must be 1..{max_chunk_size}, got {chunk_size}")
    if len(fragments) < DATA_FRAGMENTS:
        raise ValueError(f"need at least {DATA_FRAGMENTS} fragments, got {len(fragments)}")
    expected = fragment_bytes(chunk_size)
    for index, fragment in fragments.items():
        if not isinstance(index, int) or not 0 <= index < STRIPE_WIDTH:
            raise ValueError(f"fragment index must be 0..{STRIPE_WIDTH - 1}, got {index!r}")
        if type(fragment) is not bytes:
            raise ValueError(f"fragment {index} must be bytes, got {type(fragment).__name__}")
        if len(fragment) != expected:
            raise ValueError(f"fragment {index} is {len(fragment)} bytes, a {chunk_size}-byte chunk has {expected}")


def decode_fragments(fragments: Mapping[int, bytes], chunk_size: int) -> bytes:
    """Decode already validated fragments (``validate_fragments``) into the ``chunk_size``-byte chunk.

    Checks that each fragment's header names the index it is filed under.

    Raises:
        ValueError: a header names another index, or the decoded size is not ``chunk_size``.
        pyeclib.ec_iface.ECDriverError: pyeclib refused the fragments.
    """
    ec_driver = driver()
    for index, fragment in fragments.items():
        found = int(ec_driver.get_metadata(fragment, formatted=True)["index"])
        if found != index:
            raise ValueError(f"fragment given as index {index} says it is index {found}")
    data = ec_driver.decode(list(fragments.values()))
    if len(data) != chunk_size:
        raise ValueError(f"decoded {len(data)} bytes, expected a chunk of {chunk_size}")
    return bytes(data)


def decode_chunk(fragments: Mapping[int, bytes], chunk_size: int) -> bytes:
    """Rebuild a ``chunk_size``-byte chunk from at least 10 of its fragments (blocking).

    ``fragments`` maps fragment index (0..13) to the whole fragment (header + payload) as ``bytes``;
    any 10 suffice (data or parity). The result is not hash-checked: see ``rebuild_fragment``.

    Raises:
        ValueError: fewer than 10 fragments, bad index, non-bytes, unequal or wrong lengths, a header
            that names another index, or a decoded size other than ``chunk_size``.
        pyeclib.ec_iface.ECDriverError: pyeclib refused the fragments.
    """
    validate_fragments(fragments, chunk_size)
    return decode_fragments(fragments, chunk_size)


def rebuild_fragment(fragments: Mapping[int, bytes], chunk_size: int, chunk_hash: bytes, index: int) -> bytes:
    """Rebuild fragment ``index`` (0..13) of the chunk ``chunk_hash`` from at least 10 others (blocking).

    Decodes the chunk, checks its SHA-256 against ``chunk_hash`` and re-encodes it. Decode-verify-encode
    is used instead of pyeclib's ``reconstruct`` on purpose: it is the only way to prove a rebuilt
    parity fragment right (CRC32Cs only prove the sources were stored unchanged). ~2.5 ms CPU per
    4 MiB stripe.

    Raises:
        ValueError: as ``decode_chunk``, or ``index`` outside 0..13.
        ChunkHashMismatch: the decoded chunk's SHA-256 is not ``chunk_hash`` (a source is wrong).
        pyeclib.ec_iface.ECDriverError: pyeclib refused the fragments.
    """
    if not 0 <= index < STRIPE_WIDTH:
        raise ValueError(f"fragment index must be 0..{STRIPE_WIDTH - 1}, got {index}")
    chunk = decode_chunk(fragments, chunk_size)
    digest = hashlib.sha256(chunk).digest()
    if digest != chunk_hash:
        raise ChunkHashMismatch(
            f"chunk decoded from fragments {sorted(fragments)} has SHA-256 {digest.hex()}, expected {chunk_hash.hex()}"
        )
    return bytes(driver().encode(chunk)[index])


def next_combination(good: Mapping[int, object], tried: set[frozenset[int]]) -> frozenset[int] | None:
    """Next 10 good fragment indexes to decode from, or None when every combination was tried.

    The lowest 10 first (data fragments decode fastest), then sets that leave out a window of
    ``n - 10`` consecutive fragments, rotating, so that any single bad fragment among ``n`` good
    ones is left out within ``ceil(n / (n - 10))`` more tries; then every other combination.
    """
    indexes = sorted(good)
    count = len(indexes)
    if count < DATA_FRAGMENTS:
        return None
    drop = count - DATA_FRAGMENTS
    candidates: list[frozenset[int]] = [frozenset(indexes[:DATA_FRAGMENTS])]
    if drop > 0:
        for first in range(0, count, drop):
            left_out = {indexes[(first + j) % count] for j in range(drop)}
            candidates.append(frozenset(indexes) - left_out)
    for candidate in candidates:
        if candidate not in tried:
            return candidate
    for combination in itertools.combinations(indexes, DATA_FRAGMENTS):
        candidate = frozenset(combination)
        if candidate not in tried:
            return candidate
    return None


__all__ = [
    "ChunkHashMismatch",
    "data_fragment_payload_range",
    "decode_chunk",
    "decode_fragments",
    "driver",
    "encode_chunk",
    "fragment_bytes",
    "fragment_header_bytes",
    "fragment_payload_bytes",
    "new_driver",
    "next_combination",
    "rebuild_fragment",
    "validate_fragments",
]
