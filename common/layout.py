"""The stripe layout every process agrees on (see docs/glossary.md).

A chunk is at most ``CHUNK_SIZE`` bytes, named by its SHA-256. It is encoded into a stripe of
``STRIPE_WIDTH`` fragments by Reed-Solomon with ``DATA_FRAGMENTS`` data and ``PARITY_FRAGMENTS``
parity fragments (pyeclib ``isa_l_rs_vand``, systematic). A write succeeds once ``WRITE_QUORUM``
fragments are durable.
"""

from __future__ import annotations

DATA_FRAGMENTS = 10
PARITY_FRAGMENTS = 4
STRIPE_WIDTH = DATA_FRAGMENTS + PARITY_FRAGMENTS
WRITE_QUORUM = DATA_FRAGMENTS + 2
CHUNK_SIZE = 4 * 1024 * 1024
EC_TYPE = "isa_l_rs_vand"
CHUNK_HASH_BYTES = 32
DEFAULT_PG_COUNT = 256


def placement_group(chunk_hash: bytes, pg_count: int) -> int:
    """Return the placement group of a chunk.

    ``chunk_hash`` is the 32-byte SHA-256 digest (raw bytes, not hex). The PG is the first 8 bytes
    read big-endian, modulo ``pg_count`` (the design brief's definition).

    Raises:
        ValueError: if the hash is not 32 bytes or ``pg_count`` is not positive.
    """
    if len(chunk_hash) != CHUNK_HASH_BYTES:
        raise ValueError(f"chunk hash must be {CHUNK_HASH_BYTES} bytes, got {len(chunk_hash)}")
    if pg_count <= 0:
        raise ValueError("pg_count must be positive")
    return int.from_bytes(chunk_hash[:8], "big") % pg_count
