"""Conditional writes (S3 If-None-Match: * / If-Match) are decided inside the write transaction."""

from __future__ import annotations

import pytest

from metadata import NoSuchKey, PartRecord, PreconditionFailed, SqliteMetadataStore, WriteCondition
from tests.unit.metadata.builders import chunk_hash, chunks, object_record


def test_if_none_match_creates_only_once(store: SqliteMetadataStore) -> None:
    store.create_bucket("b", "alice")
    store.put_object(object_record("b", "k", chunks("one"), etag='"1"'), WriteCondition(if_none_match=True))
    with pytest.raises(PreconditionFailed):
        store.put_object(object_record("b", "k", chunks("two"), etag='"2"'), WriteCondition(if_none_match=True))
    assert store.get_object("b", "k").etag == '"1"'
    assert store.chunk_refcount(chunk_hash("two")) == 0  # the refused write changed nothing


def test_if_match_compares_etags(store: SqliteMetadataStore) -> None:
    store.create_bucket("b", "alice")
    with pytest.raises(NoSuchKey):
        store.put_object(object_record("b", "k", etag='"1"'), WriteCondition(if_match='"1"'))
    store.put_object(object_record("b", "k", etag='"1"'))
    with pytest.raises(PreconditionFailed):
        store.put_object(object_record("b", "k", etag='"2"'), WriteCondition(if_match='"other"'))
    store.put_object(object_record("b", "k", etag='"2"'), WriteCondition(if_match="1"))  # quotes optional
    assert store.get_object("b", "k").etag == '"2"'


def test_refused_completion_keeps_the_upload(store: SqliteMetadataStore) -> None:
    store.create_bucket("b", "alice")
    store.put_object(object_record("b", "k", etag='"existing"'))
    upload = store.create_multipart_upload("b", "k", "alice", "text/plain", {}, {}, None)
    store.put_part(upload.upload_id, PartRecord(1, 4 << 20, '"p1"', 1.0, {}, chunks("part")))
    with pytest.raises(PreconditionFailed):
        store.complete_multipart_upload(upload.upload_id, object_record("b", "k", chunks("part"), etag='"m-1"'),
                                        [(1, '"p1"')], WriteCondition(if_none_match=True))
    assert store.get_multipart_upload(upload.upload_id).key == "k"
    assert store.get_object("b", "k").etag == '"existing"'
    assert store.chunk_refcount(chunk_hash("part")) == 1  # still held by the part only
