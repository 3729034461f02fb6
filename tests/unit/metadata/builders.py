"""Builders of chunk refs, object and part records for the metadata store tests."""

from __future__ import annotations

import hashlib
import uuid

from metadata import ChunkRef, ObjectRecord, PartRecord, SqliteMetadataStore, WriteCondition


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


class PinningStore(SqliteMetadataStore):
    """A SQLite store whose commits without a pin id first pin the record's chunks, as the frontend
    does (pin, write the stripes, commit with the pin): for the tests of everything but the pin
    protocol itself. Commits given a pin id, and every other method, are the plain store's."""

    def put_object(
        self, record: ObjectRecord, condition: WriteCondition | None = None, pin_id: str | None = None
    ) -> ObjectRecord | None:
        if pin_id is None and record.chunks:
            pin_id = uuid.uuid4().hex
            self.pin_chunks(pin_id, record.chunks)
        try:
            return super().put_object(record, condition, pin_id)
        finally:
            if pin_id is not None:
                self.release_pins(pin_id)

    def put_part(self, upload_id: str, part: PartRecord, pin_id: str | None = None) -> None:
        if pin_id is None and part.chunks:
            pin_id = uuid.uuid4().hex
            self.pin_chunks(pin_id, part.chunks)
        try:
            super().put_part(upload_id, part, pin_id)
        finally:
            if pin_id is not None:
                self.release_pins(pin_id)
