"""`SqliteSyncStore`: the `SyncStore` on the S3 metadata store's SQLite file (schema migration 3).

It shares the `SqliteMetadataStore`'s connections and transactions, so a commit's storage-chunk
references, its version and its journal entry change in one SQLite transaction. It uses that store's
private helpers (`_write`, `_read`, `_connection`, `_add_references`, `_release_references`,
`_chunk_states`) and chunk-list codecs on purpose: they are the one implementation of chunk
reference counting and of the PUT-vs-garbage-collection protocol, which the sync store must follow
exactly, and both modules are the SQLite backend of one metadata database.

Tables (migration 3 in metadata/sqlite_store.py):
- `sync_users`, `sync_namespaces` (one per user), `sync_devices` (token_hash = SHA-256 of the token,
  UNIQUE: the bearer-token lookup is one index probe; `revoked` time or NULL).
- `sync_entries`: file_id, namespace_id, path (TEXT; SQLite's BINARY collation compares UTF-8 bytes,
  so `path > p || '/' AND path < p || '0'` is exactly "under folder p"), kind, current_version,
  deleted, created, updated, seq (the journal entry of the last change). A partial UNIQUE index on
  (namespace_id, path) WHERE deleted = 0: at most one live entry per path, any number of deleted.
- `sync_versions`: version_id, file_id, size, created, device_id, base_version, chunk_list.
- `sync_journal`: seq (AUTOINCREMENT: never reused, strictly increasing), namespace_id, file_id,
  action, path, old_path, version_id, deleted, device_id, created; kind, size, chunks and the device
  name are joined in from the entry, version and device rows when read.
- `sync_uploads` (the session, its chunk list, `lifetime` seconds after the last activity, state,
  the commit result as JSON) and `sync_upload_chunks` (one row per distinct chunk of a session, with
  its first-occurrence position, size and upload time or NULL: recording a chunk of a 50 GB file's
  session is one index probe, not a decode of its chunk list).
- `sync_chunks`: sync chunk hash -> size and storage chunk list (the objects' compact format).
- `sync_namespace_chunks`: (namespace_id, hash) for every sync chunk of a committed version.

Sync chunk lists (versions, sessions) are compact BLOBs: a format byte, then per chunk a 32-byte
hash and a big-endian u64 size: 40 bytes per chunk, 500 KiB for a 50 GB file of 4 MiB chunks.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import struct
import time
from collections.abc import Sequence
from typing import Any, cast

from metadata.records import ChunkRef, ChunkState, ChunksUnavailable, MetadataError
from metadata.sqlite_store import (  # private helpers on purpose: see the module docstring
    SqliteMetadataStore,
    _decode_chunks,
    _encode_chunks,
    _hash_bytes,
    _in_batches,
)
from metadata.sync_records import (
    MAX_SYNC_CHUNK_SIZE,
    ChangesPage,
    CommitResult,
    Device,
    Entry,
    EntryKind,
    InvalidSyncRequest,
    JournalAction,
    JournalEntry,
    PathExists,
    SyncChunk,
    SyncChunksMissing,
    SyncForbidden,
    SyncNotFound,
    SyncPreconditionFailed,
    SyncUser,
    Upload,
    UploadClosed,
    UploadState,
    UserExists,
    Version,
    conflicted_copy_name,
    validate_chunk_hash,
    validate_path,
)
from metadata.sync_store import UPLOAD_EXPIRES_IN, SyncStore

_SYNC_CHUNK_LIST_FORMAT = 1
_SYNC_CHUNK_ENTRY = struct.Struct(">32sQ")  # hash, size (bytes)
_MAX_NAME_LENGTH = 255
_TOKEN_PREFIX = "cst_"
_UNKNOWN_DEVICE = "unknown device"

_ENTRY_SELECT = (
    "SELECT e.file_id, e.namespace_id, e.path, e.kind, e.current_version, e.deleted, v.size, v.chunk_list "
    "FROM sync_entries e LEFT JOIN sync_versions v ON v.version_id = e.current_version"
)
_JOURNAL_SELECT = (
    "SELECT j.seq, j.namespace_id, j.file_id, e.kind, j.action, j.path, j.old_path, j.version_id, v.size, "
    "CASE WHEN j.action IN ('commit', 'restore') THEN v.chunk_list END, j.deleted, d.name, j.created "
    "FROM sync_journal j JOIN sync_entries e ON e.file_id = j.file_id "
    "LEFT JOIN sync_versions v ON v.version_id = j.version_id "
    "LEFT JOIN sync_devices d ON d.device_id = j.device_id"
)
_VERSION_SELECT = (
    "SELECT v.version_id, v.file_id, v.size, v.chunk_list, v.created, d.name, v.base_version "
    "FROM sync_versions v LEFT JOIN sync_devices d ON d.device_id = v.device_id"
)
_DEVICE_SELECT = (
    "SELECT d.device_id, d.user_id, u.name, d.name, n.namespace_id, d.created, d.revoked "
    "FROM sync_devices d JOIN sync_users u ON u.user_id = d.user_id "
    "JOIN sync_namespaces n ON n.user_id = d.user_id"
)
_UPLOAD_SELECT = (
    "SELECT upload_id, namespace_id, file_id, path, size, base_version, device_id, created, expires_at, "
    "state, result, chunk_list FROM sync_uploads"
)


def _encode_sync_chunks(chunks: Sequence[SyncChunk]) -> bytes:
    """Sync chunk list -> the compact BLOB of the module docstring."""
    buffer = bytearray(1 + _SYNC_CHUNK_ENTRY.size * len(chunks))
    buffer[0] = _SYNC_CHUNK_LIST_FORMAT
    for index, chunk in enumerate(chunks):
        _SYNC_CHUNK_ENTRY.pack_into(buffer, 1 + index * _SYNC_CHUNK_ENTRY.size, _hash_bytes(chunk.hash), chunk.size)
    return bytes(buffer)


def _decode_sync_chunks(blob: bytes) -> tuple[SyncChunk, ...]:
    """The compact BLOB -> sync chunk list. Raises MetadataError on an unknown format byte."""
    if not blob or blob[0] != _SYNC_CHUNK_LIST_FORMAT:
        raise MetadataError(f"unknown sync chunk list format {blob[:1]!r}")
    return tuple(SyncChunk(hash_.hex(), size) for hash_, size in _SYNC_CHUNK_ENTRY.iter_unpack(memoryview(blob)[1:]))


def _token_hash(token: str) -> bytes:
    """SHA-256 of the token text: tokens are 256 random bits, so a fast unsalted hash is enough."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def _validate_name(name: str, what: str) -> str:
    """User and device names: 1..255 characters, no '/' and no control characters (they appear in
    conflicted-copy file names and CLI output)."""
    if (
        not isinstance(name, str)
        or not 0 < len(name) <= _MAX_NAME_LENGTH
        or "/" in name
        or any(ord(character) < 32 or ord(character) == 127 for character in name)
    ):
        raise InvalidSyncRequest(f"invalid {what} name {name!r}")
    return name


def _under(path: str) -> tuple[str, str]:
    """Bounds (lower exclusive, upper exclusive) of every path strictly under folder `path`: '0' is
    the character after '/', and BINARY collation compares UTF-8 bytes."""
    return path + "/", path + "0"


def _parents(path: str) -> list[str]:
    """Every proper parent path of `path`: "a/b/c" -> ["a", "a/b"]."""
    components = path.split("/")
    return ["/".join(components[:count]) for count in range(1, len(components))]


def _result_json(result: CommitResult) -> str:
    return json.dumps(
        {
            "file_id": result.file_id,
            "version_id": result.version_id,
            "path": result.path,
            "conflict": result.conflict,
            "conflict_of": result.conflict_of,
            "seq": result.seq,
        },
        ensure_ascii=False,
    )


def _result_from_json(text: str | None) -> CommitResult | None:
    return None if text is None else CommitResult(**json.loads(text))


class SqliteSyncStore(SyncStore):
    """`SyncStore` in the database of `metadata` (an open `SqliteMetadataStore`, whose schema already
    holds the sync tables). Thread-safe as that store is; closing that store closes this one."""

    def __init__(self, metadata: SqliteMetadataStore) -> None:
        self._metadata = metadata

    # Row helpers -----------------------------------------------------------------------------

    @staticmethod
    def _entry_from_row(row: Sequence[Any]) -> Entry:
        file_id, namespace_id, path, kind, current_version, deleted, size, chunk_list = row
        return Entry(
            file_id=file_id,
            namespace_id=namespace_id,
            path=path,
            kind=cast(EntryKind, kind),
            current_version=current_version,
            deleted=bool(deleted),
            size=size,
            chunks=None if chunk_list is None else _decode_sync_chunks(chunk_list),
        )

    @staticmethod
    def _journal_from_row(row: Sequence[Any]) -> JournalEntry:
        (seq, namespace_id, file_id, kind, action, path, old_path, version_id, size, chunk_list, deleted,
         device, created) = row  # fmt: skip
        return JournalEntry(
            seq=seq,
            namespace_id=namespace_id,
            file_id=file_id,
            kind=cast(EntryKind, kind),
            action=cast(JournalAction, action),
            path=path,
            old_path=old_path,
            version_id=version_id,
            size=size,
            chunks=None if chunk_list is None else _decode_sync_chunks(chunk_list),
            deleted=bool(deleted),
            device=device,
            created=created,
        )

    @staticmethod
    def _version_from_row(row: Sequence[Any]) -> Version:
        version_id, file_id, size, chunk_list, created, device, base_version = row
        return Version(version_id, file_id, size, _decode_sync_chunks(chunk_list), created, device, base_version)

    @staticmethod
    def _device_from_row(row: Sequence[Any]) -> Device:
        return Device(*row)

    def _fetch_entry(self, conn: sqlite3.Connection, file_id: int) -> Entry:
        row = conn.execute(f"{_ENTRY_SELECT} WHERE e.file_id = ?", (file_id,)).fetchone()
        if row is None:
            raise SyncNotFound(f"no file or folder {file_id}")
        return self._entry_from_row(row)

    def _fetch_upload(self, conn: sqlite3.Connection, upload_id: str) -> Upload:
        row = conn.execute(f"{_UPLOAD_SELECT} WHERE upload_id = ?", (upload_id,)).fetchone()
        if row is None:
            raise SyncNotFound(f"no upload session {upload_id!r}")
        (upload_id, namespace_id, file_id, path, size, base_version, device_id, created, expires_at, state,
         result, chunk_list) = row  # fmt: skip
        uploaded = frozenset(
            bytes(hash_).hex()
            for (hash_,) in conn.execute(
                "SELECT hash FROM sync_upload_chunks WHERE upload_id = ? AND uploaded IS NOT NULL", (upload_id,)
            )
        )
        return Upload(
            upload_id=upload_id,
            namespace_id=namespace_id,
            file_id=file_id,
            path=path,
            size=size,
            chunks=_decode_sync_chunks(chunk_list),
            base_version=base_version,
            device_id=device_id,
            created=created,
            expires_at=expires_at,
            state=cast(UploadState, state),
            uploaded=uploaded,
            result=_result_from_json(result),
        )

    @staticmethod
    def _require_namespace(conn: sqlite3.Connection, namespace_id: int) -> None:
        if conn.execute("SELECT 1 FROM sync_namespaces WHERE namespace_id = ?", (namespace_id,)).fetchone() is None:
            raise SyncNotFound(f"no namespace {namespace_id}")

    @staticmethod
    def _latest_seq(conn: sqlite3.Connection, namespace_id: int) -> int:
        row = conn.execute("SELECT max(seq) FROM sync_journal WHERE namespace_id = ?", (namespace_id,)).fetchone()
        return 0 if row[0] is None else int(row[0])

    @staticmethod
    def _live_entry_at(conn: sqlite3.Connection, namespace_id: int, path: str) -> tuple[int, str] | None:
        """(file_id, kind) of the live entry at `path`, or None."""
        row = conn.execute(
            "SELECT file_id, kind FROM sync_entries WHERE namespace_id = ? AND path = ? AND deleted = 0",
            (namespace_id, path),
        ).fetchone()
        return None if row is None else (row[0], row[1])

    @staticmethod
    def _live_under(conn: sqlite3.Connection, namespace_id: int, path: str) -> list[int]:
        """file_ids of the live entries strictly under folder path `path`."""
        lower, upper = _under(path)
        return [
            file_id
            for (file_id,) in conn.execute(
                "SELECT file_id FROM sync_entries WHERE namespace_id = ? AND deleted = 0 AND path > ? AND path < ?",
                (namespace_id, lower, upper),
            )
        ]

    @staticmethod
    def _live_file_parent(
        conn: sqlite3.Connection, namespace_id: int, path: str, ignore: frozenset[int] = frozenset()
    ) -> str | None:
        """The path of a live file (not in `ignore`) at one of `path`'s parent paths, or None."""
        parents = _parents(path)
        if not parents:
            return None
        placeholders = ",".join("?" * len(parents))
        for file_id, parent in conn.execute(
            f"SELECT file_id, path FROM sync_entries WHERE namespace_id = ? AND deleted = 0 AND kind = 'file' "
            f"AND path IN ({placeholders})",
            [namespace_id, *parents],
        ):
            if file_id not in ignore:
                return str(parent)
        return None

    def _free_for_file(self, conn: sqlite3.Connection, namespace_id: int, path: str) -> bool:
        """No live entry at `path` nor under it (a file there would clash with an implied folder)."""
        return self._live_entry_at(conn, namespace_id, path) is None and not self._live_under(conn, namespace_id, path)

    @staticmethod
    def _device_name(conn: sqlite3.Connection, device_id: int | None) -> str | None:
        if device_id is None:
            return None
        row = conn.execute("SELECT name FROM sync_devices WHERE device_id = ?", (device_id,)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _append_journal(
        conn: sqlite3.Connection,
        namespace_id: int,
        file_id: int,
        action: JournalAction,
        path: str,
        device_id: int | None,
        now: float,
        *,
        old_path: str | None = None,
        version_id: int | None = None,
        deleted: bool = False,
    ) -> int:
        """Append one journal entry and stamp the entry with it; returns its seq."""
        cursor = conn.execute(
            "INSERT INTO sync_journal (namespace_id, file_id, action, path, old_path, version_id, deleted, "
            "device_id, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (namespace_id, file_id, action, path, old_path, version_id, int(deleted), device_id, now),
        )
        seq = cursor.lastrowid
        assert seq is not None
        conn.execute("UPDATE sync_entries SET seq = ?, updated = ? WHERE file_id = ?", (seq, now, file_id))
        return seq

    @staticmethod
    def _namespace_chunks(conn: sqlite3.Connection, namespace_id: int, hashes: Sequence[bytes]) -> set[bytes]:
        """Which of `hashes` the namespace's committed versions hold."""
        return {
            bytes(hash_)
            for cursor in _in_batches(conn, "SELECT hash FROM sync_namespace_chunks WHERE namespace_id = ? "
                                      "AND hash IN ({})", hashes, before=[namespace_id])
            for (hash_,) in cursor
        }

    @staticmethod
    def _mappings(conn: sqlite3.Connection, hashes: Sequence[bytes]) -> dict[bytes, tuple[ChunkRef, ...]]:
        """Sync chunk hash -> its storage chunks, for the recorded ones among `hashes`."""
        return {
            bytes(hash_): _decode_chunks(storage_chunks)
            for cursor in _in_batches(conn, "SELECT hash, storage_chunks FROM sync_chunks WHERE hash IN ({})", hashes)
            for hash_, storage_chunks in cursor
        }

    def _session_references(self, conn: sqlite3.Connection, upload_id: str) -> list[ChunkRef]:
        """The storage chunks a session holds: one per storage chunk of each sync chunk it uploaded."""
        uploaded = [
            bytes(hash_)
            for (hash_,) in conn.execute(
                "SELECT hash FROM sync_upload_chunks WHERE upload_id = ? AND uploaded IS NOT NULL", (upload_id,)
            )
        ]
        references: list[ChunkRef] = []
        for storage_chunks in self._mappings(conn, uploaded).values():
            references.extend(storage_chunks)
        return references

    def _add_version(
        self,
        conn: sqlite3.Connection,
        namespace_id: int,
        file_id: int,
        size: int,
        chunks: Sequence[SyncChunk],
        device_id: int | None,
        base_version: int | None,
        now: float,
    ) -> int:
        """Insert a version of `file_id` (not yet made current) holding one reference per storage
        chunk occurrence of each sync chunk occurrence; record the namespace's chunk presence.
        Raises SyncChunksMissing (nothing changed) for sync chunks with no mapping or a storage
        chunk that is not LIVE."""
        distinct = list(dict.fromkeys(_hash_bytes(chunk.hash) for chunk in chunks))
        mappings = self._mappings(conn, distinct)
        unmapped = [hash_.hex() for hash_ in distinct if hash_ not in mappings]
        if unmapped:
            raise SyncChunksMissing(unmapped)
        references = [ref for chunk in chunks for ref in mappings[_hash_bytes(chunk.hash)]]
        try:
            self._metadata._add_references(conn, references, None)
        except ChunksUnavailable as error:
            gone = set(error.chunk_hashes)
            raise SyncChunksMissing(
                hash_.hex() for hash_ in distinct if any(ref.hash in gone for ref in mappings[hash_])
            ) from error
        cursor = conn.execute(
            "INSERT INTO sync_versions (file_id, size, created, device_id, base_version, chunk_list) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (file_id, size, now, device_id, base_version, _encode_sync_chunks(chunks)),
        )
        conn.executemany(
            "INSERT OR IGNORE INTO sync_namespace_chunks (namespace_id, hash) VALUES (?, ?)",
            [(namespace_id, hash_) for hash_ in distinct],
        )
        version_id = cursor.lastrowid
        assert version_id is not None
        return version_id

    # Users and devices -----------------------------------------------------------------------

    def create_user(self, name: str) -> SyncUser:
        """See SyncStore.create_user."""
        _validate_name(name, "user")
        now = time.time()
        try:
            with self._metadata._write() as conn:
                user_id = conn.execute(
                    "INSERT INTO sync_users (name, created) VALUES (?, ?)", (name, now)
                ).lastrowid
                conn.execute("INSERT INTO sync_namespaces (user_id, created) VALUES (?, ?)", (user_id, now))
        except sqlite3.IntegrityError as error:
            raise UserExists(f"sync user {name!r} exists") from error
        assert user_id is not None
        return SyncUser(user_id, name, now)

    def get_user(self, name: str) -> SyncUser | None:
        """See SyncStore.get_user."""
        row = (
            self._metadata._connection()
            .execute("SELECT user_id, name, created FROM sync_users WHERE name = ?", (name,))
            .fetchone()
        )
        return None if row is None else SyncUser(*row)

    def list_users(self) -> list[SyncUser]:
        """See SyncStore.list_users."""
        rows = self._metadata._connection().execute("SELECT user_id, name, created FROM sync_users ORDER BY name")
        return [SyncUser(*row) for row in rows]

    def create_device(self, user_name: str, device_name: str) -> tuple[Device, str]:
        """See SyncStore.create_device."""
        _validate_name(device_name, "device")
        token = _TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        with self._metadata._write() as conn:
            row = conn.execute(
                "SELECT u.user_id, n.namespace_id FROM sync_users u JOIN sync_namespaces n ON n.user_id = u.user_id "
                "WHERE u.name = ?",
                (user_name,),
            ).fetchone()
            if row is None:
                raise SyncNotFound(f"no sync user {user_name!r}")
            user_id, namespace_id = row
            device_id = conn.execute(
                "INSERT INTO sync_devices (user_id, name, token_hash, created) VALUES (?, ?, ?, ?)",
                (user_id, device_name, _token_hash(token), now),
            ).lastrowid
        assert device_id is not None
        return Device(device_id, user_id, user_name, device_name, namespace_id, now, None), token

    def device_for_token(self, token: str) -> Device | None:
        """See SyncStore.device_for_token."""
        if not isinstance(token, str) or not token.startswith(_TOKEN_PREFIX):
            return None
        row = (
            self._metadata._connection()
            .execute(f"{_DEVICE_SELECT} WHERE d.token_hash = ?", (_token_hash(token),))
            .fetchone()
        )
        if row is None or row[6] is not None:
            return None
        return self._device_from_row(row)

    def list_devices(self, user_name: str | None = None) -> list[Device]:
        """See SyncStore.list_devices."""
        with self._metadata._read() as conn:
            if user_name is None:
                rows = conn.execute(f"{_DEVICE_SELECT} ORDER BY u.name, d.device_id").fetchall()
            else:
                if conn.execute("SELECT 1 FROM sync_users WHERE name = ?", (user_name,)).fetchone() is None:
                    raise SyncNotFound(f"no sync user {user_name!r}")
                rows = conn.execute(f"{_DEVICE_SELECT} WHERE u.name = ? ORDER BY d.device_id", (user_name,)).fetchall()
        return [self._device_from_row(row) for row in rows]

    def revoke_device(self, device_id: int) -> bool:
        """See SyncStore.revoke_device."""
        with self._metadata._write() as conn:
            cursor = conn.execute(
                "UPDATE sync_devices SET revoked = ? WHERE device_id = ? AND revoked IS NULL", (time.time(), device_id)
            )
            return cursor.rowcount > 0

    def namespace_of(self, user_name: str) -> int:
        """See SyncStore.namespace_of."""
        row = (
            self._metadata._connection()
            .execute(
                "SELECT n.namespace_id FROM sync_users u JOIN sync_namespaces n ON n.user_id = u.user_id "
                "WHERE u.name = ?",
                (user_name,),
            )
            .fetchone()
        )
        if row is None:
            raise SyncNotFound(f"no sync user {user_name!r}")
        return int(row[0])

    # Uploads ---------------------------------------------------------------------------------

    def begin_upload(
        self,
        namespace_id: int,
        path: str,
        size: int,
        chunks: Sequence[SyncChunk],
        base_version: int | None,
        device_id: int | None,
        expires_in: float = UPLOAD_EXPIRES_IN,
    ) -> tuple[Upload, list[SyncChunk]]:
        """See SyncStore.begin_upload."""
        validate_path(path)
        chunk_list = tuple(chunks)
        distinct: dict[str, SyncChunk] = {}
        for chunk in chunk_list:
            validate_chunk_hash(chunk.hash)
            if not 1 <= chunk.size <= MAX_SYNC_CHUNK_SIZE:
                raise InvalidSyncRequest(f"chunk {chunk.hash} has size {chunk.size}, not 1..{MAX_SYNC_CHUNK_SIZE}")
            if distinct.setdefault(chunk.hash, chunk).size != chunk.size:
                raise InvalidSyncRequest(f"chunk {chunk.hash} is listed with two sizes")
        if size != sum(chunk.size for chunk in chunk_list):
            raise InvalidSyncRequest(f"size {size} is not the sum of the chunk sizes")
        if expires_in <= 0:
            raise InvalidSyncRequest("expires_in must be positive")
        now = time.time()
        upload_id = "u" + secrets.token_hex(12)
        with self._metadata._write() as conn:
            self._require_namespace(conn, namespace_id)
            blocker = self._live_file_parent(conn, namespace_id, path)
            if blocker is not None:
                raise PathExists(f"{blocker!r} is a file")
            file_id: int | None = None
            if base_version is not None:
                row = conn.execute(
                    "SELECT e.file_id, e.namespace_id FROM sync_versions v "
                    "JOIN sync_entries e ON e.file_id = v.file_id WHERE v.version_id = ?",
                    (base_version,),
                ).fetchone()
                if row is None:
                    raise InvalidSyncRequest(f"no version {base_version}")
                if row[1] != namespace_id:
                    raise SyncForbidden(f"version {base_version} belongs to another namespace")
                file_id = row[0]
            else:
                live = self._live_entry_at(conn, namespace_id, path)
                if live is not None and live[1] == "file":
                    file_id = live[0]
            held = self._namespace_chunks(conn, namespace_id, [_hash_bytes(hash_) for hash_ in distinct])
            missing = [chunk for chunk in distinct.values() if _hash_bytes(chunk.hash) not in held]
            conn.execute(
                "INSERT INTO sync_uploads (upload_id, namespace_id, file_id, path, size, base_version, device_id, "
                "created, lifetime, expires_at, state, result, chunk_list) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', NULL, ?)",
                (upload_id, namespace_id, file_id, path, size, base_version, device_id, now, expires_in,
                 now + expires_in, _encode_sync_chunks(chunk_list)),
            )  # fmt: skip
            conn.executemany(
                "INSERT INTO sync_upload_chunks (upload_id, hash, position, size, uploaded) VALUES (?, ?, ?, ?, NULL)",
                [(upload_id, _hash_bytes(chunk.hash), position, chunk.size)
                 for position, chunk in enumerate(distinct.values())],
            )  # fmt: skip
        upload = Upload(
            upload_id=upload_id,
            namespace_id=namespace_id,
            file_id=file_id,
            path=path,
            size=size,
            chunks=chunk_list,
            base_version=base_version,
            device_id=device_id,
            created=now,
            expires_at=now + expires_in,
            state="open",
            uploaded=frozenset(),
            result=None,
        )
        return upload, missing

    def get_upload(self, upload_id: str) -> Upload:
        """See SyncStore.get_upload."""
        with self._metadata._read() as conn:
            return self._fetch_upload(conn, upload_id)

    def missing_chunks(self, upload_id: str) -> list[SyncChunk]:
        """See SyncStore.missing_chunks."""
        with self._metadata._read() as conn:
            row = conn.execute(
                "SELECT namespace_id, state FROM sync_uploads WHERE upload_id = ?", (upload_id,)
            ).fetchone()
            if row is None:
                raise SyncNotFound(f"no upload session {upload_id!r}")
            return self._missing(conn, upload_id, row[0], row[1])

    @staticmethod
    def _missing(conn: sqlite3.Connection, upload_id: str, namespace_id: int, state: str) -> list[SyncChunk]:
        """The session's chunks neither uploaded nor held by the namespace, first-occurrence order."""
        if state == "committed":
            return []
        rows = conn.execute(
            "SELECT c.hash, c.size FROM sync_upload_chunks c WHERE c.upload_id = ? AND c.uploaded IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM sync_namespace_chunks n WHERE n.namespace_id = ? AND n.hash = c.hash) "
            "ORDER BY c.position",
            (upload_id, namespace_id),
        )
        return [SyncChunk(bytes(hash_).hex(), size) for hash_, size in rows]

    def record_chunk_upload(
        self, upload_id: str, chunk_hash: str, size: int, storage_chunks: Sequence[ChunkRef], pin_id: str
    ) -> bool:
        """See SyncStore.record_chunk_upload."""
        hash_ = _hash_bytes(validate_chunk_hash(chunk_hash))
        storage = tuple(storage_chunks)
        if sum(chunk.size for chunk in storage) != size or not storage:
            raise InvalidSyncRequest(f"storage chunks of {chunk_hash} do not add up to {size} bytes")
        now = time.time()
        with self._metadata._write() as conn:
            row = conn.execute("SELECT state, lifetime FROM sync_uploads WHERE upload_id = ?", (upload_id,)).fetchone()
            if row is None:
                raise SyncNotFound(f"no upload session {upload_id!r}")
            state, lifetime = row
            if state != "open":
                raise UploadClosed(f"upload session {upload_id} is {state}")
            listed = conn.execute(
                "SELECT size, uploaded FROM sync_upload_chunks WHERE upload_id = ? AND hash = ?", (upload_id, hash_)
            ).fetchone()
            if listed is None:
                raise InvalidSyncRequest(f"chunk {chunk_hash} is not part of upload {upload_id}")
            if listed[0] != size:
                raise InvalidSyncRequest(f"chunk {chunk_hash} has size {listed[0]} in the session, not {size}")
            if listed[1] is not None:
                return False
            existing = conn.execute("SELECT storage_chunks FROM sync_chunks WHERE hash = ?", (hash_,)).fetchone()
            recorded = None if existing is None else _decode_chunks(existing[0])
            if recorded is not None and recorded != storage and self._all_live(conn, recorded):
                # Another cut of the same bytes is stored and alive: keep one mapping (versions
                # reference it), reference it, and drop this writer's now useless pins.
                self._metadata._add_references(conn, recorded, None)
                conn.execute("DELETE FROM chunk_pins WHERE pin_id = ?", (pin_id,))
            else:
                self._metadata._add_references(conn, storage, pin_id)
                if recorded != storage:
                    # Absent, or a mapping whose storage chunks were collected (nothing holds it).
                    conn.execute(
                        "INSERT OR REPLACE INTO sync_chunks (hash, size, storage_chunks) VALUES (?, ?, ?)",
                        (hash_, size, _encode_chunks(storage)),
                    )
            conn.execute(
                "UPDATE sync_upload_chunks SET uploaded = ? WHERE upload_id = ? AND hash = ?", (now, upload_id, hash_)
            )
            conn.execute(
                "UPDATE sync_uploads SET expires_at = max(expires_at, ?) WHERE upload_id = ?",
                (now + lifetime, upload_id),
            )
        return True

    def _all_live(self, conn: sqlite3.Connection, chunks: Sequence[ChunkRef]) -> bool:
        hashes = list({_hash_bytes(chunk.hash) for chunk in chunks})
        states = self._metadata._chunk_states(conn, hashes)
        return all(states.get(hash_) == ChunkState.LIVE for hash_ in hashes)

    def commit_upload(self, upload_id: str, now: float | None = None) -> CommitResult:
        """See SyncStore.commit_upload."""
        when = time.time() if now is None else now
        with self._metadata._write() as conn:
            upload = self._fetch_upload(conn, upload_id)
            if upload.state == "committed":
                assert upload.result is not None
                return upload.result
            if upload.state == "expired":
                raise UploadClosed(f"upload session {upload_id} expired")
            missing = self._missing(conn, upload_id, upload.namespace_id, upload.state)
            if missing:
                raise SyncChunksMissing(chunk.hash for chunk in missing)
            namespace_id = upload.namespace_id
            file_id, path, conflict = self._commit_target(conn, upload)
            if conflict:
                blocker = self._live_file_parent(conn, namespace_id, upload.path)
                if blocker is not None:
                    raise PathExists(f"{blocker!r} is a file")
                device = self._device_name(conn, upload.device_id) or _UNKNOWN_DEVICE
                attempt = 1
                while True:
                    path = conflicted_copy_name(upload.path, device, when, attempt)
                    validate_path(path)
                    if self._free_for_file(conn, namespace_id, path):
                        break
                    attempt += 1
            if file_id is None:
                file_id = conn.execute(
                    "INSERT INTO sync_entries (namespace_id, path, kind, current_version, deleted, created, updated) "
                    "VALUES (?, ?, 'file', NULL, 0, ?, ?)",
                    (namespace_id, path, when, when),
                ).lastrowid
                assert file_id is not None
            version_id = self._add_version(
                conn, namespace_id, file_id, upload.size, upload.chunks, upload.device_id, upload.base_version, when
            )
            conn.execute("UPDATE sync_entries SET current_version = ? WHERE file_id = ?", (version_id, file_id))
            seq = self._append_journal(
                conn, namespace_id, file_id, "commit", path, upload.device_id, when, version_id=version_id
            )
            # The version's references are in: releasing the session's never takes a shared chunk to 0.
            self._metadata._release_references(conn, self._session_references(conn, upload_id))
            result = CommitResult(
                file_id=file_id,
                version_id=version_id,
                path=path,
                conflict=conflict,
                conflict_of=upload.path if conflict else None,
                seq=seq,
            )
            conn.execute(
                "UPDATE sync_uploads SET state = 'committed', result = ? WHERE upload_id = ?",
                (_result_json(result), upload_id),
            )
        return result

    def _commit_target(self, conn: sqlite3.Connection, upload: Upload) -> tuple[int | None, str, bool]:
        """(file_id to update or None for a new file, path, conflict) of a commit. A current base
        updates its file at the file's current path; no base and a free path makes a new file."""
        if upload.base_version is not None:
            row = conn.execute(
                "SELECT e.file_id, e.path, e.current_version, e.deleted FROM sync_versions v "
                "JOIN sync_entries e ON e.file_id = v.file_id WHERE v.version_id = ?",
                (upload.base_version,),
            ).fetchone()
            if row is not None and not row[3] and row[2] == upload.base_version:
                return row[0], row[1], False
            return None, upload.path, True
        blocker = self._live_file_parent(conn, upload.namespace_id, upload.path)
        if blocker is not None:
            raise PathExists(f"{blocker!r} is a file")
        if self._free_for_file(conn, upload.namespace_id, upload.path):
            return None, upload.path, False
        return None, upload.path, True

    def expire_uploads(self, now: float) -> int:
        """See SyncStore.expire_uploads."""
        with self._metadata._write() as conn:
            upload_ids = [
                upload_id
                for (upload_id,) in conn.execute(
                    "SELECT upload_id FROM sync_uploads WHERE state = 'open' AND expires_at < ?", (now,)
                ).fetchall()
            ]
            for upload_id in upload_ids:
                self._metadata._release_references(conn, self._session_references(conn, upload_id))
                conn.execute("UPDATE sync_upload_chunks SET uploaded = NULL WHERE upload_id = ?", (upload_id,))
                conn.execute("UPDATE sync_uploads SET state = 'expired' WHERE upload_id = ?", (upload_id,))
        return len(upload_ids)

    # Chunks ----------------------------------------------------------------------------------

    def storage_chunks_of(self, chunk_hash: str) -> tuple[ChunkRef, ...] | None:
        """See SyncStore.storage_chunks_of."""
        hash_ = _hash_bytes(validate_chunk_hash(chunk_hash))
        row = (
            self._metadata._connection()
            .execute("SELECT storage_chunks FROM sync_chunks WHERE hash = ?", (hash_,))
            .fetchone()
        )
        return None if row is None else _decode_chunks(row[0])

    def namespace_has_chunk(self, namespace_id: int, chunk_hash: str) -> bool:
        """See SyncStore.namespace_has_chunk."""
        hash_ = _hash_bytes(validate_chunk_hash(chunk_hash))
        row = (
            self._metadata._connection()
            .execute(
                "SELECT EXISTS (SELECT 1 FROM sync_namespace_chunks WHERE namespace_id = ?1 AND hash = ?2) "
                "OR EXISTS (SELECT 1 FROM sync_upload_chunks c JOIN sync_uploads u ON u.upload_id = c.upload_id "
                "WHERE c.hash = ?2 AND c.uploaded IS NOT NULL AND u.namespace_id = ?1 AND u.state = 'open')",
                (namespace_id, hash_),
            )
            .fetchone()
        )
        return bool(row[0])

    # Entries and versions --------------------------------------------------------------------

    def get_entry(self, file_id: int) -> Entry:
        """See SyncStore.get_entry."""
        return self._fetch_entry(self._metadata._connection(), file_id)

    def entry_by_path(self, namespace_id: int, path: str) -> Entry:
        """See SyncStore.entry_by_path."""
        validate_path(path)
        row = (
            self._metadata._connection()
            .execute(f"{_ENTRY_SELECT} WHERE e.namespace_id = ? AND e.path = ? AND e.deleted = 0", (namespace_id, path))
            .fetchone()
        )
        if row is None:
            raise SyncNotFound(f"nothing at {path!r}")
        return self._entry_from_row(row)

    def versions(self, file_id: int) -> list[Version]:
        """See SyncStore.versions."""
        with self._metadata._read() as conn:
            self._fetch_entry(conn, file_id)
            rows = conn.execute(f"{_VERSION_SELECT} WHERE v.file_id = ? ORDER BY v.version_id", (file_id,)).fetchall()
        return [self._version_from_row(row) for row in rows]

    def get_version(self, version_id: int) -> Version:
        """See SyncStore.get_version."""
        row = (
            self._metadata._connection()
            .execute(f"{_VERSION_SELECT} WHERE v.version_id = ?", (version_id,))
            .fetchone()
        )
        if row is None:
            raise SyncNotFound(f"no version {version_id}")
        return self._version_from_row(row)

    def delete_entry(self, file_id: int, device_id: int | None, *, expected_version: int | None = None,
                     only_if_empty: bool = False) -> int:
        """See SyncStore.delete_entry."""
        now = time.time()
        with self._metadata._write() as conn:
            entry = self._fetch_entry(conn, file_id)
            if entry.deleted:
                return self._latest_seq(conn, entry.namespace_id)
            if expected_version is not None and entry.current_version != expected_version:
                raise SyncPreconditionFailed(
                    f"{entry.path!r} is at version {entry.current_version}, not {expected_version}")
            if only_if_empty and entry.kind == "folder" and self._live_under(conn, entry.namespace_id, entry.path):
                raise SyncPreconditionFailed(f"folder {entry.path!r} is not empty")
            targets: list[tuple[int, str]] = [(entry.file_id, entry.path)]
            if entry.kind == "folder":
                lower, upper = _under(entry.path)
                targets += conn.execute(
                    "SELECT file_id, path FROM sync_entries WHERE namespace_id = ? AND deleted = 0 "
                    "AND path > ? AND path < ?",
                    (entry.namespace_id, lower, upper),
                ).fetchall()
                # Children before parents: a client applying the entries in order empties a
                # folder before removing it.
                targets.sort(key=lambda target: target[1].encode("utf-8"), reverse=True)
            seq = 0
            for target_id, path in targets:
                conn.execute("UPDATE sync_entries SET deleted = 1 WHERE file_id = ?", (target_id,))
                seq = self._append_journal(conn, entry.namespace_id, target_id, "delete", path, device_id, now,
                                           deleted=True)  # fmt: skip
            return seq

    def move_entry(self, file_id: int, to_path: str, device_id: int | None) -> int:
        """See SyncStore.move_entry."""
        validate_path(to_path)
        now = time.time()
        with self._metadata._write() as conn:
            entry = self._fetch_entry(conn, file_id)
            if entry.deleted:
                raise SyncNotFound(f"{entry.path!r} ({file_id}) is deleted")
            namespace_id = entry.namespace_id
            if to_path == entry.path:
                return self._latest_seq(conn, namespace_id)
            if entry.kind == "folder" and to_path.startswith(entry.path + "/"):
                raise InvalidSyncRequest(f"cannot move folder {entry.path!r} into itself")
            moved: list[tuple[int, str, int | None]] = [(entry.file_id, entry.path, entry.current_version)]
            if entry.kind == "folder":
                lower, upper = _under(entry.path)
                moved += conn.execute(
                    "SELECT file_id, path, current_version FROM sync_entries WHERE namespace_id = ? AND deleted = 0 "
                    "AND path > ? AND path < ?",
                    (namespace_id, lower, upper),
                ).fetchall()
            moved_ids = frozenset(target[0] for target in moved)
            blocker = self._live_file_parent(conn, namespace_id, to_path, ignore=moved_ids)
            if blocker is not None:
                raise PathExists(f"{blocker!r} is a file")
            at_target = self._live_entry_at(conn, namespace_id, to_path)
            if (at_target is not None and at_target[0] not in moved_ids) or any(
                other not in moved_ids for other in self._live_under(conn, namespace_id, to_path)
            ):
                raise PathExists(f"{to_path!r} is taken")
            new_paths = [to_path + old_path[len(entry.path):] for _, old_path, _ in moved]
            for new_path in new_paths:
                validate_path(new_path)
            # Two phases: a moved entry's new path may be another moved entry's old path, and the
            # live-path index is checked row by row. NUL never occurs in a valid path.
            conn.executemany(
                "UPDATE sync_entries SET path = ? WHERE file_id = ?",
                [(f"\x00{target_id}", target_id) for target_id, _, _ in moved],
            )
            seq = 0
            # Parents before children: a client applying the entries in order creates folders first.
            order = sorted(range(len(moved)), key=lambda index: moved[index][1].encode("utf-8"))
            for index in order:
                target_id, old_path, current_version = moved[index]
                conn.execute("UPDATE sync_entries SET path = ? WHERE file_id = ?", (new_paths[index], target_id))
                seq = self._append_journal(conn, namespace_id, target_id, "move", new_paths[index], device_id, now,
                                           old_path=old_path, version_id=current_version)  # fmt: skip
            return seq

    def restore_version(self, file_id: int, version_id: int, device_id: int | None) -> CommitResult:
        """See SyncStore.restore_version."""
        now = time.time()
        with self._metadata._write() as conn:
            entry = self._fetch_entry(conn, file_id)
            if entry.kind != "file":
                raise InvalidSyncRequest(f"{entry.path!r} is a folder: folders have no versions")
            row = conn.execute(f"{_VERSION_SELECT} WHERE v.version_id = ?", (version_id,)).fetchone()
            if row is None or row[1] != file_id:
                raise SyncNotFound(f"file {file_id} has no version {version_id}")
            source = self._version_from_row(row)
            if entry.deleted:
                blocker = self._live_file_parent(conn, entry.namespace_id, entry.path)
                if blocker is not None:
                    raise PathExists(f"{blocker!r} is a file")
                if not self._free_for_file(conn, entry.namespace_id, entry.path):
                    raise PathExists(f"{entry.path!r} is taken")
                conn.execute("UPDATE sync_entries SET deleted = 0 WHERE file_id = ?", (file_id,))
            new_version = self._add_version(
                conn, entry.namespace_id, file_id, source.size, source.chunks, device_id, entry.current_version, now
            )
            conn.execute("UPDATE sync_entries SET current_version = ? WHERE file_id = ?", (new_version, file_id))
            seq = self._append_journal(conn, entry.namespace_id, file_id, "restore", entry.path, device_id, now,
                                       version_id=new_version)  # fmt: skip
        return CommitResult(file_id, new_version, entry.path, False, None, seq)

    def make_folder(self, namespace_id: int, path: str, device_id: int | None) -> tuple[Entry, int]:
        """See SyncStore.make_folder."""
        validate_path(path)
        now = time.time()
        with self._metadata._write() as conn:
            self._require_namespace(conn, namespace_id)
            live = self._live_entry_at(conn, namespace_id, path)
            if live is not None:
                if live[1] != "folder":
                    raise PathExists(f"{path!r} is a file")
                return self._fetch_entry(conn, live[0]), self._latest_seq(conn, namespace_id)
            blocker = self._live_file_parent(conn, namespace_id, path)
            if blocker is not None:
                raise PathExists(f"{blocker!r} is a file")
            file_id = conn.execute(
                "INSERT INTO sync_entries (namespace_id, path, kind, current_version, deleted, created, updated) "
                "VALUES (?, ?, 'folder', NULL, 0, ?, ?)",
                (namespace_id, path, now, now),
            ).lastrowid
            assert file_id is not None
            seq = self._append_journal(conn, namespace_id, file_id, "mkdir", path, device_id, now)
        return Entry(file_id, namespace_id, path, "folder", None, False, None, None), seq

    # Journal ---------------------------------------------------------------------------------

    def tree(self, namespace_id: int) -> tuple[list[JournalEntry], int]:
        """See SyncStore.tree."""
        with self._metadata._read() as conn:
            rows = conn.execute(
                "SELECT e.seq, e.namespace_id, e.file_id, e.kind, "
                "CASE e.kind WHEN 'file' THEN 'commit' ELSE 'mkdir' END, e.path, NULL, e.current_version, v.size, "
                "v.chunk_list, 0, d.name, coalesce(j.created, e.updated) "
                "FROM sync_entries e LEFT JOIN sync_versions v ON v.version_id = e.current_version "
                "LEFT JOIN sync_journal j ON j.seq = e.seq LEFT JOIN sync_devices d ON d.device_id = j.device_id "
                "WHERE e.namespace_id = ? AND e.deleted = 0 ORDER BY e.path",
                (namespace_id,),
            ).fetchall()
            latest = self._latest_seq(conn, namespace_id)
        return [self._journal_from_row(row) for row in rows], latest

    def changes(self, namespace_id: int, after_seq: int, limit: int) -> ChangesPage:
        """See SyncStore.changes."""
        if limit < 1:
            raise InvalidSyncRequest(f"limit must be >= 1, got {limit}")
        rows = (
            self._metadata._connection()
            .execute(
                f"{_JOURNAL_SELECT} WHERE j.namespace_id = ? AND j.seq > ? ORDER BY j.seq LIMIT ?",
                (namespace_id, after_seq, limit + 1),
            )
            .fetchall()
        )
        entries = [self._journal_from_row(row) for row in rows[:limit]]
        return ChangesPage(entries, entries[-1].seq if entries else after_seq, len(rows) > limit)

    def latest_seq(self, namespace_id: int) -> int:
        """See SyncStore.latest_seq."""
        return self._latest_seq(self._metadata._connection(), namespace_id)

