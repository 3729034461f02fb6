"""Records and errors of the metadata store.

Every record is a frozen dataclass: the store hands out values, never live rows. Times are unix
seconds (float), sizes and offsets are bytes, chunk hashes are 64-character lowercase hex SHA-256
digests.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class AccessKey:
    """An S3 access key: `access_key_id` (20 uppercase alphanumerics starting "CK"), its 40-character
    `secret_key`, the `owner` it authenticates as and when it was `created` (unix seconds)."""

    access_key_id: str
    secret_key: str
    owner: str
    created: float


@dataclass(frozen=True)
class BucketRecord:
    """A bucket: its `name`, `owner` and `created` time (unix seconds)."""

    name: str
    owner: str
    created: float


@dataclass(frozen=True)
class ChunkRef:
    """One occurrence of a chunk in an object or part.

    `hash`: SHA-256 of the chunk's bytes, 64 lowercase hex characters. `size`: the chunk's length in
    bytes. `offset`: byte offset of the chunk within the object (or within the part, for a part).
    """

    hash: str
    size: int
    offset: int


@dataclass(frozen=True)
class ObjectRecord:
    """An S3 object: (bucket, key) -> ordered chunk list plus S3 metadata.

    `size` bytes; `etag` the quoted S3 ETag ('"<md5hex>"' or '"<hex>-<part count>"');
    `last_modified` unix seconds; `system_metadata` holds the stored standard headers
    (Content-Encoding, Cache-Control, Content-Disposition, Content-Language, Expires);
    `checksums` maps an algorithm name ("CRC32", "SHA256", ...) to its base64 value and may carry
    "checksum_type" (FULL_OBJECT / COMPOSITE); `part_count` is None for single-part objects;
    `part_sizes` lists the size in bytes of each part of a multipart object, in part order.
    """

    bucket: str
    key: str
    size: int
    etag: str
    last_modified: float
    content_type: str
    user_metadata: dict[str, str]
    system_metadata: dict[str, str]
    checksums: dict[str, str]
    chunks: tuple[ChunkRef, ...]
    part_count: int | None
    part_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class ObjectSummary:
    """What a listing shows of an object: `key`, `size` bytes, quoted `etag`, `last_modified`
    (unix seconds)."""

    key: str
    size: int
    etag: str
    last_modified: float


@dataclass(frozen=True)
class ListResult:
    """One page of an object listing (S3 ListObjectsV2).

    `objects` and `common_prefixes` are each in UTF-8 binary order. `next_start_after` is the last
    key or common prefix returned (whichever sorts later); passing it as `start_after` resumes the
    listing. It is None when nothing was returned.
    """

    objects: list[ObjectSummary]
    common_prefixes: list[str]
    is_truncated: bool
    next_start_after: str | None


@dataclass(frozen=True)
class MultipartUpload:
    """An in-progress multipart upload of `key` in `bucket`, started at `initiated` (unix seconds).

    `content_type`, `user_metadata`, `system_metadata` are those given at creation and become the
    object's. `checksum_algorithm` is the algorithm the client announced ("CRC32", ...) or None.
    """

    upload_id: str
    bucket: str
    key: str
    initiated: float
    owner: str
    content_type: str
    user_metadata: dict[str, str]
    system_metadata: dict[str, str]
    checksum_algorithm: str | None


@dataclass(frozen=True)
class PartRecord:
    """One uploaded part: `part_number` (1..10000), `size` bytes, quoted `etag`, `last_modified`
    (unix seconds), `checksums` (algorithm -> base64 value) and its chunks (offsets within the part).
    """

    part_number: int
    size: int
    etag: str
    last_modified: float
    checksums: dict[str, str]
    chunks: tuple[ChunkRef, ...]


@dataclass(frozen=True)
class ZeroRefcountChunk:
    """A recorded chunk that no object or part references any more: `hash` (64 lowercase hex),
    `size` bytes, and `zero_since`, the unix time its reference count last reached zero. Garbage
    collection deletes such chunks once they have been unreferenced for a grace period."""

    hash: str
    size: int
    zero_since: float
    #: When garbage collection marked it (unix seconds): set for chunks being collected, else None.
    marked_at: float | None = None


class ChunkState(enum.IntEnum):
    """Where a recorded chunk is in its life (stored as an integer in the ``chunks`` table).

    WRITING: recorded by a pin before its stripe is proven durable; no committed object or part
    references it. LIVE: its stripe was written at quorum and a commit referenced it (it may be
    unreferenced again since). DELETING: garbage collection marked it and is deleting its fragments;
    nothing may pin or reference it until ``finish_collection`` removes the row.
    """

    WRITING = 0
    LIVE = 1
    DELETING = 2


@dataclass(frozen=True)
class PinResult:
    """The answer of ``MetadataStore.pin_chunks``: the asked chunk hashes (64 hex), split three ways.

    ``present``: LIVE chunks, now pinned: their stripes exist, do not write them (dedup).
    ``to_write``: chunks now recorded WRITING (new, or another writer's unfinished stripe), pinned:
    write their stripes before committing. ``being_collected``: DELETING chunks, NOT pinned: wait
    until garbage collection finishes them, then pin again.
    """

    present: frozenset[str]
    to_write: frozenset[str]
    being_collected: frozenset[str]


@dataclass(frozen=True)
class GcCounts:
    """Garbage collection backlog: ``zero_refcount`` chunks no object or part references (any
    state), ``being_collected`` chunks marked DELETING, ``pins`` pins held by writers."""

    zero_refcount: int
    being_collected: int
    pins: int


@dataclass(frozen=True)
class WriteCondition:
    """A conditional write (S3 ``If-Match`` / ``If-None-Match: *`` on PutObject and
    CompleteMultipartUpload), checked inside the write transaction so two writers cannot both win.

    ``if_match``: the ETag (quoted or not) the current object must have. ``if_none_match``: True for
    ``*``, the key must not hold an object.
    """

    if_match: str | None = None
    if_none_match: bool = False


class MetadataError(Exception):
    """Base class of every error the metadata store raises on purpose."""


class NoSuchBucket(MetadataError):
    """The named bucket does not exist."""


class NoSuchKey(MetadataError):
    """The bucket exists but holds no object under the key."""


class NoSuchUpload(MetadataError):
    """No in-progress multipart upload has this upload id (never created, completed or aborted)."""


class BucketAlreadyExists(MetadataError):
    """Another owner already holds a bucket with this name."""


class BucketAlreadyOwnedByYou(MetadataError):
    """The caller already owns a bucket with this name."""


class BucketNotEmpty(MetadataError):
    """The bucket still holds objects, so it cannot be deleted."""


class InvalidPart(MetadataError):
    """A part listed in a completion request was never uploaded, or its ETag does not match."""


class PreconditionFailed(MetadataError):
    """A WriteCondition did not hold (the object exists, or has another ETag)."""


class AccessKeyNotFound(MetadataError):
    """No access key has this id."""


class AccessKeyAlreadyExists(MetadataError):
    """An access key with this id already exists (only possible with a caller-chosen id)."""


class ChunksUnavailable(MetadataError):
    """A commit named chunks that are neither LIVE nor WRITING-and-pinned by the committing writer
    (garbage collection marked or removed them, e.g. after the writer's pin expired). Nothing was
    changed; the client should retry the whole request (answered 503 SlowDown).

    Attribute: ``chunk_hashes``, the offending hashes (64 hex), sorted.
    """

    retryable = True

    def __init__(self, chunk_hashes: Iterable[str]) -> None:
        self.chunk_hashes = tuple(sorted(chunk_hashes))
        shown = ", ".join(self.chunk_hashes[:3]) + (" ..." if len(self.chunk_hashes) > 3 else "")
        super().__init__(f"{len(self.chunk_hashes)} chunk(s) not live nor pinned by this writer: {shown}")
