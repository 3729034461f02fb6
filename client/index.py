"""The daemon's local SQLite index (contracts section 4): base tree, remote replica, cursor, uploads.

Tables:
- `files`: the **base tree** (last-synced state) with the local stat cache fields of each synced
  file (size, mtime_ns, inode), its chunk list, content digest, file_id and version_id.
- `chunks`: chunk hash -> (path, offset, size) over the base tree's files, kept with `files` in the
  same transactions, so a download can copy a chunk it already has from a local file.
- `remote`: the **remote tree** replica, built from `/tree` snapshots and `/changes` journal entries.
- `state`: key -> value (the `/changes` cursor under "cursor").
- `uploads`: path -> resumable upload session (upload_id, digest of the content being uploaded).
- `stat_cache`: path -> (size, mtime_ns, inode, chunks, digest) of local files hashed by the scanner
  but not (yet) synced, so an unsynced 50 GB file is not re-hashed on every scan.

Durability: WAL with synchronous=FULL, one transaction per method; remote entries and the cursor
move together so a crash can never skip a change. Thread safety: one sqlite3 connection guarded by
a lock, so the daemon may call methods from any thread (directly, or via `asyncio.to_thread` since
each call does blocking disk I/O); calls are serialised.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from client.chunking import FileChunk, chunks_with_offsets, content_digest

SCHEMA_VERSION = 1
FILE = "file"
FOLDER = "folder"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, kind TEXT NOT NULL, size INTEGER, mtime_ns INTEGER, inode INTEGER,
    chunk_list TEXT, digest TEXT, file_id INTEGER, version_id INTEGER);
CREATE TABLE IF NOT EXISTS chunks (
    hash TEXT NOT NULL, path TEXT NOT NULL, offset INTEGER NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (path, offset));
CREATE INDEX IF NOT EXISTS chunks_by_hash ON chunks (hash);
CREATE TABLE IF NOT EXISTS remote (
    path TEXT PRIMARY KEY, kind TEXT NOT NULL, file_id INTEGER, version_id INTEGER, size INTEGER,
    digest TEXT, chunks TEXT);
CREATE INDEX IF NOT EXISTS remote_by_file_id ON remote (file_id);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (
    path TEXT PRIMARY KEY, upload_id TEXT NOT NULL, digest TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS stat_cache (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL,
    chunk_list TEXT NOT NULL, digest TEXT NOT NULL);
"""


@dataclass(frozen=True)
class BaseRecord:
    """One entry of the base tree: what both sides last agreed on, plus the local stat at that time.

    kind is "file" or "folder"; folders have size/mtime_ns/inode/digest None and no chunks.
    size in bytes, mtime_ns in nanoseconds (os.stat_result.st_mtime_ns), inode = st_ino.
    """

    path: str
    kind: str
    size: int | None = None
    mtime_ns: int | None = None
    inode: int | None = None
    chunks: tuple[FileChunk, ...] = ()
    digest: str | None = None
    file_id: int | None = None
    version_id: int | None = None


@dataclass(frozen=True)
class RemoteRecord:
    """One entry of the remote tree replica. Files carry version, size (bytes), chunks and digest.

    chunks/digest are None only when a journal entry moved a file the replica did not know (the
    daemon then re-reads it with `SyncApi.get_file`).
    """

    path: str
    kind: str
    file_id: int | None
    version_id: int | None = None
    size: int | None = None
    digest: str | None = None
    chunks: tuple[FileChunk, ...] | None = None


@dataclass(frozen=True)
class UploadRecord:
    """A resumable upload session for `path`: the server's upload_id, the digest of the content it
    uploads (resume only if the local file still has it) and when it began (unix seconds)."""

    path: str
    upload_id: str
    digest: str
    created: float


class CachedHash(NamedTuple):
    """A file's chunks and digest from the stat cache (valid while size, mtime_ns and inode match)."""

    chunks: tuple[FileChunk, ...]
    digest: str


class StatCacheRow(NamedTuple):
    """One stat cache entry: the chunks and digest of the file at `path` with this stat."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    chunks: tuple[FileChunk, ...]
    digest: str


class ChunkLocation(NamedTuple):
    """Where a local synced file holds a chunk: path (relative), offset and size in bytes."""

    path: str
    offset: int
    size: int


def _chunks_to_json(chunks: Sequence[FileChunk]) -> str:
    return json.dumps([[chunk.hash, chunk.size] for chunk in chunks], separators=(",", ":"))


def _chunks_from_json(text: str | None) -> tuple[FileChunk, ...] | None:
    if text is None:
        return None
    return tuple(chunks_with_offsets((str(pair[0]), int(pair[1])) for pair in json.loads(text)))


def _api_chunks(value: Any) -> tuple[FileChunk, ...] | None:
    """The API's `[{"hash", "size"}, ...]` (or null) as FileChunks with offsets."""
    if value is None:
        return None
    return tuple(chunks_with_offsets((str(item["hash"]), int(item["size"])) for item in value))


def _under(path: str) -> tuple[str, str]:
    """Bounds of the paths strictly under folder `path` for `p > low AND p < high` (binary collation)."""
    # '/' is 0x2F and '0' is 0x30: every "path/..." sorts in ["path/", "path0").
    return path + "/", path + "0"


class LocalIndex:
    """The daemon's index in the SQLite file at `path` (created with its tables if absent).

    Raises sqlite3.Error on database failures. See the module docstring for tables and threading.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"index {path} has schema {version}, newer than {SCHEMA_VERSION}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the connection (further calls raise sqlite3.ProgrammingError)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> LocalIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # --- base tree ---------------------------------------------------------------------------

    @staticmethod
    def _base_from_row(row: Sequence[Any]) -> BaseRecord:
        path, kind, size, mtime_ns, inode, chunk_list, digest, file_id, version_id = row
        return BaseRecord(path, kind, size, mtime_ns, inode, _chunks_from_json(chunk_list) or (), digest,
                          file_id, version_id)

    _BASE_COLUMNS = "path, kind, size, mtime_ns, inode, chunk_list, digest, file_id, version_id"

    def get_base(self, path: str) -> BaseRecord | None:
        """The base record at `path`, or None."""
        rows = self._query(f"SELECT {self._BASE_COLUMNS} FROM files WHERE path = ?", (path,))
        return self._base_from_row(rows[0]) if rows else None

    def base_records(self) -> list[BaseRecord]:
        """Every base record, ordered by path."""
        rows = self._query(f"SELECT {self._BASE_COLUMNS} FROM files ORDER BY path")
        return [self._base_from_row(row) for row in rows]

    def put_base(self, *records: BaseRecord) -> None:
        """Insert or replace base records (and their chunk locations) in one transaction.

        The stat cache row of each path is dropped: the base record now carries its stat.
        """
        with self._transaction() as conn:
            for record in records:
                conn.execute(
                    f"INSERT OR REPLACE INTO files ({self._BASE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.path, record.kind, record.size, record.mtime_ns, record.inode,
                     _chunks_to_json(record.chunks) if record.kind == FILE else None, record.digest,
                     record.file_id, record.version_id))
                conn.execute("DELETE FROM chunks WHERE path = ?", (record.path,))
                conn.executemany(
                    "INSERT OR REPLACE INTO chunks (hash, path, offset, size) VALUES (?, ?, ?, ?)",
                    [(chunk.hash, record.path, chunk.offset, chunk.size) for chunk in record.chunks])
                conn.execute("DELETE FROM stat_cache WHERE path = ?", (record.path,))

    def delete_base(self, *paths: str) -> None:
        """Remove the base records at `paths` (only those paths, not what is under them)."""
        with self._transaction() as conn:
            for path in paths:
                conn.execute("DELETE FROM files WHERE path = ?", (path,))
                conn.execute("DELETE FROM chunks WHERE path = ?", (path,))

    def find_chunk(self, chunk_hash: str) -> ChunkLocation | None:
        """A synced local file that held chunk `chunk_hash` when it was recorded, or None.

        The file may have changed since: the caller must verify the SHA-256 of the bytes it reads.
        """
        rows = self._query("SELECT path, offset, size FROM chunks WHERE hash = ? LIMIT 1", (chunk_hash,))
        return ChunkLocation(*rows[0]) if rows else None

    # --- local stat cache of unsynced files ---------------------------------------------------

    def cached_hash(self, path: str, size: int, mtime_ns: int, inode: int) -> CachedHash | None:
        """The chunks and digest recorded for `path` if its (size, mtime_ns, inode) still match.

        Looks in the base tree first, then the stat cache of unsynced files. None if unknown/stale.
        """
        with self._lock:
            row = self._conn.execute(
                "SELECT chunk_list, digest FROM files WHERE path = ? AND kind = 'file' AND size = ? "
                "AND mtime_ns = ? AND inode = ? AND digest IS NOT NULL",
                (path, size, mtime_ns, inode)).fetchone()
            if row is None:
                row = self._conn.execute(
                    "SELECT chunk_list, digest FROM stat_cache WHERE path = ? AND size = ? AND mtime_ns = ? "
                    "AND inode = ?", (path, size, mtime_ns, inode)).fetchone()
        if row is None:
            return None
        return CachedHash(_chunks_from_json(row[0]) or (), row[1])

    def put_stat_cache(self, path: str, size: int, mtime_ns: int, inode: int,
                       chunks: Sequence[FileChunk], digest: str) -> None:
        """Remember the chunks and digest of the local file `path` at stat (size, mtime_ns, inode)."""
        self.put_stat_cache_many([StatCacheRow(path, size, mtime_ns, inode, tuple(chunks), digest)])

    def put_stat_cache_many(self, rows: Iterable[StatCacheRow]) -> None:
        """`put_stat_cache` for many files in one transaction (a scan of 10,000 new files is one
        synced commit, not 10,000)."""
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO stat_cache (path, size, mtime_ns, inode, chunk_list, digest) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(row.path, row.size, row.mtime_ns, row.inode, _chunks_to_json(row.chunks), row.digest)
                 for row in rows])

    def prune_stat_cache(self, keep: Iterable[str]) -> int:
        """Drop stat cache rows whose path is not in `keep`; returns how many were dropped."""
        keep_set = set(keep)
        with self._transaction() as conn:
            stale = [row[0] for row in conn.execute("SELECT path FROM stat_cache") if row[0] not in keep_set]
            conn.executemany("DELETE FROM stat_cache WHERE path = ?", [(path,) for path in stale])
        return len(stale)

    # --- remote tree replica and cursor -------------------------------------------------------

    @staticmethod
    def _remote_from_row(row: Sequence[Any]) -> RemoteRecord:
        path, kind, file_id, version_id, size, digest, chunks = row
        return RemoteRecord(path, kind, file_id, version_id, size, digest, _chunks_from_json(chunks))

    _REMOTE_COLUMNS = "path, kind, file_id, version_id, size, digest, chunks"

    def get_remote(self, path: str) -> RemoteRecord | None:
        """The remote replica's entry at `path`, or None."""
        rows = self._query(f"SELECT {self._REMOTE_COLUMNS} FROM remote WHERE path = ?", (path,))
        return self._remote_from_row(rows[0]) if rows else None

    def remote_records(self) -> list[RemoteRecord]:
        """Every entry of the remote replica, ordered by path."""
        rows = self._query(f"SELECT {self._REMOTE_COLUMNS} FROM remote ORDER BY path")
        return [self._remote_from_row(row) for row in rows]

    def get_cursor(self) -> str | None:
        """The `/changes` cursor the remote replica is consistent with, or None before the first sync."""
        return self.get_state("cursor")

    def set_cursor(self, cursor: str) -> None:
        """Store the cursor alone (use `apply_remote_entries` to move it together with entries)."""
        self.set_state("cursor", cursor)

    def get_state(self, key: str) -> str | None:
        """A value of the state table, or None."""
        rows = self._query("SELECT value FROM state WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_state(self, key: str, value: str) -> None:
        """Set a value of the state table."""
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))

    def apply_remote_entries(self, entries: Iterable[Mapping[str, Any]], cursor: str) -> None:
        """Apply `/changes` journal entries (contracts section 1 JSON) in order, then set `cursor`.

        One transaction: a crash leaves either none or all of them applied, with the matching cursor.
        commit/restore: the file node at `path` (replacing whatever was there and any other path of
        the same file_id); mkdir: a folder node; delete: removes `path` and everything under it;
        move: re-keys `old_path` and everything under it to `path`, then updates the moved node from
        the entry. Raises KeyError/ValueError on a malformed entry (nothing applied).
        """
        with self._transaction() as conn:
            for entry in entries:
                self._apply(conn, entry)
            conn.execute("INSERT OR REPLACE INTO state (key, value) VALUES ('cursor', ?)", (cursor,))

    def replace_remote(self, entries: Iterable[Mapping[str, Any]], cursor: str) -> None:
        """Replace the whole replica with a `/tree` snapshot (its entries and cursor), in one transaction."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM remote")
            for entry in entries:
                if not entry.get("deleted"):
                    self._set_node(conn, entry, str(entry["path"]))
            conn.execute("INSERT OR REPLACE INTO state (key, value) VALUES ('cursor', ?)", (cursor,))

    def _apply(self, conn: sqlite3.Connection, entry: Mapping[str, Any]) -> None:
        action = entry["action"]
        path = str(entry["path"])
        if action in ("commit", "restore", "mkdir"):
            self._set_node(conn, entry, path)
        elif action == "delete":
            self._remove_tree(conn, path)
        elif action == "move":
            old_path = entry.get("old_path")
            if old_path is not None and old_path != path:
                self._move_tree(conn, str(old_path), path)
            self._update_moved(conn, entry, path)
        else:
            raise ValueError(f"unknown journal action {action!r}")

    @staticmethod
    def _remove_tree(conn: sqlite3.Connection, path: str) -> None:
        low, high = _under(path)
        conn.execute("DELETE FROM remote WHERE path = ? OR (path > ? AND path < ?)", (path, low, high))

    def _move_tree(self, conn: sqlite3.Connection, old_path: str, new_path: str) -> None:
        low, high = _under(old_path)
        rows = conn.execute("SELECT path FROM remote WHERE path = ? OR (path > ? AND path < ?)",
                            (old_path, low, high)).fetchall()
        if not rows:
            return
        nested = old_path.startswith(new_path + "/") or new_path.startswith(old_path + "/")
        if not nested:
            self._remove_tree(conn, new_path)  # the server refuses a live target; a stale one goes
        # Two steps through a temporary prefix so re-keying never collides with a row being moved.
        conn.executemany("UPDATE remote SET path = ? WHERE path = ?",
                         [("\0" + row[0], row[0]) for row in rows])
        conn.executemany("UPDATE remote SET path = ? WHERE path = ?",
                         [(new_path + row[0][len(old_path):], "\0" + row[0]) for row in rows])

    def _update_moved(self, conn: sqlite3.Connection, entry: Mapping[str, Any], path: str) -> None:
        row = conn.execute(f"SELECT {self._REMOTE_COLUMNS} FROM remote WHERE path = ?", (path,)).fetchone()
        chunks = _api_chunks(entry.get("chunks"))
        if row is None or chunks is not None:
            self._set_node(conn, entry, path)
            return
        current = self._remote_from_row(row)
        version_id = entry.get("version_id")
        conn.execute("UPDATE remote SET kind = ?, file_id = ?, version_id = ? WHERE path = ?",
                     (entry.get("kind", current.kind), entry.get("file_id", current.file_id),
                      current.version_id if version_id is None else version_id, path))

    @staticmethod
    def _set_node(conn: sqlite3.Connection, entry: Mapping[str, Any], path: str) -> None:
        kind = str(entry["kind"])
        file_id = entry.get("file_id")
        if file_id is not None:
            conn.execute("DELETE FROM remote WHERE file_id = ? AND path != ?", (file_id, path))
        if kind == FOLDER:
            conn.execute("INSERT OR REPLACE INTO remote (path, kind, file_id) VALUES (?, ?, ?)",
                         (path, kind, file_id))
            return
        LocalIndex._remove_tree(conn, path)  # a file replaces a folder (and its contents) at path
        chunks = _api_chunks(entry.get("chunks"))
        conn.execute(
            f"INSERT OR REPLACE INTO remote ({LocalIndex._REMOTE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (path, kind, file_id, entry.get("version_id"), entry.get("size"),
             None if chunks is None else content_digest(chunks),
             None if chunks is None else _chunks_to_json(chunks)))

    # --- resumable uploads --------------------------------------------------------------------

    def get_upload(self, path: str) -> UploadRecord | None:
        """The upload session recorded for `path`, or None."""
        rows = self._query("SELECT path, upload_id, digest, created FROM uploads WHERE path = ?", (path,))
        return UploadRecord(*rows[0]) if rows else None

    def uploads(self) -> list[UploadRecord]:
        """Every recorded upload session, ordered by path."""
        return [UploadRecord(*row) for row in
                self._query("SELECT path, upload_id, digest, created FROM uploads ORDER BY path")]

    def put_upload(self, path: str, upload_id: str, digest: str, created: float | None = None) -> UploadRecord:
        """Record (or replace) the upload session of `path`; created defaults to now (unix seconds)."""
        record = UploadRecord(path, upload_id, digest, time.time() if created is None else created)
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO uploads (path, upload_id, digest, created) VALUES (?, ?, ?, ?)",
                         (record.path, record.upload_id, record.digest, record.created))
        return record

    def delete_upload(self, path: str) -> None:
        """Forget the upload session of `path` (after commit, or when its content changed)."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM uploads WHERE path = ?", (path,))
