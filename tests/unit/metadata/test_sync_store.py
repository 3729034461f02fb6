"""SqliteSyncStore on a real SQLite file, sharing the S3 metadata store's database: users, devices and
tokens, upload sessions and their storage-chunk references, commits and conflicts, folder moves and
deletes, restores, the journal (changes, tree) and cursors."""

from __future__ import annotations

import concurrent.futures
import hashlib
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from metadata import ChunkRef, ChunkState, SqliteMetadataStore
from metadata.sqlite_store import _MIGRATIONS, SCHEMA_VERSION
from metadata.sqlite_sync_store import SqliteSyncStore
from metadata.sync_records import (
    CommitResult,
    Device,
    InvalidSyncPath,
    InvalidSyncRequest,
    PathExists,
    SyncChunk,
    SyncChunksMissing,
    SyncForbidden,
    SyncNotFound,
    SyncPreconditionFailed,
    UploadClosed,
    UserExists,
    encode_cursor,
)

DAY = 1_795_305_600.0  # 2026-11-22 00:00 UTC
STORAGE_CHUNK = 4 << 20


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def sync_chunk(name: str, size: int = 1000) -> SyncChunk:
    return SyncChunk(digest(name), size)


def storage_chunks_for(chunk: SyncChunk) -> tuple[ChunkRef, ...]:
    """How the S3 write path stores a sync chunk: <= 4 MiB is one storage chunk with the same hash,
    a larger one is cut every 4 MiB."""
    if chunk.size <= STORAGE_CHUNK:
        return (ChunkRef(chunk.hash, chunk.size, 0),)
    refs = []
    for index, offset in enumerate(range(0, chunk.size, STORAGE_CHUNK)):
        refs.append(ChunkRef(digest(f"{chunk.hash}/{index}"), min(STORAGE_CHUNK, chunk.size - offset), offset))
    return tuple(refs)


@pytest.fixture
def metadata(tmp_path: Path) -> Iterator[SqliteMetadataStore]:
    opened = SqliteMetadataStore(tmp_path / "metadata.sqlite3")
    yield opened
    opened.close()


@pytest.fixture
def sync(metadata: SqliteMetadataStore) -> SqliteSyncStore:
    return SqliteSyncStore(metadata)


@pytest.fixture
def alice(sync: SqliteSyncStore) -> Device:
    sync.create_user("alice")
    device, _ = sync.create_device("alice", "laptop")
    return device


def upload(sync: SqliteSyncStore, metadata: SqliteMetadataStore, upload_id: str, chunk: SyncChunk) -> bool:
    """What the frontend's chunk PUT does: store the body (pins its storage chunks), then record it."""
    pin_id = uuid.uuid4().hex
    refs = storage_chunks_for(chunk)
    metadata.pin_chunks(pin_id, refs)
    try:
        recorded = sync.record_chunk_upload(upload_id, chunk.hash, chunk.size, refs, pin_id)
    except Exception:
        metadata.release_pins(pin_id)
        raise
    if not recorded:
        metadata.release_pins(pin_id)
    return recorded


def put_file(
    sync: SqliteSyncStore,
    metadata: SqliteMetadataStore,
    device: Device,
    path: str,
    chunks: list[SyncChunk],
    base_version: int | None = None,
    now: float | None = None,
) -> CommitResult:
    session, missing = sync.begin_upload(
        device.namespace_id, path, sum(c.size for c in chunks), chunks, base_version, device.device_id
    )
    for chunk in missing:
        upload(sync, metadata, session.upload_id, chunk)
    return sync.commit_upload(session.upload_id, now=now)


def refcounts(metadata: SqliteMetadataStore, *chunks: SyncChunk) -> list[int]:
    return [metadata.chunk_refcount(ref.hash) for chunk in chunks for ref in storage_chunks_for(chunk)]


# Users, devices, tokens --------------------------------------------------------------------------


def test_users_devices_and_tokens(sync: SqliteSyncStore, metadata: SqliteMetadataStore) -> None:
    alice = sync.create_user("alice")
    bob = sync.create_user("bob")
    with pytest.raises(UserExists):
        sync.create_user("alice")
    with pytest.raises(InvalidSyncRequest):
        sync.create_user("a/b")
    assert sync.get_user("alice") == alice and sync.get_user("carol") is None
    assert sync.list_users() == [alice, bob]
    assert sync.namespace_of("alice") != sync.namespace_of("bob")
    with pytest.raises(SyncNotFound):
        sync.namespace_of("carol")

    laptop, token = sync.create_device("alice", "laptop")
    phone, phone_token = sync.create_device("alice", "phone")
    assert token.startswith("cst_") and len(token) == 4 + 43 and token != phone_token
    assert laptop.namespace_id == sync.namespace_of("alice") and laptop.user_name == "alice"
    assert sync.device_for_token(token) == laptop
    assert sync.device_for_token(token + "x") is None and sync.device_for_token("garbage") is None
    with pytest.raises(SyncNotFound):
        sync.create_device("carol", "laptop")

    assert sync.revoke_device(laptop.device_id) is True
    assert sync.revoke_device(laptop.device_id) is False
    assert sync.revoke_device(9999) is False
    assert sync.device_for_token(token) is None  # revoked
    assert sync.device_for_token(phone_token) == phone
    listed = sync.list_devices("alice")
    assert [device.device_id for device in listed] == [laptop.device_id, phone.device_id]
    assert listed[0].revoked is not None and listed[1].revoked is None
    assert sync.list_devices("bob") == []
    with pytest.raises(SyncNotFound):
        sync.list_devices("carol")

    # Hashed at rest: the token text is nowhere in the database file or its WAL.
    metadata.close()
    stored = b"".join(path.read_bytes() for path in Path(metadata.path).parent.iterdir())
    assert token.encode() not in stored and phone_token.encode() not in stored
    assert hashlib.sha256(phone_token.encode()).digest() in stored


def test_schema_is_migrated_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    with SqliteMetadataStore(path) as first:
        assert first.schema_version() == SCHEMA_VERSION == 3
        SqliteSyncStore(first).create_user("alice")
    with SqliteMetadataStore(path) as second:
        assert [user.name for user in SqliteSyncStore(second).list_users()] == ["alice"]


# Upload sessions and references -------------------------------------------------------------------


def test_missing_chunks_are_per_namespace_but_storage_dedups(
    sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device
) -> None:
    sync.create_user("bob")
    bob, _ = sync.create_device("bob", "desktop")
    shared, own = sync_chunk("shared"), sync_chunk("alice only")
    put_file(sync, metadata, alice, "a.bin", [shared, own])
    assert refcounts(metadata, shared, own) == [1, 1]

    # Alice has it: not missing for her...
    _, missing = sync.begin_upload(alice.namespace_id, "copy.bin", 1000, [shared], None, alice.device_id)
    assert missing == []
    # ...but Bob cannot learn that anyone stores it.
    session, missing = sync.begin_upload(bob.namespace_id, "b.bin", 2000, [shared, shared], None, bob.device_id)
    assert missing == [shared]  # distinct
    assert not sync.namespace_has_chunk(bob.namespace_id, shared.hash)
    assert sync.namespace_has_chunk(alice.namespace_id, shared.hash)
    # Bob uploads it: the S3 write path finds the storage chunk LIVE and shares its row.
    assert upload(sync, metadata, session.upload_id, shared) is True
    assert metadata.chunk_refcount(shared.hash) == 2  # Alice's version + Bob's session
    assert sync.namespace_has_chunk(bob.namespace_id, shared.hash)  # his open session holds it
    assert sync.storage_chunks_of(shared.hash) == storage_chunks_for(shared)
    result = sync.commit_upload(session.upload_id)
    assert metadata.chunk_refcount(shared.hash) == 3  # Alice's version + Bob's two occurrences
    assert sync.get_entry(result.file_id).namespace_id == bob.namespace_id
    assert sync.storage_chunks_of(digest("never")) is None


def test_record_chunk_upload_is_idempotent_and_checked(
    sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device
) -> None:
    big = sync_chunk("big", 10 << 20)  # three storage chunks
    session, missing = sync.begin_upload(alice.namespace_id, "f", big.size, [big], None, alice.device_id)
    assert missing == [big]
    assert upload(sync, metadata, session.upload_id, big) is True
    assert refcounts(metadata, big) == [1, 1, 1]
    assert metadata.gc_counts().pins == 0  # the pins became the session's references
    assert upload(sync, metadata, session.upload_id, big) is False  # no second reference
    assert refcounts(metadata, big) == [1, 1, 1]
    assert sync.missing_chunks(session.upload_id) == []
    assert sync.get_upload(session.upload_id).uploaded == {big.hash}

    refs = storage_chunks_for(big)
    with pytest.raises(InvalidSyncRequest):  # not in the session
        sync.record_chunk_upload(session.upload_id, digest("other"), 1000, (ChunkRef(digest("other"), 1000, 0),), "p")
    with pytest.raises(InvalidSyncRequest):  # size differs from the session's
        sync.record_chunk_upload(session.upload_id, big.hash, big.size - 1, refs, "p")
    with pytest.raises(SyncNotFound):
        sync.record_chunk_upload("unone", big.hash, big.size, refs, "p")
    sync.commit_upload(session.upload_id)
    with pytest.raises(UploadClosed):
        sync.record_chunk_upload(session.upload_id, big.hash, big.size, refs, "p")


def test_begin_upload_validates(sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device) -> None:
    ns = alice.namespace_id
    with pytest.raises(InvalidSyncRequest):  # sizes do not add up
        sync.begin_upload(ns, "f", 5, [sync_chunk("a")], None, None)
    with pytest.raises(InvalidSyncRequest):  # chunk larger than 16 MiB
        sync.begin_upload(ns, "f", 17 << 20, [sync_chunk("a", 17 << 20)], None, None)
    with pytest.raises(InvalidSyncRequest):  # not a lowercase hex hash
        sync.begin_upload(ns, "f", 1, [SyncChunk("A" * 64, 1)], None, None)
    with pytest.raises(InvalidSyncPath):
        sync.begin_upload(ns, "/f", 0, [], None, None)
    with pytest.raises(InvalidSyncRequest):  # unknown base version
        sync.begin_upload(ns, "f", 0, [], 12345, None)
    with pytest.raises(SyncNotFound):
        sync.begin_upload(999, "f", 0, [], None, None)
    sync.create_user("bob")
    bob, _ = sync.create_device("bob", "desktop")
    theirs = put_file(sync, metadata, bob, "secret", [])
    with pytest.raises(SyncForbidden):
        sync.begin_upload(ns, "f", 0, [], theirs.version_id, None)
    put_file(sync, metadata, alice, "file", [])
    with pytest.raises(PathExists):  # under a live file
        sync.begin_upload(ns, "file/child", 0, [], None, None)


def test_commit_moves_references_from_session_to_version(
    sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device
) -> None:
    a, b = sync_chunk("a", 6 << 20), sync_chunk("b")  # a: two storage chunks
    session, missing = sync.begin_upload(alice.namespace_id, "doc", a.size * 2 + b.size, [a, b, a], None,
                                         alice.device_id)  # fmt: skip
    assert missing == [a, b]
    for chunk in missing:
        upload(sync, metadata, session.upload_id, chunk)
    assert refcounts(metadata, a, b) == [1, 1, 1]  # the session: one per storage chunk of each distinct chunk
    first = sync.commit_upload(session.upload_id)
    assert refcounts(metadata, a, b) == [2, 2, 1]  # the version: one per occurrence
    assert sync.commit_upload(session.upload_id) == first  # idempotent, nothing added
    assert refcounts(metadata, a, b) == [2, 2, 1]
    assert sync.get_upload(session.upload_id).state == "committed"
    assert sync.get_upload(session.upload_id).result == first

    # A new version reusing chunks the namespace holds uploads nothing and expands through the mapping.
    c = sync_chunk("c")
    second = put_file(sync, metadata, alice, "doc", [a, c], base_version=first.version_id)
    assert (second.file_id, second.conflict) == (first.file_id, False)
    assert refcounts(metadata, a, b, c) == [3, 3, 1, 1]
    entry = sync.get_entry(first.file_id)
    assert entry.current_version == second.version_id and entry.chunks == (a, c) and entry.size == a.size + c.size
    assert [v.version_id for v in sync.versions(first.file_id)] == [first.version_id, second.version_id]
    assert sync.get_version(second.version_id).base_version == first.version_id
    assert sync.get_version(second.version_id).device == "laptop"


def test_expiry_releases_session_references_for_garbage_collection(
    sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device
) -> None:
    kept, dropped = sync_chunk("kept"), sync_chunk("dropped")
    put_file(sync, metadata, alice, "old", [kept])
    session, missing = sync.begin_upload(alice.namespace_id, "new", 2000, [kept, dropped], None, alice.device_id,
                                         expires_in=60.0)  # fmt: skip
    assert missing == [dropped]
    upload(sync, metadata, session.upload_id, dropped)
    assert metadata.chunk_refcount(dropped.hash) == 1
    assert sync.expire_uploads(session.expires_at - 10) == 0  # not yet
    assert sync.expire_uploads(session.expires_at + 61) == 1
    assert metadata.chunk_refcount(dropped.hash) == 0
    assert metadata.chunk_refcount(kept.hash) == 1  # the committed version still holds it
    expired = sync.get_upload(session.upload_id)
    assert expired.state == "expired" and expired.uploaded == frozenset()
    assert not sync.namespace_has_chunk(alice.namespace_id, dropped.hash)
    with pytest.raises(UploadClosed):
        sync.commit_upload(session.upload_id)
    with pytest.raises(UploadClosed):
        upload(sync, metadata, session.upload_id, dropped)
    assert sync.expire_uploads(session.expires_at + 1000) == 0  # already expired
    # The storage garbage collector now takes it (and only it).
    marked = metadata.mark_chunks_for_collection(unreferenced_before=1e12, pins_expired_before=0.0)
    assert [chunk.hash for chunk in marked] == [dropped.hash]
    assert metadata.chunk_state(kept.hash) == ChunkState.LIVE


def test_commit_with_missing_chunks_changes_nothing(
    sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device
) -> None:
    a, b, c = sync_chunk("a"), sync_chunk("b"), sync_chunk("c")
    session, _ = sync.begin_upload(alice.namespace_id, "f", 4000, [a, b, c, b], None, alice.device_id)
    upload(sync, metadata, session.upload_id, a)
    seq_before = sync.latest_seq(alice.namespace_id)
    with pytest.raises(SyncChunksMissing) as raised:
        sync.commit_upload(session.upload_id)
    assert raised.value.missing == [b.hash, c.hash]
    assert raised.value.code == "ChunksMissing" and raised.value.status == 409
    assert sync.get_upload(session.upload_id).state == "open"
    assert sync.latest_seq(alice.namespace_id) == seq_before
    assert refcounts(metadata, a) == [1]
    with pytest.raises(SyncNotFound):
        sync.entry_by_path(alice.namespace_id, "f")
    assert sync.missing_chunks(session.upload_id) == [b, c]
    for chunk in (b, c):
        upload(sync, metadata, session.upload_id, chunk)
    sync.commit_upload(session.upload_id)
    assert refcounts(metadata, a, b, c) == [1, 2, 1]


# Conflicts ---------------------------------------------------------------------------------------


def test_stale_base_makes_a_conflicted_copy(
    sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device
) -> None:
    phone, _ = sync.create_device("alice", "phone")
    first = put_file(sync, metadata, alice, "docs/report.pdf", [sync_chunk("v1")])
    put_file(sync, metadata, phone, "docs/report.pdf", [sync_chunk("v2")], base_version=first.version_id)
    stale = put_file(sync, metadata, alice, "docs/report.pdf", [sync_chunk("v3")], base_version=first.version_id,
                     now=DAY + 3600)  # fmt: skip
    assert stale.conflict and stale.conflict_of == "docs/report.pdf"
    assert stale.path == "docs/report (laptop's conflicted copy 2026-11-22).pdf"
    assert stale.file_id != first.file_id
    assert sync.get_entry(first.file_id).chunks == (sync_chunk("v2"),)  # the other edit is kept
    # Another conflict the same day takes the next free name.
    again = put_file(sync, metadata, alice, "docs/report.pdf", [sync_chunk("v4")], base_version=first.version_id,
                     now=DAY + 7200)  # fmt: skip
    assert again.path == "docs/report (laptop's conflicted copy 2026-11-22) (2).pdf"
    assert sync.entry_by_path(alice.namespace_id, again.path).chunks == (sync_chunk("v4"),)


def test_no_base_with_a_live_file_and_deleted_since_base_conflict(
    sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device
) -> None:
    first = put_file(sync, metadata, alice, "notes", [sync_chunk("1")])
    blind = put_file(sync, metadata, alice, "notes", [sync_chunk("2")], now=DAY)
    assert blind.conflict and blind.path == "notes (laptop's conflicted copy 2026-11-22)"
    sync.delete_entry(first.file_id, alice.device_id)
    gone = put_file(sync, metadata, alice, "notes", [sync_chunk("3")], base_version=first.version_id, now=DAY)
    assert gone.conflict and gone.path == "notes (laptop's conflicted copy 2026-11-22) (2)"
    # With the file gone and no base, the path is free again: no conflict.
    fresh = put_file(sync, metadata, alice, "notes", [sync_chunk("4")])
    assert not fresh.conflict and fresh.path == "notes" and fresh.file_id != first.file_id
    # A file cannot take the place of a folder (even an implied one): conflicted copy.
    put_file(sync, metadata, alice, "dir/inner", [])
    clash = put_file(sync, metadata, alice, "dir", [], now=DAY)
    assert clash.conflict and clash.path == "dir (laptop's conflicted copy 2026-11-22)"


def test_commit_to_current_base_follows_a_moved_file(
    sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device
) -> None:
    first = put_file(sync, metadata, alice, "a.txt", [sync_chunk("1")])
    sync.move_entry(first.file_id, "b.txt", alice.device_id)
    second = put_file(sync, metadata, alice, "a.txt", [sync_chunk("2")], base_version=first.version_id)
    assert (second.file_id, second.path, second.conflict) == (first.file_id, "b.txt", False)


# Folders, moves, deletes ---------------------------------------------------------------------------


def build_docs(sync: SqliteSyncStore, metadata: SqliteMetadataStore, device: Device) -> dict[str, int]:
    ids: dict[str, int] = {}
    for folder in ("docs", "docs/sub"):
        ids[folder] = sync.make_folder(device.namespace_id, folder, device.device_id)[0].file_id
    for path in ("docs/a.txt", "docs/sub/b.txt", "docs2/x", "docs.txt"):
        ids[path] = put_file(sync, metadata, device, path, [sync_chunk(path)]).file_id
    return ids


def live_paths(sync: SqliteSyncStore, namespace_id: int) -> list[str]:
    return [entry.path for entry in sync.tree(namespace_id)[0]]


def test_folder_move_moves_everything_under_it_atomically(
    sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device
) -> None:
    ns = alice.namespace_id
    ids = build_docs(sync, metadata, alice)
    before = sync.latest_seq(ns)
    seq = sync.move_entry(ids["docs"], "archive/docs", alice.device_id)
    page = sync.changes(ns, before, 100)
    assert [(e.action, e.old_path, e.path) for e in page.entries] == [
        ("move", "docs", "archive/docs"),
        ("move", "docs/a.txt", "archive/docs/a.txt"),
        ("move", "docs/sub", "archive/docs/sub"),
        ("move", "docs/sub/b.txt", "archive/docs/sub/b.txt"),
    ]
    assert seq == page.seq == sync.latest_seq(ns)
    assert page.entries[1].version_id == sync.get_entry(ids["docs/a.txt"]).current_version
    assert live_paths(sync, ns) == [
        "archive/docs", "archive/docs/a.txt", "archive/docs/sub", "archive/docs/sub/b.txt", "docs.txt", "docs2/x",
    ]  # fmt: skip
    assert sync.get_entry(ids["docs/sub/b.txt"]).path == "archive/docs/sub/b.txt"  # file_id survives

    # Refused moves change nothing.
    seq_before = sync.latest_seq(ns)
    with pytest.raises(PathExists):
        sync.move_entry(ids["docs"], "docs.txt", alice.device_id)
    with pytest.raises(PathExists):  # an implied folder with content is in the way
        sync.move_entry(ids["docs"], "docs2", alice.device_id)
    with pytest.raises(PathExists):  # under a live file
        sync.move_entry(ids["docs"], "docs.txt/inside", alice.device_id)
    with pytest.raises(InvalidSyncRequest):
        sync.move_entry(ids["docs"], "archive/docs/sub/deeper", alice.device_id)
    with pytest.raises(InvalidSyncPath):
        sync.move_entry(ids["docs"], "../out", alice.device_id)
    assert sync.latest_seq(ns) == seq_before
    assert sync.move_entry(ids["docs"], "archive/docs", alice.device_id) == seq_before  # no-op


def test_folder_move_onto_its_own_parent_name(
    sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device
) -> None:
    # "x/a" -> "x": the new path of "x/a/a" is the old path of "x/a" (two-phase update).
    ns = alice.namespace_id
    folder = sync.make_folder(ns, "x/a", alice.device_id)[0]
    sync.make_folder(ns, "x/a/a", alice.device_id)
    put_file(sync, metadata, alice, "x/a/a/f", [])
    sync.move_entry(folder.file_id, "x", alice.device_id)
    assert live_paths(sync, ns) == ["x", "x/a", "x/a/f"]


def test_folder_delete_deletes_everything_under_it(
    sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device
) -> None:
    ns = alice.namespace_id
    ids = build_docs(sync, metadata, alice)
    counts = refcounts(metadata, sync_chunk("docs/a.txt"))
    before = sync.latest_seq(ns)
    seq = sync.delete_entry(ids["docs"], alice.device_id)
    page = sync.changes(ns, before, 100)
    assert [(e.action, e.path, e.deleted) for e in page.entries] == [
        ("delete", "docs/sub/b.txt", True),
        ("delete", "docs/sub", True),
        ("delete", "docs/a.txt", True),
        ("delete", "docs", True),
    ]  # children before parents
    assert seq == page.seq
    assert live_paths(sync, ns) == ["docs.txt", "docs2/x"]
    assert sync.get_entry(ids["docs/a.txt"]).deleted
    assert refcounts(metadata, sync_chunk("docs/a.txt")) == counts  # soft: versions keep their chunks
    assert sync.delete_entry(ids["docs"], alice.device_id) == seq  # already deleted: no entry
    assert sync.latest_seq(ns) == seq
    with pytest.raises(SyncNotFound):
        sync.move_entry(ids["docs"], "elsewhere", alice.device_id)
    with pytest.raises(SyncNotFound):
        sync.delete_entry(424242, alice.device_id)


def test_conditional_deletes_refuse_what_changed_since_the_client_looked(
    sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device
) -> None:
    ns = alice.namespace_id
    ids = build_docs(sync, metadata, alice)
    seen_version = sync.get_entry(ids["docs.txt"]).current_version
    assert seen_version is not None
    put_file(sync, metadata, alice, "docs.txt", [sync_chunk("docs.txt v2")], base_version=seen_version)
    before = sync.latest_seq(ns)
    with pytest.raises(SyncPreconditionFailed):
        sync.delete_entry(ids["docs.txt"], alice.device_id, expected_version=seen_version)
    with pytest.raises(SyncPreconditionFailed):
        sync.delete_entry(ids["docs"], alice.device_id, only_if_empty=True)
    assert sync.latest_seq(ns) == before and "docs.txt" in live_paths(sync, ns)
    assert "docs/sub/b.txt" in live_paths(sync, ns)
    current = sync.get_entry(ids["docs.txt"]).current_version
    sync.delete_entry(ids["docs.txt"], alice.device_id, expected_version=current)
    sync.delete_entry(ids["docs/sub/b.txt"], alice.device_id)
    sync.delete_entry(ids["docs/sub"], alice.device_id, only_if_empty=True)
    assert live_paths(sync, ns) == ["docs", "docs/a.txt", "docs2/x"]


def test_make_folder_is_idempotent_and_refuses_files(
    sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device
) -> None:
    ns = alice.namespace_id
    folder, seq = sync.make_folder(ns, "a/b/c", alice.device_id)  # parents implied
    assert folder.kind == "folder" and folder.current_version is None and folder.chunks is None
    again, seq_again = sync.make_folder(ns, "a/b/c", alice.device_id)
    assert again == folder and seq_again == seq == sync.latest_seq(ns)
    put_file(sync, metadata, alice, "file", [])
    with pytest.raises(PathExists):
        sync.make_folder(ns, "file", alice.device_id)
    with pytest.raises(PathExists):
        sync.make_folder(ns, "file/sub", alice.device_id)
    assert sync.versions(folder.file_id) == []


# Restore -----------------------------------------------------------------------------------------


def test_restore_makes_a_new_version_and_undeletes(
    sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device
) -> None:
    ns = alice.namespace_id
    old, new = sync_chunk("old"), sync_chunk("new")
    first = put_file(sync, metadata, alice, "f", [old])
    second = put_file(sync, metadata, alice, "f", [new], base_version=first.version_id)
    restored = sync.restore_version(first.file_id, first.version_id, alice.device_id)
    assert restored.version_id > second.version_id and restored.path == "f" and not restored.conflict
    assert sync.get_entry(first.file_id).chunks == (old,)
    assert sync.get_version(restored.version_id).base_version == second.version_id
    assert refcounts(metadata, old, new) == [2, 1]
    last = sync.changes(ns, restored.seq - 1, 10).entries[0]
    assert (last.action, last.version_id, last.chunks) == ("restore", restored.version_id, (old,))

    sync.delete_entry(first.file_id, alice.device_id)
    undeleted = sync.restore_version(first.file_id, second.version_id, alice.device_id)
    entry = sync.get_entry(first.file_id)
    assert not entry.deleted and entry.chunks == (new,) and entry.current_version == undeleted.version_id

    # A deleted file whose path was taken since cannot come back there.
    sync.delete_entry(first.file_id, alice.device_id)
    put_file(sync, metadata, alice, "f", [])
    with pytest.raises(PathExists):
        sync.restore_version(first.file_id, first.version_id, alice.device_id)
    other = put_file(sync, metadata, alice, "g", [])
    with pytest.raises(SyncNotFound):  # not this file's version
        sync.restore_version(first.file_id, other.version_id, alice.device_id)
    folder, _ = sync.make_folder(ns, "dir", alice.device_id)
    with pytest.raises(InvalidSyncRequest):
        sync.restore_version(folder.file_id, first.version_id, alice.device_id)


# Journal -----------------------------------------------------------------------------------------


def test_changes_pages_in_seq_order_per_namespace(
    sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device
) -> None:
    sync.create_user("bob")
    bob, _ = sync.create_device("bob", "desktop")
    ns = alice.namespace_id
    assert sync.changes(ns, 0, 10).entries == [] and sync.latest_seq(ns) == 0
    for index in range(5):
        put_file(sync, metadata, alice, f"f{index}", [sync_chunk(str(index))])
        put_file(sync, metadata, bob, f"bob{index}", [])  # interleaved: global seq
    seen: list[str] = []
    after, pages = 0, 0
    while True:
        page = sync.changes(ns, after, 2)
        pages += 1
        seen += [entry.path for entry in page.entries]
        assert all(entry.namespace_id == ns for entry in page.entries)
        after = page.seq
        if not page.has_more:
            break
    assert seen == [f"f{index}" for index in range(5)] and pages == 3
    assert after == sync.latest_seq(ns)
    empty = sync.changes(ns, after, 2)
    assert empty.entries == [] and empty.seq == after and not empty.has_more
    first = sync.changes(ns, 0, 1).entries[0]
    assert (first.action, first.kind, first.device, first.size, first.chunks) == (
        "commit", "file", "laptop", 1000, (sync_chunk("0"),),
    )  # fmt: skip
    with pytest.raises(InvalidSyncRequest):
        sync.changes(ns, 0, 0)


def test_tree_is_the_live_entries_with_the_latest_seq(
    sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device
) -> None:
    ns = alice.namespace_id
    sync.make_folder(ns, "photos", alice.device_id)
    kept = put_file(sync, metadata, alice, "photos/cat.jpg", [sync_chunk("cat")])
    dropped = put_file(sync, metadata, alice, "old.txt", [])
    sync.delete_entry(dropped.file_id, alice.device_id)
    entries, seq = sync.tree(ns)
    assert seq == sync.latest_seq(ns)
    assert [(e.path, e.kind, e.action) for e in entries] == [("photos", "folder", "mkdir"),
                                                            ("photos/cat.jpg", "file", "commit")]  # fmt: skip
    cat = entries[1]
    assert (cat.file_id, cat.version_id, cat.chunks, cat.size, cat.deleted, cat.seq, cat.device) == (
        kept.file_id, kept.version_id, (sync_chunk("cat"),), 1000, False, kept.seq, "laptop",
    )  # fmt: skip
    assert sync.tree(12345) == ([], 0)


# Reading entries --------------------------------------------------------------------------------


def test_entry_lookups(sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device) -> None:
    result = put_file(sync, metadata, alice, "ünïcode name.txt", [sync_chunk("u")])
    entry = sync.entry_by_path(alice.namespace_id, "ünïcode name.txt")
    assert entry == sync.get_entry(result.file_id)
    with pytest.raises(SyncNotFound):
        sync.entry_by_path(alice.namespace_id, "Ünïcode name.txt")  # case-sensitive
    with pytest.raises(SyncNotFound):
        sync.get_entry(999)
    with pytest.raises(SyncNotFound):
        sync.get_version(999)
    with pytest.raises(SyncNotFound):
        sync.versions(999)
    with pytest.raises(SyncNotFound):
        sync.get_upload("unope")
    assert encode_cursor(alice.namespace_id, result.seq).startswith("c1.")


# Mappings, expiry, migration, concurrency ------------------------------------------------------------


def test_a_live_mapping_is_kept_and_a_collected_one_rewritten(
    sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device
) -> None:
    sync.create_user("bob")
    bob, _ = sync.create_device("bob", "desktop")
    chunk = sync_chunk("x", 6 << 20)
    put_file(sync, metadata, alice, "x", [chunk])
    original = storage_chunks_for(chunk)
    # Bob's frontend stored the same bytes cut differently: the live mapping stays (Alice's version
    # reads through it), Bob's session references it, his writer's stripe is left to collection.
    other_cut = (ChunkRef(digest("other cut"), chunk.size, 0),)
    session, _ = sync.begin_upload(bob.namespace_id, "x", chunk.size, [chunk], None, bob.device_id)
    metadata.pin_chunks("bob-pin", other_cut)
    assert sync.record_chunk_upload(session.upload_id, chunk.hash, chunk.size, other_cut, "bob-pin")
    assert sync.storage_chunks_of(chunk.hash) == original
    assert [metadata.chunk_refcount(ref.hash) for ref in original] == [2, 2]
    assert metadata.chunk_refcount(other_cut[0].hash) == 0 and metadata.gc_counts().pins == 0
    sync.commit_upload(session.upload_id)
    assert [metadata.chunk_refcount(ref.hash) for ref in original] == [2, 2]

    # A mapping whose storage chunks were collected is written afresh by the next upload.
    lost = sync_chunk("lost")
    session, _ = sync.begin_upload(alice.namespace_id, "lost", lost.size, [lost], None, alice.device_id)
    upload(sync, metadata, session.upload_id, lost)
    sync.expire_uploads(session.expires_at + 1)
    marked = metadata.mark_chunks_for_collection(unreferenced_before=1e12, pins_expired_before=0.0)
    assert lost.hash in {chunk.hash for chunk in marked}
    metadata.finish_collection([chunk.hash for chunk in marked])
    assert metadata.chunk_state(lost.hash) is None
    again, missing = sync.begin_upload(alice.namespace_id, "lost", lost.size, [lost], None, alice.device_id)
    assert missing == [lost]
    upload(sync, metadata, again.upload_id, lost)  # the S3 write path stores a fresh stripe
    assert metadata.chunk_state(lost.hash) == ChunkState.LIVE
    sync.commit_upload(again.upload_id)
    assert metadata.chunk_refcount(lost.hash) == 1


def test_activity_pushes_expiry_back(sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device) -> None:
    a, b = sync_chunk("a"), sync_chunk("b")
    session, _ = sync.begin_upload(alice.namespace_id, "f", 2000, [a, b], None, alice.device_id, expires_in=3600.0)
    upload(sync, metadata, session.upload_id, a)
    assert sync.get_upload(session.upload_id).expires_at > session.expires_at  # now + 3600 at the upload
    with pytest.raises(InvalidSyncRequest):  # one hash, two sizes
        sync.begin_upload(alice.namespace_id, "g", 1500, [a, SyncChunk(a.hash, 500)], None, None)


def test_version_2_file_gains_the_sync_tables(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite3"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE schema_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)")
        for statements in _MIGRATIONS[:2]:
            for statement in statements:
                raw.execute(statement)
        raw.execute("INSERT INTO schema_version VALUES (1, 2)")
        raw.execute("INSERT INTO buckets VALUES ('kept', 'alice', 1.0)")
    raw.close()
    with SqliteMetadataStore(path) as upgraded:
        assert upgraded.schema_version() == 3
        assert upgraded.get_bucket("kept") is not None
        sync = SqliteSyncStore(upgraded)
        sync.create_user("alice")
        assert sync.make_folder(sync.namespace_of("alice"), "d", None)[1] == 1


def test_concurrent_blind_commits_to_one_path_make_one_file_and_conflicted_copies(
    sync: SqliteSyncStore, metadata: SqliteMetadataStore, alice: Device
) -> None:
    sessions = [
        sync.begin_upload(alice.namespace_id, "same.txt", 0, [], None, alice.device_id)[0] for _ in range(4)
    ]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda session: sync.commit_upload(session.upload_id, now=DAY), sessions))
    assert sorted(result.conflict for result in results) == [False, True, True, True]
    assert sorted(result.path for result in results) == [
        "same (laptop's conflicted copy 2026-11-22) (2).txt",
        "same (laptop's conflicted copy 2026-11-22) (3).txt",
        "same (laptop's conflicted copy 2026-11-22).txt",
        "same.txt",
    ]
    assert len({result.seq for result in results}) == 4
