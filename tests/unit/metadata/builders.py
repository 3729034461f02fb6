"""Builders of chunk refs, object and part records for the metadata store tests."""

from __future__ import annotations

import hashlib

from metadata import ChunkRef, ObjectRecord, PartRecord


def chunk_hash(name: str) -> str:
    """A real SHA-256 hex digest standing in for a chunk's content `name`."""
    return hashlib.sha256(name.encode()).hexdigest()


def chunks(*names: str, size: int = 4 << 20) -> tuple[ChunkRef, ...]:
    """Chunk refs for consecutive chunks of `size` bytes named by content."""
    return tuple(ChunkRef(chunk_hash(name), size, index * size) for index, name in enumerate(names))


def object_record(
    bucket: str,
    key: str,
    chunk_refs: tuple[ChunkRef, ...] = (),
    *,
    etag: str = '"d41d8cd98f00b204e9800998ecf8427e"',
    part_count: int | None = None,
    part_sizes: tuple[int, ...] = (),
) -> ObjectRecord:
    return ObjectRecord(
        bucket=bucket,
        key=key,
        size=sum(chunk.size for chunk in chunk_refs),
        etag=etag,
        last_modified=1_700_000_000.5,
        content_type="application/octet-stream",
        user_metadata={"colour": "blue", "ünïcode": "välue"},
        system_metadata={"Cache-Control": "no-cache"},
        checksums={"CRC32": "AAAAAA==", "checksum_type": "FULL_OBJECT"},
        chunks=chunk_refs,
        part_count=part_count,
        part_sizes=part_sizes,
    )


def part_record(part_number: int, chunk_refs: tuple[ChunkRef, ...], etag: str) -> PartRecord:
    return PartRecord(
        part_number=part_number,
        size=sum(chunk.size for chunk in chunk_refs),
        etag=etag,
        last_modified=1_700_000_100.0,
        checksums={"CRC32C": "BBBBBB=="},
        chunks=chunk_refs,
    )
