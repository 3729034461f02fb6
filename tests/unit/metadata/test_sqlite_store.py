"""SqliteMetadataStore against real SQLite files: keys, buckets, objects, reference counts,
multipart uploads, durability and concurrent use. Listing has its own file (test_listing.py)."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from metadata import (
    AccessKeyAlreadyExists,
    BucketAlreadyExists,
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    ChunkRef,
    InvalidPart,
    MetadataError,
    MetadataStore,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    SqliteMetadataStore,
)
from metadata.sqlite_store import SCHEMA_VERSION
from tests.unit.metadata.builders import PinningStore, chunk_hash, chunks, object_record, part_record

# --- Access keys -----------------------------------------------------------------------------


def test_generated_access_key_has_s3_shape_and_round_trips(store: SqliteMetadataStore) -> None:
    key = store.create_access_key("alice")
    assert re.fullmatch(r"CK[A-Z0-9]{18}", key.access_key_id)
    assert re.fullmatch(r"[A-Za-z0-9]{40}", key.secret_key)
    assert key.owner == "alice"
    assert store.get_access_key(key.access_key_id) == key
    assert store.create_access_key("alice").access_key_id != key.access_key_id


def test_access_key_with_chosen_id_list_and_delete(store: SqliteMetadataStore) -> None:
    second = store.create_access_key("bob", "CKZZZZZZZZZZZZZZZZZZ", "s" * 40)
    first = store.create_access_key("alice", "CKAAAAAAAAAAAAAAAAAA", "t" * 40)
    assert store.list_access_keys() == [first, second]
    with pytest.raises(AccessKeyAlreadyExists):
        store.create_access_key("carol", "CKAAAAAAAAAAAAAAAAAA")
    assert store.get_access_key("CKAAAAAAAAAAAAAAAAAA") == first
    assert store.delete_access_key(first.access_key_id) is True
    assert store.delete_access_key(first.access_key_id) is False
    assert store.get_access_key(first.access_key_id) is None
    assert store.list_access_keys() == [second]


# --- Buckets ---------------------------------------------------------------------------------


def test_buckets_create_get_list_sorted_and_by_owner(store: SqliteMetadataStore) -> None:
    zeta = store.create_bucket("zeta", "alice")
    alpha = store.create_bucket("alpha", "bob")
    mid = store.create_bucket("mid", "alice")
    assert store.get_bucket("alpha") == alpha
    assert store.get_bucket("missing") is None
    assert store.list_buckets() == [alpha, mid, zeta]
    assert store.list_buckets(owner="alice") == [mid, zeta]
    assert store.list_buckets(owner="nobody") == []


def test_create_existing_bucket_distinguishes_owner(store: SqliteMetadataStore) -> None:
    store.create_bucket("photos", "alice")
    with pytest.raises(BucketAlreadyOwnedByYou):
        store.create_bucket("photos", "alice")
    with pytest.raises(BucketAlreadyExists):
        store.create_bucket("photos", "bob")
    assert store.get_bucket("photos") is not None
    assert store.get_bucket("photos").owner == "alice"  # type: ignore[union-attr]


def test_delete_bucket(store: SqliteMetadataStore) -> None:
    with pytest.raises(NoSuchBucket):
        store.delete_bucket("missing")
    store.create_bucket("full", "alice")
    store.put_object(object_record("full", "k", chunks("a")))
    with pytest.raises(BucketNotEmpty):
        store.delete_bucket("full")
    assert store.get_object("full", "k").key == "k"
    store.delete_object("full", "k")
    store.delete_bucket("full")
    assert store.get_bucket("full") is None
    with pytest.raises(NoSuchBucket):
        store.delete_bucket("full")


def test_delete_bucket_aborts_uploads_and_releases_their_references(store: SqliteMetadataStore) -> None:
    store.create_bucket("b", "alice")
    store.create_bucket("other", "alice")
    upload = store.create_multipart_upload("b", "big", "alice", "text/plain", {}, {}, None)
    kept = store.create_multipart_upload("other", "big", "alice", "text/plain", {}, {}, None)
    store.put_part(upload.upload_id, part_record(1, chunks("p1", "shared"), '"e1"'))
    store.put_part(kept.upload_id, part_record(1, chunks("shared"), '"e2"'))
    assert store.chunk_refcount(chunk_hash("shared")) == 2

    store.delete_bucket("b")

    with pytest.raises(NoSuchUpload):
        store.get_multipart_upload(upload.upload_id)
    assert store.chunk_refcount(chunk_hash("p1")) == 0
    assert store.chunk_refcount(chunk_hash("shared")) == 1
    assert store.get_multipart_upload(kept.upload_id) == kept
    # The name is free again, with nothing left over from the old bucket.
    store.create_bucket("b", "bob")
    assert store.list_multipart_uploads("b") == ([], False)


# --- Objects ---------------------------------------------------------------------------------


def test_put_and_get_round_trip_every_field(store: SqliteMetadataStore) -> None:
    store.create_bucket("b", "alice")
    # A 1 GiB object: 256 chunks of 4 MiB.
    record = object_record(
        "b",
        "photos/2024/cat.jpg",
        chunks(*[f"chunk-{i}" for i in range(256)]),
        etag='"0123456789abcdef0123456789abcdef-3"',
        part_count=3,
        part_sizes=(400 << 20, 400 << 20, 224 << 20),
    )
    assert store.put_object(record) is None
    fetched = store.get_object("b", "photos/2024/cat.jpg")
    assert fetched == record
    assert fetched.chunks[255].offset == 255 * (4 << 20)
    assert fetched.size == 1 << 30


def test_empty_object_and_single_part_object(store: SqliteMetadataStore) -> None:
    store.create_bucket("b", "alice")
    empty = object_record("b", "empty")
    store.put_object(empty)
    assert store.get_object("b", "empty") == empty
    assert store.get_object("b", "empty").part_count is None
    assert store.get_object("b", "empty").part_sizes == ()


@pytest.mark.parametrize(
    "key",
    [
        "../../etc/passwd",
        " leading and trailing spaces ",
        "日本語/ключ/émoji-😀",
        "line\nbreak\r\ttab",
        "nul\x00inside",
        "%2F%00 encoded-looking",
        "k" * 1024,
        "é" * 512,  # 1024 bytes of UTF-8
    ],
)
def test_any_key_round_trips(store: SqliteMetadataStore, key: str) -> None:
    store.create_bucket("b", "alice")
    record = object_record("b", key, chunks("x"))
    store.put_object(record)
    assert store.get_object("b", key) == record
    assert [summary.key for summary in store.list_objects("b").objects] == [key]
    assert store.delete_object("b", key) is True


def test_object_errors(store: SqliteMetadataStore) -> None:
    with pytest.raises(NoSuchBucket):
        store.put_object(object_record("missing", "k", chunks("a")))
    with pytest.raises(NoSuchBucket):
        store.get_object("missing", "k")
    with pytest.raises(NoSuchBucket):
        store.delete_object("missing", "k")
    with pytest.raises(NoSuchBucket):
        store.list_objects("missing")
    store.create_bucket("b", "alice")
    with pytest.raises(NoSuchKey):
        store.get_object("b", "k")
    assert store.delete_object("b", "k") is False
    # The failed put into a missing bucket recorded nothing.
    assert store.chunks_present([chunk_hash("a")]) == set()


def test_objects_are_per_bucket(store: SqliteMetadataStore) -> None:
    store.create_bucket("one", "alice")
    store.create_bucket("two", "alice")
    store.put_object(object_record("one", "k", chunks("a")))
    with pytest.raises(NoSuchKey):
        store.get_object("two", "k")
    assert store.list_objects("two").objects == []


def test_metadata_errors_share_a_base_class() -> None:
    for error in (NoSuchBucket, NoSuchKey, NoSuchUpload, BucketNotEmpty, InvalidPart):
        assert issubclass(error, MetadataError)
    assert issubclass(SqliteMetadataStore, MetadataStore)


# --- Reference counts ------------------------------------------------------------------------


def test_refcounts_through_put_overwrite_and_delete(store: SqliteMetadataStore) -> None:
    store.create_bucket("b", "alice")
    first = object_record("b", "k", chunks("a", "a", "b"))
    assert store.put_object(first) is None
    assert store.chunk_refcount(chunk_hash("a")) == 2  # one reference per occurrence
    assert store.chunk_refcount(chunk_hash("b")) == 1
    assert store.chunks_present([chunk_hash("a"), chunk_hash("b"), chunk_hash("c")]) == {
        chunk_hash("a"),
        chunk_hash("b"),
    }

    second = object_record("b", "k", chunks("b", "c"))
    assert store.put_object(second) == first
    assert store.chunk_refcount(chunk_hash("a")) == 0
    assert store.chunk_refcount(chunk_hash("b")) == 1
    assert store.chunk_refcount(chunk_hash("c")) == 1

    other = object_record("b", "other", chunks("c"))
    store.put_object(other)
    assert store.chunk_refcount(chunk_hash("c")) == 2

    assert store.delete_object("b", "k") is True
    assert store.delete_object("b", "k") is False
    assert store.chunk_refcount(chunk_hash("b")) == 0
    assert store.chunk_refcount(chunk_hash("c")) == 1
    # Unreferenced chunks stay recorded (garbage collection removes them later).
    assert chunk_hash("a") in store.chunks_present([chunk_hash("a")])
    assert store.chunk_refcount(chunk_hash("never-seen")) == 0


def test_overwrite_with_the_same_chunks_keeps_counts(store: SqliteMetadataStore) -> None:
    store.create_bucket("b", "alice")
    record = object_record("b", "k", chunks("a", "b"))
    store.put_object(record)
    store.put_object(record)
    assert store.chunk_refcount(chunk_hash("a")) == 1
    # The chunk never passed through zero on the way.
    assert store.zero_refcount_chunks() == []


def test_zero_refcount_chunks_records_when_and_forgets_on_reuse(store: SqliteMetadataStore) -> None:
    store.create_bucket("b", "alice")
    store.put_object(object_record("b", "k", chunks("a", "b", size=1000)))
    assert store.zero_refcount_chunks() == []
    store.delete_object("b", "k")
    unreferenced = store.zero_refcount_chunks()
    assert {chunk.hash for chunk in unreferenced} == {chunk_hash("a"), chunk_hash("b")}
    assert all(chunk.size == 1000 for chunk in unreferenced)
    zero_since = unreferenced[0].zero_since
    assert store.zero_refcount_chunks(unreferenced_before=zero_since) == []
    assert len(store.zero_refcount_chunks(unreferenced_before=zero_since + 1)) == 2
    assert len(store.zero_refcount_chunks(limit=1)) == 1

    store.put_object(object_record("b", "again", chunks("a", size=1000)))
    assert [chunk.hash for chunk in store.zero_refcount_chunks()] == [chunk_hash("b")]


def test_chunks_present_handles_many_hashes(store: SqliteMetadataStore) -> None:
    store.create_bucket("b", "alice")
    names = [f"c{i}" for i in range(1200)]
    store.put_object(object_record("b", "k", chunks(*names[::2], size=10)))
    asked = [chunk_hash(name) for name in names]
    assert store.chunks_present(asked) == {chunk_hash(name) for name in names[::2]}
    assert store.chunks_present([]) == set()


def test_bad_chunk_hash_is_rejected_without_change(store: SqliteMetadataStore) -> None:
    store.create_bucket("b", "alice")
    with pytest.raises(ValueError):
        store.put_object(object_record("b", "k", (ChunkRef("abc", 1, 0),)))
    with pytest.raises(NoSuchKey):
        store.get_object("b", "k")


# --- Multipart uploads -----------------------------------------------------------------------


def _upload(store: SqliteMetadataStore, bucket: str = "b", key: str = "big") -> str:
    return store.create_multipart_upload(
        bucket, key, "alice", "video/mp4", {"origin": "camera"}, {"Content-Language": "fr"}, "CRC32"
    ).upload_id


def test_create_and_get_multipart_upload(store: SqliteMetadataStore) -> None:
    with pytest.raises(NoSuchBucket):
        _upload(store, bucket="missing")
    store.create_bucket("b", "alice")
    upload_id = _upload(store, key="dir/ä 😀")
    assert re.fullmatch(r"[A-Za-z0-9_-]{16,}", upload_id)
    upload = store.get_multipart_upload(upload_id)
    assert (upload.bucket, upload.key, upload.owner, upload.content_type) == (
        "b",
        "dir/ä 😀",
        "alice",
        "video/mp4",
    )
    assert upload.user_metadata == {"origin": "camera"}
    assert upload.system_metadata == {"Content-Language": "fr"}
    assert upload.checksum_algorithm == "CRC32"
    assert _upload(store) != upload_id
    with pytest.raises(NoSuchUpload):
        store.get_multipart_upload("no-such-upload")


def test_put_part_list_parts_and_replace(store: SqliteMetadataStore) -> None:
    store.create_bucket("b", "alice")
    upload_id = _upload(store)
    with pytest.raises(NoSuchUpload):
        store.put_part("missing", part_record(1, chunks("x"), '"e"'))
    with pytest.raises(NoSuchUpload):
        store.list_parts("missing")
    for number in (3, 1, 2):
        store.put_part(upload_id, part_record(number, chunks(f"p{number}"), f'"e{number}"'))
    parts, truncated = store.list_parts(upload_id)
    assert [part.part_number for part in parts] == [1, 2, 3]
    assert parts[0] == part_record(1, chunks("p1"), '"e1"')
    assert truncated is False
    parts, truncated = store.list_parts(upload_id, part_number_marker=1, max_parts=1)
    assert [part.part_number for part in parts] == [2]
    assert truncated is True
    parts, truncated = store.list_parts(upload_id, part_number_marker=2, max_parts=1)
    assert ([part.part_number for part in parts], truncated) == ([3], False)

    # Re-uploading part 2 replaces it and releases the old part's chunks.
    store.put_part(upload_id, part_record(2, chunks("p2-new"), '"e2b"'))
    assert store.chunk_refcount(chunk_hash("p2")) == 0
    assert store.chunk_refcount(chunk_hash("p2-new")) == 1
    parts, _ = store.list_parts(upload_id)
    assert [part.etag for part in parts] == ['"e1"', '"e2b"', '"e3"']


def test_complete_multipart_upload(store: SqliteMetadataStore) -> None:
    store.create_bucket("b", "alice")
    store.put_object(object_record("b", "big", chunks("old", "shared")))
    upload_id = _upload(store)
    store.put_part(upload_id, part_record(1, chunks("a", "shared"), '"e1"'))
    store.put_part(upload_id, part_record(2, chunks("b"), '"e2"'))
    store.put_part(upload_id, part_record(3, chunks("unused"), '"e3"'))
    assert store.chunk_refcount(chunk_hash("shared")) == 2

    final = object_record(
        "b", "big", chunks("a", "shared", "b"), etag='"abc-2"', part_count=2, part_sizes=(8 << 20, 4 << 20)
    )
    # Clients send ETags with or without quotes.
    replaced = store.complete_multipart_upload(upload_id, final, [(1, '"e1"'), (2, "e2")])

    assert replaced == object_record("b", "big", chunks("old", "shared"))
    assert store.get_object("b", "big") == final
    with pytest.raises(NoSuchUpload):
        store.get_multipart_upload(upload_id)
    with pytest.raises(NoSuchUpload):
        store.complete_multipart_upload(upload_id, final, [(1, '"e1"')])
    assert store.list_multipart_uploads("b") == ([], False)
    # The object holds exactly one reference per chunk; parts and the old object hold none.
    for name, expected in {"a": 1, "shared": 1, "b": 1, "old": 0, "unused": 0}.items():
        assert store.chunk_refcount(chunk_hash(name)) == expected, name


@pytest.mark.parametrize("listed", [[(1, '"wrong"')], [(1, '"e1"'), (2, '"e2"')]])
def test_complete_with_bad_part_changes_nothing(
    store: SqliteMetadataStore, listed: list[tuple[int, str]]
) -> None:
    store.create_bucket("b", "alice")
    upload_id = _upload(store)
    store.put_part(upload_id, part_record(1, chunks("a"), '"e1"'))
    with pytest.raises(InvalidPart):
        store.complete_multipart_upload(upload_id, object_record("b", "big", chunks("a")), listed)
    assert store.get_multipart_upload(upload_id).key == "big"
    assert len(store.list_parts(upload_id)[0]) == 1
    assert store.chunk_refcount(chunk_hash("a")) == 1
    with pytest.raises(NoSuchKey):
        store.get_object("b", "big")


def test_complete_rejects_a_record_for_another_key(store: SqliteMetadataStore) -> None:
    store.create_bucket("b", "alice")
    upload_id = _upload(store)
    store.put_part(upload_id, part_record(1, chunks("a"), '"e1"'))
    with pytest.raises(ValueError):
        store.complete_multipart_upload(upload_id, object_record("b", "other", chunks("a")), [(1, '"e1"')])
    assert store.chunk_refcount(chunk_hash("a")) == 1


def test_abort_releases_part_references(store: SqliteMetadataStore) -> None:
    store.create_bucket("b", "alice")
    store.put_object(object_record("b", "kept", chunks("shared")))
    upload_id = _upload(store)
    store.put_part(upload_id, part_record(1, chunks("a", "shared"), '"e1"'))
    store.put_part(upload_id, part_record(2, chunks("a"), '"e2"'))
    assert store.chunk_refcount(chunk_hash("a")) == 2
    store.abort_multipart_upload(upload_id)
    assert store.chunk_refcount(chunk_hash("a")) == 0
    assert store.chunk_refcount(chunk_hash("shared")) == 1
    with pytest.raises(NoSuchUpload):
        store.abort_multipart_upload(upload_id)
    with pytest.raises(NoSuchUpload):
        store.put_part(upload_id, part_record(3, chunks("late"), '"e3"'))
    assert store.chunk_refcount(chunk_hash("late")) == 0


def test_list_multipart_uploads_order_prefix_markers_and_truncation(store: SqliteMetadataStore) -> None:
    store.create_bucket("b", "alice")
    store.create_bucket("other", "alice")
    _upload(store, bucket="other", key="a")
    ids: dict[str, list[str]] = {}
    for key in ("c", "a", "b/1", "b/2", "a"):
        ids.setdefault(key, []).append(_upload(store, key=key))

    uploads, truncated = store.list_multipart_uploads("b")
    assert [upload.key for upload in uploads] == ["a", "a", "b/1", "b/2", "c"]
    assert truncated is False
    # Two uploads of one key: ordered by initiation time, then id.
    first_a, second_a = uploads[0], uploads[1]
    assert (first_a.initiated, first_a.upload_id) <= (second_a.initiated, second_a.upload_id)
    assert {first_a.upload_id, second_a.upload_id} == set(ids["a"])

    uploads, _ = store.list_multipart_uploads("b", prefix="b/")
    assert [upload.key for upload in uploads] == ["b/1", "b/2"]

    uploads, truncated = store.list_multipart_uploads("b", max_uploads=2)
    assert ([upload.key for upload in uploads], truncated) == (["a", "a"], True)

    uploads, _ = store.list_multipart_uploads("b", key_marker="a")
    assert [upload.key for upload in uploads] == ["b/1", "b/2", "c"]

    uploads, _ = store.list_multipart_uploads("b", key_marker="a", upload_id_marker=first_a.upload_id)
    assert [upload.upload_id for upload in uploads][:2] == [second_a.upload_id, ids["b/1"][0]]

    # An upload_id_marker without key_marker is ignored, as in S3.
    uploads, _ = store.list_multipart_uploads("b", upload_id_marker=first_a.upload_id)
    assert len(uploads) == 5

    with pytest.raises(NoSuchBucket):
        store.list_multipart_uploads("missing")


# --- Durability, schema, lifetime ------------------------------------------------------------


def test_everything_survives_reopen(store_path: Path) -> None:
    with PinningStore(store_path) as first:
        key = first.create_access_key("alice")
        first.create_bucket("b", "alice")
        record = object_record("b", "k", chunks("a", "b"))
        first.put_object(record)
        upload_id = _upload(first)
        first.put_part(upload_id, part_record(1, chunks("p"), '"e1"'))

    with SqliteMetadataStore(store_path) as reopened:
        assert reopened.schema_version() == SCHEMA_VERSION
        assert reopened.get_access_key(key.access_key_id) == key
        assert reopened.get_object("b", "k") == record
        assert reopened.list_parts(upload_id)[0] == [part_record(1, chunks("p"), '"e1"')]
        assert reopened.chunk_refcount(chunk_hash("a")) == 1


def test_database_settings(store: SqliteMetadataStore, store_path: Path) -> None:
    with sqlite3.connect(store_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection = store._connection()
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert connection.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_change_is_durable_when_the_call_returns(store_path: Path) -> None:
    """A child process puts an object, then is killed without closing the store (no checkpoint,
    no clean shutdown): the object must be there."""
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal, sys\n"
            "from metadata import SqliteMetadataStore\n"
            "from tests.unit.metadata.builders import PinningStore, chunks, object_record\n"
            "store = PinningStore(sys.argv[1])\n"
            "store.create_bucket('b', 'alice')\n"
            "store.put_object(object_record('b', 'acknowledged', chunks('a')))\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n",
            str(store_path),
        ],
        cwd=Path(__file__).parents[3],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -9, child.stderr
    with SqliteMetadataStore(store_path) as reopened:
        assert reopened.get_object("b", "acknowledged").chunks == chunks("a")
        assert reopened.chunk_refcount(chunk_hash("a")) == 1


def test_newer_schema_is_refused(store_path: Path) -> None:
    SqliteMetadataStore(store_path).close()
    with sqlite3.connect(store_path) as raw:
        raw.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(MetadataError, match="newer"):
        SqliteMetadataStore(store_path)


def test_closed_store_refuses_calls(store_path: Path) -> None:
    store = SqliteMetadataStore(store_path)
    store.close()
    with pytest.raises(MetadataError):
        store.list_buckets()


# --- Concurrency -----------------------------------------------------------------------------


def test_concurrent_writers_and_readers_keep_counts_exact(store: SqliteMetadataStore) -> None:
    store.create_bucket("b", "alice")
    writers, objects_each = 6, 40
    errors: list[BaseException] = []
    stop_reading = threading.Event()

    def write(writer: int) -> None:
        try:
            for index in range(objects_each):
                store.put_object(
                    object_record("b", f"w{writer}/{index:03}", chunks("shared", f"{writer}-{index}"))
                )
                # Every writer also fights over one hot key.
                store.put_object(object_record("b", "hot", chunks("shared", f"hot-{writer}-{index}")))
        except BaseException as error:
            errors.append(error)

    def read() -> None:
        try:
            while not stop_reading.is_set():
                listing = store.list_objects("b", delimiter="/", max_keys=1000)
                assert listing.common_prefixes == sorted(listing.common_prefixes)
                store.chunks_present([chunk_hash("shared")])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(writers)]
    readers = [threading.Thread(target=read) for _ in range(2)]
    for thread in threads + readers:
        thread.start()
    for thread in threads:
        thread.join()
    stop_reading.set()
    for thread in readers:
        thread.join()

    assert errors == []
    keys = [summary.key for summary in store.list_objects("b", max_keys=1000).objects]
    assert len(keys) == writers * objects_each + 1
    # One reference from each per-writer object plus one from the final "hot" object.
    assert store.chunk_refcount(chunk_hash("shared")) == writers * objects_each + 1
    hot = store.get_object("b", "hot")
    hot_chunks = [chunk.hash for chunk in hot.chunks if chunk.hash != chunk_hash("shared")]
    assert len(hot_chunks) == 1
    assert store.chunk_refcount(hot_chunks[0]) == 1
    overwritten = {chunk.hash for chunk in store.zero_refcount_chunks(limit=10_000)}
    assert len(overwritten) == writers * objects_each - 1
    assert hot_chunks[0] not in overwritten
