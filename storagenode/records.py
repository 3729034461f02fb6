"""Plain records the engine returns and the client hands back, free of RocksDB and gRPC imports.

They live apart from ``engine.py`` so that ``storagenode.client`` (imported by the frontend) does
not pull in rocksdict.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoredFragment:
    """A fragment read back from a volume.

    ``data`` is the fragment exactly as stored (pyeclib header included); ``checksum`` its CRC32C
    (verified on read); ``chunk_size`` the length in bytes of the chunk the stripe encodes.
    """

    data: bytes
    checksum: int
    chunk_size: int


@dataclass(frozen=True, slots=True)
class FragmentEntry:
    """One fragment in a placement-group listing: ``length`` bytes of data with CRC32C ``checksum``;
    ``written_at_ms`` is when the node stored it (Unix milliseconds, 0 when the record predates
    format 3 and carries no write time)."""

    chunk_hash: bytes
    index: int
    length: int
    checksum: int
    chunk_size: int
    written_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class VolumeStats:
    """Usage of one volume: fragment count, bytes its database occupies, bytes free on its disk."""

    path: str
    fragments: int
    bytes_used: int
    bytes_free: int


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """What ``Health`` reports: the node id, per-volume usage, corrupt fragments seen since start."""

    node_id: str
    volumes: tuple[VolumeStats, ...]
    corrupt_fragments_detected: int
