"""The `MetadataStore` interface: the index of buckets, objects, chunks, multipart uploads and keys.

`SqliteMetadataStore` (metadata/sqlite_store.py) is the embedded implementation; a PostgreSQL
store for several frontends would implement the same interface. Every method is synchronous and
thread-safe (the frontend calls them through `asyncio.to_thread`), and every method that changes
more than one row does so in one transaction: either all of it is visible or none.

Chunk reference counts: each object and each uploaded part holds one reference per chunk
occurrence in its chunk list (a chunk listed twice holds two). Counts never go below zero; a
chunk whose count reaches zero stays recorded, with the time it reached zero, until garbage
collection removes it.

Chunk states and pins (PUT vs garbage collection; docs/architecture.md, issue 3 plan section 5.2):
a writer pins the chunks of its body before writing any stripe (`pin_chunks`), and commits with
its pin id; garbage collection marks unreferenced, unpinned chunks DELETING
(`mark_chunks_for_collection`), deletes their fragments, then removes the rows
(`finish_collection`). Every transition is one write transaction, so they are totally ordered:
- pin before mark: the mark sees the pin and skips the chunk;
- mark before pin: the pin sees DELETING, pins nothing, and the writer waits and pins again once
  the row is gone (then it writes a fresh stripe);
- a pin older than the pin TTL is dropped by the mark; the writer's commit then finds its pin
  gone and raises ChunksUnavailable, so nothing references fragments that may be deleted;
- a commit without a pin (CopyObject) needs LIVE chunks, so it refuses a chunk the mark took.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence

from metadata.records import (
    AccessKey,
    AccessKeyAlreadyExists,
    AccessKeyNotFound,
    BucketAlreadyExists,
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    BucketRecord,
    ChunkRef,
    ChunkState,
    ChunksUnavailable,
    GcCounts,
    InvalidPart,
    ListResult,
    MetadataError,
    MultipartUpload,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    ObjectRecord,
    ObjectSummary,
    PartRecord,
    PinResult,
    PreconditionFailed,
    WriteCondition,
    ZeroRefcountChunk,
)

__all__ = [
    "AccessKey",
    "AccessKeyAlreadyExists",
    "AccessKeyNotFound",
    "BucketAlreadyExists",
    "BucketAlreadyOwnedByYou",
    "BucketNotEmpty",
    "BucketRecord",
    "ChunkRef",
    "ChunkState",
    "ChunksUnavailable",
    "GcCounts",
    "InvalidPart",
    "ListResult",
    "MetadataError",
    "MetadataStore",
    "MultipartUpload",
    "NoSuchBucket",
    "NoSuchKey",
    "NoSuchUpload",
    "ObjectRecord",
    "ObjectSummary",
    "PartRecord",
    "PinResult",
    "PreconditionFailed",
    "WriteCondition",
    "ZeroRefcountChunk",
]


class MetadataStore(abc.ABC):
    """What the frontend needs from a metadata database. See the module docstring for the rules."""

    # Access keys -----------------------------------------------------------------------------

    @abc.abstractmethod
    def create_access_key(
        self, owner: str, access_key_id: str | None = None, secret_key: str | None = None
    ) -> AccessKey:
        """Record a new access key for `owner`. Without `access_key_id` / `secret_key` they are
        generated with `secrets`: a 20-character uppercase alphanumeric id starting "CK" and a
        40-character alphanumeric secret. Raises AccessKeyAlreadyExists if the id is taken."""

    @abc.abstractmethod
    def get_access_key(self, access_key_id: str) -> AccessKey | None:
        """The access key with this id, or None."""

    @abc.abstractmethod
    def list_access_keys(self) -> list[AccessKey]:
        """Every access key, sorted by id."""

    @abc.abstractmethod
    def delete_access_key(self, access_key_id: str) -> bool:
        """Delete the key; True if it existed."""

    # Buckets ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def create_bucket(self, name: str, owner: str) -> BucketRecord:
        """Create an empty bucket. Raises BucketAlreadyOwnedByYou if `owner` already has it,
        BucketAlreadyExists if someone else does. Name validation is the caller's job."""

    @abc.abstractmethod
    def get_bucket(self, name: str) -> BucketRecord | None:
        """The bucket, or None."""

    @abc.abstractmethod
    def list_buckets(self, owner: str | None = None) -> list[BucketRecord]:
        """Buckets sorted by name; only `owner`'s if given."""

    @abc.abstractmethod
    def delete_bucket(self, name: str) -> None:
        """Delete an empty bucket. Its in-progress multipart uploads are aborted in the same
        transaction (their parts' chunk references released). Raises NoSuchBucket, or
        BucketNotEmpty if it holds objects."""

    # Chunks ----------------------------------------------------------------------------------

    @abc.abstractmethod
    def chunks_present(self, hashes: Iterable[str]) -> set[str]:
        """Which of these chunk hashes (64 hex) are LIVE (their stripe was stored and committed),
        whatever their reference count. Writers use `pin_chunks` instead, which also protects
        what it reports from garbage collection."""

    @abc.abstractmethod
    def chunks_recorded(self, hashes: Iterable[str]) -> set[str]:
        """Which of these chunk hashes (64 hex) have a row in any state (WRITING, LIVE, DELETING):
        the orphan sweep deletes fragments only of chunks that have none."""

    @abc.abstractmethod
    def chunk_state(self, chunk_hash: str) -> ChunkState | None:
        """The chunk's state, or None when it is not recorded."""

    @abc.abstractmethod
    def pin_chunks(self, pin_id: str, chunks: Sequence[ChunkRef]) -> PinResult:
        """Pin chunks before writing them, in one write transaction (`chunks`: hash and size; the
        offset is ignored). Per distinct hash: DELETING -> `being_collected`, not pinned; no row ->
        recorded WRITING (refcount 0, zero_since now), pinned, `to_write`; WRITING -> pinned,
        `to_write` (another writer's stripe is not proven durable; writes are idempotent);
        LIVE -> pinned, `present`. Pinning again under the same `pin_id` refreshes the pin's time.
        A pin keeps `mark_chunks_for_collection` off the chunk until it is released, committed or
        older than the pin TTL. Raises ValueError on a malformed hash."""

    @abc.abstractmethod
    def release_pins(self, pin_id: str) -> int:
        """Drop every pin of `pin_id` (a failed or abandoned write); returns how many there were.
        Chunks left WRITING and unreferenced are collected after the grace period."""

    @abc.abstractmethod
    def expire_pins(self, created_before: float) -> int:
        """Drop every pin created before `created_before` (unix seconds); returns how many. A
        frontend that owns its database calls it at start with its start time: pins older than the
        process belong to requests that died with the previous one."""

    @abc.abstractmethod
    def mark_chunks_for_collection(
        self, unreferenced_before: float, pins_expired_before: float, limit: int = 1000
    ) -> list[ZeroRefcountChunk]:
        """Garbage collection's mark, one write transaction: first drop every pin created before
        `pins_expired_before` (unix seconds), then set DELETING (with `marked_at` = now) on at most
        `limit` chunks, oldest first, that have refcount 0, are not DELETING, reached zero (or were
        first pinned) before `unreferenced_before` and hold no pin. Returns them."""

    @abc.abstractmethod
    def chunks_being_collected(self, limit: int = 1000) -> list[ZeroRefcountChunk]:
        """Chunks marked DELETING whose collection has not finished (resume after a crash), oldest
        mark first, at most `limit`, with `marked_at`."""

    @abc.abstractmethod
    def finish_collection(self, hashes: Iterable[str]) -> int:
        """Remove the rows of these chunks if they are still DELETING with refcount 0 (their
        fragments were deleted); returns how many rows were removed. One write transaction."""

    @abc.abstractmethod
    def gc_counts(self) -> GcCounts:
        """The garbage collection backlog (see GcCounts)."""

    @abc.abstractmethod
    def chunk_refcount(self, chunk_hash: str) -> int:
        """The chunk's reference count; 0 if it is unknown."""

    @abc.abstractmethod
    def zero_refcount_chunks(
        self, unreferenced_before: float | None = None, limit: int = 1000
    ) -> list[ZeroRefcountChunk]:
        """Recorded chunks whose reference count is zero, oldest first (by the time they reached
        zero); only those that reached zero before `unreferenced_before` (unix seconds) if given;
        at most `limit`."""

    # Objects ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def put_object(
        self, record: ObjectRecord, condition: WriteCondition | None = None, pin_id: str | None = None
    ) -> ObjectRecord | None:
        """Store `record` at (record.bucket, record.key) in one transaction: every chunk must be
        LIVE, or WRITING and pinned by `pin_id` (those become LIVE); add one reference per chunk
        occurrence, replace any existing object there, release that object's references and drop
        `pin_id`'s pins. Returns the replaced object, or None. `condition` is checked in the same
        transaction. Without `pin_id` (CopyObject) every chunk must be LIVE. Raises NoSuchBucket;
        PreconditionFailed (or NoSuchKey for If-Match on a missing key) when `condition` does not
        hold; ChunksUnavailable (retryable) when a chunk is in no committable state. On any error
        nothing changes (the pins stay: the caller releases them)."""

    @abc.abstractmethod
    def get_object(self, bucket: str, key: str) -> ObjectRecord:
        """The object. Raises NoSuchBucket or NoSuchKey."""

    @abc.abstractmethod
    def delete_object(self, bucket: str, key: str) -> bool:
        """Delete the object, releasing its chunk references; True if it existed. Raises
        NoSuchBucket."""

    @abc.abstractmethod
    def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        delimiter: str = "",
        start_after: str = "",
        max_keys: int = 1000,
    ) -> ListResult:
        """One page of S3 ListObjectsV2 in UTF-8 binary key order.

        Only keys starting with `prefix` and sorting after `start_after` are considered. With a
        `delimiter`, a key whose remainder after `prefix` contains it rolls up into the common
        prefix `prefix + remainder[:first delimiter + len(delimiter)]`, returned once and counted
        once toward `max_keys`. The listing is the ordered sequence of these entries (keys and
        common prefixes, each sorted by its own string); a page holds the first `max_keys` of
        them that sort after `start_after`. So a common prefix equal to (or before) `start_after`
        is not returned again, and `next_start_after` resumes exactly. `max_keys=0` returns an
        empty, untruncated page. Raises NoSuchBucket.
        """

    # Multipart uploads -----------------------------------------------------------------------

    @abc.abstractmethod
    def create_multipart_upload(
        self,
        bucket: str,
        key: str,
        owner: str,
        content_type: str,
        user_metadata: dict[str, str],
        system_metadata: dict[str, str],
        checksum_algorithm: str | None,
    ) -> MultipartUpload:
        """Start a multipart upload with a fresh url-safe random upload id. Raises NoSuchBucket."""

    @abc.abstractmethod
    def get_multipart_upload(self, upload_id: str) -> MultipartUpload:
        """The upload. Raises NoSuchUpload."""

    @abc.abstractmethod
    def put_part(self, upload_id: str, part: PartRecord, pin_id: str | None = None) -> None:
        """Record an uploaded part in one transaction (references added, `pin_id`'s pins dropped),
        replacing a part with the same number (its references released). The chunks must be
        committable as for `put_object`. Raises NoSuchUpload; ChunksUnavailable (retryable)."""

    @abc.abstractmethod
    def list_parts(
        self, upload_id: str, part_number_marker: int = 0, max_parts: int = 1000
    ) -> tuple[list[PartRecord], bool]:
        """Parts numbered above `part_number_marker` in ascending order, at most `max_parts`, and
        whether more follow. Raises NoSuchUpload."""

    @abc.abstractmethod
    def list_multipart_uploads(
        self,
        bucket: str,
        prefix: str = "",
        key_marker: str = "",
        upload_id_marker: str = "",
        max_uploads: int = 1000,
    ) -> tuple[list[MultipartUpload], bool]:
        """In-progress uploads of keys starting with `prefix`, ordered by key (UTF-8 binary), then
        initiation time, then upload id; at most `max_uploads`, and whether more follow.

        With `key_marker` alone, listing starts after every upload of that key. With both
        markers, it starts after the upload `upload_id_marker` of key `key_marker` (if that
        upload no longer exists, after every upload of that key). `upload_id_marker` without
        `key_marker` is ignored, as in S3. Raises NoSuchBucket.
        """

    @abc.abstractmethod
    def complete_multipart_upload(
        self, upload_id: str, record: ObjectRecord, parts: list[tuple[int, str]],
        condition: WriteCondition | None = None,
    ) -> ObjectRecord | None:
        """Turn the upload into the object `record` in one transaction.

        `parts` are the (part number, ETag as the client sent it, quoted or not) pairs of the
        completion request; each must name an uploaded part with that ETag, else InvalidPart.
        The object takes one reference per chunk occurrence in `record.chunks`; every part row of
        the upload (listed or not) is deleted and its references released; the upload is
        deleted; any previous object at the key is replaced (references released). Returns the
        replaced object, or None. Raises NoSuchUpload; ValueError if `record` names another
        bucket or key than the upload; PreconditionFailed / NoSuchKey when `condition` does not
        hold (the upload is then kept); ChunksUnavailable if a chunk of `record` is not LIVE (the
        parts' references keep theirs LIVE, so only a record naming other chunks can fail). Part
        ordering and size rules are the caller's to check.
        """

    @abc.abstractmethod
    def abort_multipart_upload(self, upload_id: str) -> None:
        """Delete the upload and its parts, releasing their references. Raises NoSuchUpload."""

    # Lifetime --------------------------------------------------------------------------------

    @abc.abstractmethod
    def close(self) -> None:
        """Release the database connections. The store must not be used afterwards."""
