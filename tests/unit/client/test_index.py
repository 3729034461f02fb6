"""client.index: base tree + chunk locations, remote replica from journal entries, cursor, uploads."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.chunking import FileChunk, chunks_with_offsets, content_digest
from client.index import BaseRecord, ChunkLocation, LocalIndex


def h(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def api_chunks(*pairs: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"hash": h(name), "size": size} for name, size in pairs]


def entry(action: str, path: str, file_id: int, *, kind: str = "file", version_id: int | None = None,
          chunks: list[dict[str, Any]] | None = None, old_path: str | None = None) -> dict[str, Any]:
    return {"file_id": file_id, "kind": kind, "action": action, "path": path, "old_path": old_path,
            "version_id": version_id, "size": None if chunks is None else sum(c["size"] for c in chunks),
            "chunks": chunks, "deleted": action == "delete", "device": "laptop", "created": 1.0}


@pytest.fixture
def index(tmp_path: Path) -> Iterator[LocalIndex]:
    with LocalIndex(tmp_path / "index.db") as opened:
        yield opened


def test_pragmas_and_reopen_keep_data(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    with LocalIndex(path) as index:
        index.put_base(BaseRecord("docs", "folder", file_id=1))
        index.set_cursor("c1.abc")
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    with LocalIndex(path) as index:
        assert index.get_base("docs") == BaseRecord("docs", "folder", file_id=1)
        assert index.get_cursor() == "c1.abc"


def test_base_records_and_chunk_lookup(index: LocalIndex) -> None:
    chunks = tuple(chunks_with_offsets([(h("a"), 100), (h("b"), 50)]))
    record = BaseRecord("x/f.bin", "file", 150, 123456789, 42, chunks, content_digest(chunks), 5, 9)
    index.put_base(record, BaseRecord("x", "folder", file_id=4))
    assert index.get_base("x/f.bin") == record
    assert [r.path for r in index.base_records()] == ["x", "x/f.bin"]
    assert index.find_chunk(h("b")) == ChunkLocation("x/f.bin", 100, 50)
    assert index.find_chunk(h("zzz")) is None

    # A new version of the file drops the chunk locations of the old one.
    new_chunks = tuple(chunks_with_offsets([(h("c"), 10)]))
    index.put_base(BaseRecord("x/f.bin", "file", 10, 2, 42, new_chunks, content_digest(new_chunks), 5, 10))
    assert index.find_chunk(h("a")) is None
    assert index.find_chunk(h("c")) == ChunkLocation("x/f.bin", 0, 10)

    index.delete_base("x/f.bin")
    assert index.get_base("x/f.bin") is None
    assert index.find_chunk(h("c")) is None
    assert index.get_base("x") is not None


def test_stat_cache(index: LocalIndex) -> None:
    chunks = [FileChunk(h("a"), 0, 7)]
    index.put_stat_cache("new.txt", 7, 1000, 3, chunks, content_digest(chunks))
    cached = index.cached_hash("new.txt", 7, 1000, 3)
    assert cached is not None
    assert cached.chunks == tuple(chunks)
    assert cached.digest == content_digest(chunks)
    assert index.cached_hash("new.txt", 7, 1001, 3) is None  # mtime changed
    assert index.cached_hash("new.txt", 7, 1000, 4) is None  # replaced by another inode
    # The base record serves as the stat cache of a synced file.
    index.put_base(BaseRecord("old.txt", "file", 7, 5, 6, tuple(chunks), content_digest(chunks), 1, 1))
    assert index.cached_hash("old.txt", 7, 5, 6) is not None
    assert index.prune_stat_cache(["other"]) == 1
    assert index.cached_hash("new.txt", 7, 1000, 3) is None


def test_remote_commit_mkdir_delete_folder(index: LocalIndex) -> None:
    index.apply_remote_entries([
        entry("mkdir", "docs", 1, kind="folder"),
        entry("commit", "docs/a.txt", 2, version_id=10, chunks=api_chunks(("a", 5))),
        entry("commit", "docs/sub/b.txt", 3, version_id=11, chunks=api_chunks(("b", 6), ("c", 1))),
        entry("commit", "docsx.txt", 4, version_id=12, chunks=[]),
    ], "c1.one")
    assert index.get_cursor() == "c1.one"
    record = index.get_remote("docs/sub/b.txt")
    assert record is not None
    assert record.version_id == 11
    assert record.size == 7
    assert record.chunks == tuple(chunks_with_offsets([(h("b"), 6), (h("c"), 1)]))
    assert record.digest == content_digest(record.chunks)
    empty = index.get_remote("docsx.txt")
    assert empty is not None
    assert empty.chunks == ()
    assert empty.digest == content_digest([])

    index.apply_remote_entries([entry("delete", "docs", 1, kind="folder")], "c1.two")
    assert [r.path for r in index.remote_records()] == ["docsx.txt"]  # a sibling prefix survives
    assert index.get_cursor() == "c1.two"


def test_remote_move_folder_rekeys_everything_under_it(index: LocalIndex) -> None:
    index.replace_remote([
        entry("mkdir", "a", 1, kind="folder"),
        entry("commit", "a/f", 2, version_id=5, chunks=api_chunks(("f", 3))),
        entry("commit", "a/g/h", 3, version_id=6, chunks=api_chunks(("h", 4))),
        entry("commit", "ab", 4, version_id=7, chunks=api_chunks(("ab", 1))),
    ], "c1.tree")
    # The server writes one move entry per moved entry, the folder first; children's old paths are gone by then.
    index.apply_remote_entries([
        entry("move", "b", 1, kind="folder", old_path="a"),
        entry("move", "b/f", 2, version_id=5, old_path="a/f"),
        entry("move", "b/g/h", 3, version_id=6, old_path="a/g/h"),
    ], "c1.moved")
    assert [r.path for r in index.remote_records()] == ["ab", "b", "b/f", "b/g/h"]
    moved = index.get_remote("b/g/h")
    assert moved is not None
    assert moved.file_id == 3
    assert moved.chunks == tuple(chunks_with_offsets([(h("h"), 4)]))

    # A file rename to a new name, then a new version there.
    index.apply_remote_entries([entry("move", "renamed", 4, version_id=7, old_path="ab"),
                                entry("commit", "renamed", 4, version_id=8, chunks=api_chunks(("z", 9)))],
                               "c1.three")
    renamed = index.get_remote("renamed")
    assert renamed is not None
    assert (renamed.file_id, renamed.version_id, renamed.size) == (4, 8, 9)
    assert index.get_remote("ab") is None


def test_remote_restore_and_file_id_uniqueness(index: LocalIndex) -> None:
    index.apply_remote_entries([entry("commit", "f", 7, version_id=1, chunks=api_chunks(("v1", 1)))], "c1.a")
    index.apply_remote_entries([entry("delete", "f", 7)], "c1.b")
    assert index.get_remote("f") is None
    index.apply_remote_entries([entry("restore", "f", 7, version_id=3, chunks=api_chunks(("v1", 1)))], "c1.c")
    restored = index.get_remote("f")
    assert restored is not None
    assert restored.version_id == 3
    # A commit of the same file_id at another path (the replica missed a move) leaves one node.
    index.apply_remote_entries([entry("commit", "g", 7, version_id=4, chunks=api_chunks(("v2", 2)))], "c1.d")
    assert [r.path for r in index.remote_records()] == ["g"]


def test_malformed_batch_applies_nothing(index: LocalIndex) -> None:
    index.set_cursor("c1.before")
    with pytest.raises(ValueError):
        index.apply_remote_entries([entry("commit", "f", 1, version_id=1, chunks=[]),
                                    entry("explode", "g", 2)], "c1.after")
    assert index.get_remote("f") is None
    assert index.get_cursor() == "c1.before"


def test_replace_remote_drops_old_entries(index: LocalIndex) -> None:
    index.apply_remote_entries([entry("commit", "old", 1, version_id=1, chunks=[])], "c1.a")
    index.replace_remote([entry("commit", "new", 2, version_id=2, chunks=[])], "c1.b")
    assert [r.path for r in index.remote_records()] == ["new"]
    assert index.get_cursor() == "c1.b"


def test_uploads(index: LocalIndex) -> None:
    record = index.put_upload("big.iso", "u0123", "d" * 64, created=10.0)
    assert index.get_upload("big.iso") == record
    assert index.uploads() == [record]
    index.delete_upload("big.iso")
    assert index.get_upload("big.iso") is None


def test_usable_from_several_threads(index: LocalIndex) -> None:
    def worker(number: int) -> None:
        for item in range(20):
            index.put_base(BaseRecord(f"t{number}/{item}", "folder"))

    threads = [threading.Thread(target=worker, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(index.base_records()) == 80
