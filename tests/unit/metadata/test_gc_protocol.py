"""The PUT-vs-garbage-collection protocol of the metadata store (metadata/store.py docstring), one
deterministic interleaving per test on a real SQLite file: pin before mark, mark before pin, pin
expiry, CopyObject against a mark, plus the migration of a version-1 file."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from metadata import ChunkRef, ChunkState, ChunksUnavailable, GcCounts, NoSuchKey, SqliteMetadataStore
from metadata.sqlite_store import _MIGRATIONS, SCHEMA_VERSION
from tests.unit.metadata.builders import chunk_hash, chunks, object_record, part_record

FAR_FUTURE = 1e12  # "unreferenced before" a time every chunk qualifies for (grace 0)
NO_EXPIRY = 0.0  # "pins expired before" a time no pin is older than


@pytest.fixture
def plain(store_path: Path) -> Iterator[SqliteMetadataStore]:
    """The store exactly as the frontend uses it (no test helper pins anything)."""
    opened = SqliteMetadataStore(store_path)
    opened.create_bucket("b", "alice")
    yield opened
    opened.close()


def mark_all(store: SqliteMetadataStore) -> set[str]:
    return {chunk.hash for chunk in store.mark_chunks_for_collection(FAR_FUTURE, NO_EXPIRY)}


def test_pin_reports_new_live_and_collected_chunks(plain: SqliteMetadataStore) -> None:
    first = plain.pin_chunks("w1", chunks("a", "b"))
    assert first.to_write == {chunk_hash("a"), chunk_hash("b")} and not first.present
    assert plain.chunk_state(chunk_hash("a")) == ChunkState.WRITING
    # Another writer's unfinished stripe is written again, not trusted.
    assert plain.pin_chunks("w2", chunks("a")).to_write == {chunk_hash("a")}
    plain.put_object(object_record("b", "k", chunks("a", "b")), pin_id="w1")
    assert plain.chunk_state(chunk_hash("a")) == ChunkState.LIVE
    assert plain.pin_chunks("w3", chunks("a")).present == {chunk_hash("a")}
    assert plain.chunks_present([chunk_hash("a"), chunk_hash("c")]) == {chunk_hash("a")}


def test_commit_needs_own_pin_or_live_chunks(plain: SqliteMetadataStore) -> None:
    plain.pin_chunks("w1", chunks("a"))
    record = object_record("b", "k", chunks("a"))
    with pytest.raises(ChunksUnavailable):
        plain.put_object(record)  # no pin: a WRITING chunk is not proven durable
    with pytest.raises(ChunksUnavailable):
        plain.put_object(record, pin_id="someone-else")
    with pytest.raises(ChunksUnavailable):
        plain.put_object(object_record("b", "k", chunks("never-pinned")), pin_id="w1")
    with pytest.raises(NoSuchKey):
        plain.get_object("b", "k")  # nothing was committed
    plain.put_object(record, pin_id="w1")
    assert plain.chunk_refcount(chunk_hash("a")) == 1
    assert plain.gc_counts() == GcCounts(zero_refcount=0, being_collected=0, pins=0)  # commit dropped its pins


def test_pin_before_mark_keeps_the_chunk(plain: SqliteMetadataStore) -> None:
    # An unreferenced LIVE chunk, eligible for collection...
    plain.pin_chunks("old", chunks("a"))
    plain.put_object(object_record("b", "old", chunks("a")), pin_id="old")
    plain.delete_object("b", "old")
    # ...is pinned by a PUT that dedups onto it, before GC marks.
    assert plain.pin_chunks("w", chunks("a")).present == {chunk_hash("a")}
    assert mark_all(plain) == set()
    plain.put_object(object_record("b", "new", chunks("a")), pin_id="w")
    assert mark_all(plain) == set()
    assert plain.chunk_state(chunk_hash("a")) == ChunkState.LIVE
    assert plain.chunk_refcount(chunk_hash("a")) == 1


def test_mark_before_pin_makes_the_writer_wait_then_write_afresh(plain: SqliteMetadataStore) -> None:
    plain.pin_chunks("old", chunks("a"))
    plain.release_pins("old")  # a failed PUT: WRITING, unreferenced, unpinned
    assert mark_all(plain) == {chunk_hash("a")}
    assert plain.chunk_state(chunk_hash("a")) == ChunkState.DELETING
    result = plain.pin_chunks("w", chunks("a"))
    assert result.being_collected == {chunk_hash("a")} and not result.to_write and not result.present
    with pytest.raises(ChunksUnavailable):
        plain.put_object(object_record("b", "k", chunks("a")), pin_id="w")
    assert [chunk.hash for chunk in plain.chunks_being_collected()] == [chunk_hash("a")]
    assert plain.finish_collection([chunk_hash("a")]) == 1
    assert plain.chunks_recorded([chunk_hash("a")]) == set()
    # The row is gone: the writer pins a fresh WRITING row, writes, commits.
    assert plain.pin_chunks("w", chunks("a")).to_write == {chunk_hash("a")}
    plain.put_object(object_record("b", "k", chunks("a")), pin_id="w")
    assert plain.chunk_state(chunk_hash("a")) == ChunkState.LIVE


def test_expired_pin_is_dropped_and_its_commit_refused(plain: SqliteMetadataStore) -> None:
    plain.pin_chunks("slow", chunks("a"))
    # A pin younger than the TTL protects the chunk...
    assert plain.mark_chunks_for_collection(FAR_FUTURE, pins_expired_before=time.time() - 3600) == []
    # ...an expired one is dropped by the mark, which then takes the chunk.
    assert mark_all_expiring(plain) == {chunk_hash("a")}
    with pytest.raises(ChunksUnavailable):
        plain.put_object(object_record("b", "k", chunks("a")), pin_id="slow")
    plain.finish_collection([chunk_hash("a")])
    with pytest.raises(ChunksUnavailable):
        plain.put_object(object_record("b", "k", chunks("a")), pin_id="slow")


def mark_all_expiring(store: SqliteMetadataStore) -> set[str]:
    return {chunk.hash for chunk in store.mark_chunks_for_collection(FAR_FUTURE, pins_expired_before=FAR_FUTURE)}


def test_copy_against_mark(plain: SqliteMetadataStore) -> None:
    plain.pin_chunks("w", chunks("a", "b"))
    plain.put_object(object_record("b", "src-a", chunks("a")), pin_id="w")
    plain.pin_chunks("w", chunks("b"))
    plain.put_object(object_record("b", "src-b", chunks("b")), pin_id="w")
    source_a = plain.get_object("b", "src-a")
    source_b = plain.get_object("b", "src-b")
    plain.delete_object("b", "src-a")
    plain.delete_object("b", "src-b")
    # Copy of b commits before the mark: the reference keeps b.
    plain.put_object(object_record("b", "copy-b", source_b.chunks))
    # The mark comes before the copy of a: the copy is refused and references nothing.
    assert mark_all(plain) == {chunk_hash("a")}
    with pytest.raises(ChunksUnavailable):
        plain.put_object(object_record("b", "copy-a", source_a.chunks))
    assert plain.chunk_refcount(chunk_hash("a")) == 0
    assert plain.chunk_state(chunk_hash("b")) == ChunkState.LIVE


def test_part_commit_and_complete_follow_the_same_rules(plain: SqliteMetadataStore) -> None:
    upload = plain.create_multipart_upload("b", "k", "alice", "text/plain", {}, {}, None)
    plain.pin_chunks("p1", chunks("a"))
    with pytest.raises(ChunksUnavailable):
        plain.put_part(upload.upload_id, part_record(1, chunks("a"), '"e1"'), pin_id="other")
    plain.put_part(upload.upload_id, part_record(1, chunks("a"), '"e1"'), pin_id="p1")
    assert mark_all(plain) == set()  # the part's reference protects it
    with pytest.raises(ChunksUnavailable):  # a record naming a chunk no part committed
        plain.complete_multipart_upload(upload.upload_id, object_record("b", "k", chunks("x")), [(1, '"e1"')])
    plain.complete_multipart_upload(upload.upload_id, object_record("b", "k", chunks("a")), [(1, '"e1"')])
    assert plain.chunk_refcount(chunk_hash("a")) == 1


def test_mark_respects_grace_and_limit_and_finish_only_takes_deleting(plain: SqliteMetadataStore) -> None:
    for name in ("a", "b", "c"):
        plain.pin_chunks(name, chunks(name))
        plain.release_pins(name)
    assert plain.mark_chunks_for_collection(unreferenced_before=time.time() - 3600, pins_expired_before=0) == []
    assert plain.finish_collection([chunk_hash("a")]) == 0  # not marked: kept
    marked = plain.mark_chunks_for_collection(FAR_FUTURE, NO_EXPIRY, limit=2)
    assert len(marked) == 2 and all(chunk.marked_at is not None for chunk in marked)
    assert plain.gc_counts() == GcCounts(zero_refcount=3, being_collected=2, pins=0)
    assert mark_all(plain) != set()  # the third one
    assert mark_all(plain) == set()  # nothing is marked twice
    assert plain.finish_collection(chunk.hash for chunk in plain.chunks_being_collected()) == 3
    assert plain.gc_counts() == GcCounts(zero_refcount=0, being_collected=0, pins=0)


def test_release_pins_lets_collection_proceed(plain: SqliteMetadataStore) -> None:
    plain.pin_chunks("w", [ChunkRef(chunk_hash("a"), 10, 0), ChunkRef(chunk_hash("b"), 20, 10)])
    assert mark_all(plain) == set()
    assert plain.release_pins("w") == 2
    assert mark_all(plain) == {chunk_hash("a"), chunk_hash("b")}


def test_pins_of_a_dead_process_are_expired_at_start(plain: SqliteMetadataStore) -> None:
    plain.pin_chunks("died-with-the-process", chunks("a"))
    started = time.time()
    plain.pin_chunks("new-process", chunks("b"))
    assert mark_all(plain) == set()
    assert plain.expire_pins(started) == 1
    assert mark_all(plain) == {chunk_hash("a")}


def test_version_1_file_upgrades_in_place(store_path: Path) -> None:
    with sqlite3.connect(store_path) as raw:
        raw.execute("CREATE TABLE schema_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)")
        for statement in _MIGRATIONS[0]:
            raw.execute(statement)
        raw.execute("INSERT INTO schema_version VALUES (1, 1)")
        raw.execute("INSERT INTO chunks VALUES (?, 10, 1, NULL)", (bytes.fromhex(chunk_hash("kept")),))
        raw.execute("INSERT INTO chunks VALUES (?, 10, 0, 5.0)", (bytes.fromhex(chunk_hash("unreferenced")),))
    with SqliteMetadataStore(store_path) as upgraded:
        assert upgraded.schema_version() == SCHEMA_VERSION == 3
        assert upgraded.chunk_state(chunk_hash("kept")) == ChunkState.LIVE
        assert upgraded.chunks_present([chunk_hash("kept"), chunk_hash("unreferenced")]) == {
            chunk_hash("kept"), chunk_hash("unreferenced")}
        assert upgraded.pin_chunks("w", chunks("kept")).present == {chunk_hash("kept")}
        assert mark_all(upgraded) == {chunk_hash("unreferenced")}
