"""`SqliteMetadataStore`: the embedded `MetadataStore` on SQLite (stdlib sqlite3) in WAL mode.

Durability: `journal_mode=WAL` with `synchronous=FULL` syncs the WAL on every commit, so a change
is durable when its method returns. Concurrency: one connection per thread (`threading.local`);
SQLite's WAL lets readers run beside the one writer, and every change runs in an explicit
`BEGIN IMMEDIATE` transaction so writers queue on the busy timeout instead of failing midway
when a read lock would have to be upgraded.

Storage choices (schema version 1):
- Object keys and upload keys are BLOBs holding the key's UTF-8 bytes, so SQLite's memcmp order
  is S3's UTF-8 binary order and any character (NUL, newline, '../') round-trips.
- Chunk hashes are 32-byte BLOBs. An object's or part's chunk list is one compact BLOB
  (a format byte, then per chunk: 32-byte hash, u64 size, u64 offset, big-endian): a 1 GiB
  object's 256 chunks are 12 KiB read in one row lookup. The chunk list is the last column so
  listings, which read only the leading columns, never touch its overflow pages.
- User, system metadata and checksums are JSON objects.

The schema is versioned (`schema_version` table, numbered migrations in `_MIGRATIONS`); later
issues (the sync API) add tables by appending a migration. Version 2 adds each chunk's state
(0 WRITING, 1 LIVE, 2 DELETING; rows of a version-1 file become LIVE) with the time garbage
collection marked it, and the `chunk_pins` table (pin id, chunk hash, creation time): the
PUT-vs-garbage-collection protocol of `metadata/store.py`. Pin transactions run with
`synchronous=NORMAL`: WAL frames are appended in order, so a later synced commit also makes them
durable, and a pin lost in a power cut (never followed by a synced commit) only leaves orphan
fragments, which the orphan sweep removes. Version 3 adds the sync API's tables (users, namespaces,
devices, entries, versions, journal, upload sessions, the sync chunk -> storage chunks mapping and
per-namespace chunk presence), used by `SqliteSyncStore` (metadata/sqlite_sync_store.py documents
them) in this same file and transactions.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import string
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from metadata.records import (
    AccessKey,
    AccessKeyAlreadyExists,
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
from metadata.store import MetadataStore

# Each migration is the list of statements that takes the schema from version N-1 to N.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE access_keys (
            access_key_id TEXT PRIMARY KEY,
            secret_key TEXT NOT NULL,
            owner TEXT NOT NULL,
            created REAL NOT NULL
        )""",
        """CREATE TABLE buckets (
            name TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            created REAL NOT NULL
        )""",
        # zero_since: when refcount last reached 0 (NULL while referenced); for garbage collection.
        """CREATE TABLE chunks (
            hash BLOB PRIMARY KEY CHECK (length(hash) = 32),
            size INTEGER NOT NULL,
            refcount INTEGER NOT NULL CHECK (refcount >= 0),
            zero_since REAL
        ) WITHOUT ROWID""",
        "CREATE INDEX chunks_unreferenced ON chunks (zero_since) WHERE refcount = 0",
        """CREATE TABLE objects (
            object_id INTEGER PRIMARY KEY,
            bucket TEXT NOT NULL REFERENCES buckets (name),
            key BLOB NOT NULL,
            size INTEGER NOT NULL,
            etag TEXT NOT NULL,
            last_modified REAL NOT NULL,
            content_type TEXT NOT NULL,
            user_metadata TEXT NOT NULL,
            system_metadata TEXT NOT NULL,
            checksums TEXT NOT NULL,
            part_count INTEGER,
            part_sizes TEXT NOT NULL,
            chunk_list BLOB NOT NULL,
            UNIQUE (bucket, key)
        )""",
        """CREATE TABLE multipart_uploads (
            upload_id TEXT PRIMARY KEY,
            bucket TEXT NOT NULL REFERENCES buckets (name),
            key BLOB NOT NULL,
            initiated REAL NOT NULL,
            owner TEXT NOT NULL,
            content_type TEXT NOT NULL,
            user_metadata TEXT NOT NULL,
            system_metadata TEXT NOT NULL,
            checksum_algorithm TEXT
        )""",
        "CREATE INDEX multipart_uploads_by_key ON multipart_uploads (bucket, key, initiated, upload_id)",
        """CREATE TABLE parts (
            upload_id TEXT NOT NULL REFERENCES multipart_uploads (upload_id),
            part_number INTEGER NOT NULL,
            size INTEGER NOT NULL,
            etag TEXT NOT NULL,
            last_modified REAL NOT NULL,
            checksums TEXT NOT NULL,
            chunk_list BLOB NOT NULL,
            PRIMARY KEY (upload_id, part_number)
        )""",
    ),
    # 2: chunk states and pins (garbage collection vs PUT).
    (
        "ALTER TABLE chunks ADD COLUMN state INTEGER NOT NULL DEFAULT 1 CHECK (state IN (0, 1, 2))",
        "ALTER TABLE chunks ADD COLUMN marked_at REAL",
        "CREATE INDEX chunks_being_collected ON chunks (marked_at) WHERE state = 2",
        """CREATE TABLE chunk_pins (
            pin_id TEXT NOT NULL,
            hash BLOB NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY (pin_id, hash)
        ) WITHOUT ROWID""",
        "CREATE INDEX chunk_pins_by_hash ON chunk_pins (hash)",
        "CREATE INDEX chunk_pins_by_created ON chunk_pins (created)",
    ),
    # 3: the sync API's tables (metadata/sqlite_sync_store.py documents them).
    (
        """CREATE TABLE sync_users (
            user_id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created REAL NOT NULL
        )""",
        """CREATE TABLE sync_namespaces (
            namespace_id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL UNIQUE REFERENCES sync_users (user_id),
            created REAL NOT NULL
        )""",
        """CREATE TABLE sync_devices (
            device_id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES sync_users (user_id),
            name TEXT NOT NULL,
            token_hash BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
            created REAL NOT NULL,
            revoked REAL
        )""",
        "CREATE INDEX sync_devices_by_user ON sync_devices (user_id)",
        # seq: the journal entry of the entry's last change.
        """CREATE TABLE sync_entries (
            file_id INTEGER PRIMARY KEY,
            namespace_id INTEGER NOT NULL REFERENCES sync_namespaces (namespace_id),
            path TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('file', 'folder')),
            current_version INTEGER,
            deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
            created REAL NOT NULL,
            updated REAL NOT NULL,
            seq INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE UNIQUE INDEX sync_entries_live_path ON sync_entries (namespace_id, path) WHERE deleted = 0",
        """CREATE TABLE sync_versions (
            version_id INTEGER PRIMARY KEY,
            file_id INTEGER NOT NULL REFERENCES sync_entries (file_id),
            size INTEGER NOT NULL,
            created REAL NOT NULL,
            device_id INTEGER,
            base_version INTEGER,
            chunk_list BLOB NOT NULL
        )""",
        "CREATE INDEX sync_versions_by_file ON sync_versions (file_id, version_id)",
        """CREATE TABLE sync_journal (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            namespace_id INTEGER NOT NULL,
            file_id INTEGER NOT NULL,
            action TEXT NOT NULL,
            path TEXT NOT NULL,
            old_path TEXT,
            version_id INTEGER,
            deleted INTEGER NOT NULL,
            device_id INTEGER,
            created REAL NOT NULL
        )""",
        "CREATE INDEX sync_journal_by_namespace ON sync_journal (namespace_id, seq)",
        """CREATE TABLE sync_uploads (
            upload_id TEXT PRIMARY KEY,
            namespace_id INTEGER NOT NULL REFERENCES sync_namespaces (namespace_id),
            file_id INTEGER,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            base_version INTEGER,
            device_id INTEGER,
            created REAL NOT NULL,
            lifetime REAL NOT NULL,
            expires_at REAL NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('open', 'committed', 'expired')),
            result TEXT,
            chunk_list BLOB NOT NULL
        )""",
        "CREATE INDEX sync_uploads_open_by_expiry ON sync_uploads (expires_at) WHERE state = 'open'",
        # One row per distinct chunk of a session; uploaded: when (NULL until then).
        """CREATE TABLE sync_upload_chunks (
            upload_id TEXT NOT NULL,
            hash BLOB NOT NULL,
            position INTEGER NOT NULL,
            size INTEGER NOT NULL,
            uploaded REAL,
            PRIMARY KEY (upload_id, hash)
        ) WITHOUT ROWID""",
        "CREATE INDEX sync_upload_chunks_uploaded ON sync_upload_chunks (hash) WHERE uploaded IS NOT NULL",
        """CREATE TABLE sync_chunks (
            hash BLOB PRIMARY KEY CHECK (length(hash) = 32),
            size INTEGER NOT NULL,
            storage_chunks BLOB NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE sync_namespace_chunks (
            namespace_id INTEGER NOT NULL,
            hash BLOB NOT NULL,
            PRIMARY KEY (namespace_id, hash)
        ) WITHOUT ROWID""",
    ),
)

SCHEMA_VERSION = len(_MIGRATIONS)

_CHUNK_LIST_FORMAT = 1
_CHUNK_ENTRY = struct.Struct(">32sQQ")  # hash, size (bytes), offset (bytes)
_BUSY_TIMEOUT_SECONDS = 30.0
_ACCESS_KEY_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_KEY_ALPHABET = string.ascii_letters + string.digits
_IN_CLAUSE_BATCH = 500  # stays far below SQLite's bound-parameter limit

_OBJECT_COLUMNS = (
    "key, size, etag, last_modified, content_type, user_metadata, system_metadata, checksums, "
    "part_count, part_sizes, chunk_list"
)
_UPLOAD_COLUMNS = (
    "upload_id, bucket, key, initiated, owner, content_type, user_metadata, system_metadata, "
    "checksum_algorithm"
)
_OBJECT_COLUMNS_JOINED = ", ".join("o." + column.strip() for column in _OBJECT_COLUMNS.split(","))
_PART_COLUMNS = "part_number, size, etag, last_modified, checksums, chunk_list"


def _in_batches(conn: sqlite3.Connection, sql: str, values: Sequence[Any], before: Sequence[Any] = (),
                after: Sequence[Any] = ()) -> Iterator[sqlite3.Cursor]:
    """Run `sql`, whose one ``{}`` slot takes the placeholders of an IN list, over `values` in
    batches of _IN_CLAUSE_BATCH (SQLite bounds the parameters of one statement); the parameters
    are `before` + the batch + `after`. Yields each batch's cursor (rows, or rowcount)."""
    for start in range(0, len(values), _IN_CLAUSE_BATCH):
        batch = values[start : start + _IN_CLAUSE_BATCH]
        yield conn.execute(sql.format(",".join("?" * len(batch))), [*before, *batch, *after])


def _hash_bytes(chunk_hash: str) -> bytes:
    """64 hex characters -> 32 bytes; ValueError otherwise."""
    if len(chunk_hash) != 64:
        raise ValueError(f"chunk hash must be 64 hex characters, got {chunk_hash!r}")
    return bytes.fromhex(chunk_hash)


def _encode_chunks(chunks: Sequence[ChunkRef]) -> bytes:
    """Chunk list -> the compact BLOB described in the module docstring."""
    buffer = bytearray(1 + _CHUNK_ENTRY.size * len(chunks))
    buffer[0] = _CHUNK_LIST_FORMAT
    for index, chunk in enumerate(chunks):
        _CHUNK_ENTRY.pack_into(
            buffer, 1 + index * _CHUNK_ENTRY.size, _hash_bytes(chunk.hash), chunk.size, chunk.offset
        )
    return bytes(buffer)


def _decode_chunks(blob: bytes) -> tuple[ChunkRef, ...]:
    """The compact BLOB -> chunk list. Raises MetadataError on an unknown format byte."""
    if not blob or blob[0] != _CHUNK_LIST_FORMAT:
        raise MetadataError(f"unknown chunk list format {blob[:1]!r}")
    return tuple(
        ChunkRef(hash_.hex(), size, offset)
        for hash_, size, offset in _CHUNK_ENTRY.iter_unpack(memoryview(blob)[1:])
    )


def _successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with `prefix`, or None if
    there is none (prefix empty or all 0xFF). Used as the exclusive upper bound of a prefix range
    and to seek past a whole common prefix."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def _json(value: dict[str, str]) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _strip_quotes(etag: str) -> str:
    """ETags compare without their surrounding quotes: clients send both forms."""
    return etag.strip().strip('"')


class SqliteMetadataStore(MetadataStore):
    """`MetadataStore` on one SQLite database file at `path` (created with its schema if absent).

    Thread-safe: each thread gets its own connection. Raises MetadataError if the file's schema is
    newer than this code. Use `close()` (or `with`) to release the connections.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        self._migrate()

    @property
    def path(self) -> str:
        """The database file's path."""
        return self._path

    # Connections and transactions ------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        with self._lock:
            if self._closed:
                raise MetadataError("metadata store is closed")
            # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread=False only
            # so close() can close every thread's connection; each is otherwise used by one thread.
            connection = sqlite3.connect(
                self._path,
                timeout=_BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=False,
            )
            self._connections.append(connection)
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise MetadataError(f"could not put {self._path} in WAL mode (got {mode})")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_SECONDS * 1000)}")
        self._local.connection = connection
        return connection

    @contextlib.contextmanager
    def _write(self, *, synced: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE takes the write lock up front. ``synced=False``
        commits without syncing the WAL (``synchronous=NORMAL``; see the module docstring)."""
        connection = self._connection()
        if not synced:
            connection.execute("PRAGMA synchronous=NORMAL")
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        finally:
            if not synced:
                connection.execute("PRAGMA synchronous=FULL")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several queries see one snapshot."""
        connection = self._connection()
        connection.execute("BEGIN")
        try:
            yield connection
        finally:
            if connection.in_transaction:
                connection.execute("COMMIT")

    def _migrate(self) -> None:
        """Bring the file's schema up to SCHEMA_VERSION, one numbered migration at a time."""
        with self._write() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
            )
            row = conn.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
            current = row[0] if row else 0
            if current > SCHEMA_VERSION:
                raise MetadataError(
                    f"{self._path} has schema version {current}, newer than this code ({SCHEMA_VERSION})"
                )
            for statements in _MIGRATIONS[current:]:
                for statement in statements:
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (id, version) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                (SCHEMA_VERSION,),
            )

    def schema_version(self) -> int:
        """The database's schema version (== SCHEMA_VERSION once opened)."""
        row = self._connection().execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close every thread's connection; later calls raise MetadataError."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local = threading.local()

    def __enter__(self) -> SqliteMetadataStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Shared row helpers ----------------------------------------------------------------------

    @staticmethod
    def _require_bucket(conn: sqlite3.Connection, bucket: str) -> None:
        if conn.execute("SELECT 1 FROM buckets WHERE name = ?", (bucket,)).fetchone() is None:
            raise NoSuchBucket(bucket)

    @staticmethod
    def _chunk_states(conn: sqlite3.Connection, hashes: Sequence[bytes]) -> dict[bytes, int]:
        """hash -> state of the recorded ones among `hashes`."""
        return {
            bytes(hash_): state
            for cursor in _in_batches(conn, "SELECT hash, state FROM chunks WHERE hash IN ({})", hashes)
            for hash_, state in cursor
        }

    @staticmethod
    def _pinned(conn: sqlite3.Connection, pin_id: str, hashes: Sequence[bytes]) -> set[bytes]:
        """Which of `hashes` `pin_id` pins."""
        return {
            bytes(hash_)
            for cursor in _in_batches(conn, "SELECT hash FROM chunk_pins WHERE pin_id = ? AND hash IN ({})",
                                      hashes, before=[pin_id])
            for (hash_,) in cursor
        }

    def _add_references(
        self, conn: sqlite3.Connection, chunks: Iterable[ChunkRef], pin_id: str | None
    ) -> None:
        """One reference per chunk occurrence. Every chunk must be LIVE, or WRITING and pinned by
        `pin_id` (it becomes LIVE); else ChunksUnavailable before anything changes. `pin_id`'s
        pins are dropped: the references now protect the chunks."""
        counts: dict[bytes, int] = {}
        for chunk in chunks:
            hash_ = _hash_bytes(chunk.hash)
            counts[hash_] = counts.get(hash_, 0) + 1
        hashes = list(counts)
        states = self._chunk_states(conn, hashes)
        writing = [hash_ for hash_ in hashes if states.get(hash_) == ChunkState.WRITING]
        pinned = self._pinned(conn, pin_id, writing) if pin_id is not None and writing else set()
        unavailable = [
            hash_ for hash_ in hashes
            if states.get(hash_) not in (ChunkState.LIVE, ChunkState.WRITING)
            or (states[hash_] == ChunkState.WRITING and hash_ not in pinned)
        ]
        if unavailable:
            raise ChunksUnavailable(hash_.hex() for hash_ in unavailable)
        conn.executemany(
            "UPDATE chunks SET refcount = refcount + ?, zero_since = NULL, state = ? WHERE hash = ?",
            [(count, ChunkState.LIVE, hash_) for hash_, count in counts.items()],
        )
        if pin_id is not None:
            conn.execute("DELETE FROM chunk_pins WHERE pin_id = ?", (pin_id,))

    @staticmethod
    def _release_references(conn: sqlite3.Connection, chunks: Iterable[ChunkRef]) -> None:
        """Drop one reference per chunk occurrence, never below zero; stamp when a count hits 0."""
        counts: dict[bytes, int] = {}
        for chunk in chunks:
            hash_ = _hash_bytes(chunk.hash)
            counts[hash_] = counts.get(hash_, 0) + 1
        now = time.time()
        # SET expressions all see the row's old values.
        conn.executemany(
            "UPDATE chunks SET refcount = max(refcount - :count, 0), "
            "zero_since = CASE WHEN refcount > 0 AND refcount <= :count THEN :now ELSE zero_since END "
            "WHERE hash = :hash",
            [{"count": count, "now": now, "hash": hash_} for hash_, count in counts.items()],
        )

    @staticmethod
    def _object_from_row(bucket: str, row: Sequence[Any]) -> ObjectRecord:
        (key, size, etag, last_modified, content_type, user_metadata, system_metadata, checksums,
         part_count, part_sizes, chunk_list) = row  # fmt: skip
        return ObjectRecord(
            bucket=bucket,
            key=bytes(key).decode("utf-8"),
            size=size,
            etag=etag,
            last_modified=last_modified,
            content_type=content_type,
            user_metadata=json.loads(user_metadata),
            system_metadata=json.loads(system_metadata),
            checksums=json.loads(checksums),
            chunks=_decode_chunks(chunk_list),
            part_count=part_count,
            part_sizes=tuple(json.loads(part_sizes)),
        )

    def _fetch_object(self, conn: sqlite3.Connection, bucket: str, key: bytes) -> ObjectRecord | None:
        row = conn.execute(
            f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE bucket = ? AND key = ?", (bucket, key)
        ).fetchone()
        return None if row is None else self._object_from_row(bucket, row)

    def _replace_object(
        self, conn: sqlite3.Connection, record: ObjectRecord, pin_id: str | None = None
    ) -> ObjectRecord | None:
        """Write `record` over whatever is at its key; add its references before releasing the
        old object's, so a chunk both share never passes through zero. ChunksUnavailable as for
        `_add_references`."""
        key = record.key.encode("utf-8")
        previous = self._fetch_object(conn, record.bucket, key)
        self._add_references(conn, record.chunks, pin_id)
        conn.execute(
            "INSERT OR REPLACE INTO objects (bucket, key, size, etag, last_modified, content_type, "
            "user_metadata, system_metadata, checksums, part_count, part_sizes, chunk_list) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.bucket,
                key,
                record.size,
                record.etag,
                record.last_modified,
                record.content_type,
                _json(record.user_metadata),
                _json(record.system_metadata),
                _json(record.checksums),
                record.part_count,
                json.dumps(list(record.part_sizes)),
                _encode_chunks(record.chunks),
            ),
        )
        if previous is not None:
            self._release_references(conn, previous.chunks)
        return previous

    @staticmethod
    def _upload_from_row(row: Sequence[Any]) -> MultipartUpload:
        (upload_id, bucket, key, initiated, owner, content_type, user_metadata, system_metadata,
         checksum_algorithm) = row  # fmt: skip
        return MultipartUpload(
            upload_id=upload_id,
            bucket=bucket,
            key=bytes(key).decode("utf-8"),
            initiated=initiated,
            owner=owner,
            content_type=content_type,
            user_metadata=json.loads(user_metadata),
            system_metadata=json.loads(system_metadata),
            checksum_algorithm=checksum_algorithm,
        )

    def _fetch_upload(self, conn: sqlite3.Connection, upload_id: str) -> MultipartUpload:
        row = conn.execute(
            f"SELECT {_UPLOAD_COLUMNS} FROM multipart_uploads WHERE upload_id = ?", (upload_id,)
        ).fetchone()
        if row is None:
            raise NoSuchUpload(upload_id)
        return self._upload_from_row(row)

    @staticmethod
    def _part_from_row(row: Sequence[Any]) -> PartRecord:
        part_number, size, etag, last_modified, checksums, chunk_list = row
        return PartRecord(
            part_number=part_number,
            size=size,
            etag=etag,
            last_modified=last_modified,
            checksums=json.loads(checksums),
            chunks=_decode_chunks(chunk_list),
        )

    def _drop_upload(self, conn: sqlite3.Connection, upload_id: str) -> None:
        """Delete an upload and all its parts, releasing the parts' references."""
        chunks: list[ChunkRef] = []
        for (chunk_list,) in conn.execute("SELECT chunk_list FROM parts WHERE upload_id = ?", (upload_id,)):
            chunks.extend(_decode_chunks(chunk_list))
        self._release_references(conn, chunks)
        conn.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
        conn.execute("DELETE FROM multipart_uploads WHERE upload_id = ?", (upload_id,))

    # Access keys -----------------------------------------------------------------------------

    def create_access_key(
        self, owner: str, access_key_id: str | None = None, secret_key: str | None = None
    ) -> AccessKey:
        """See MetadataStore.create_access_key."""
        if access_key_id is None:
            access_key_id = "CK" + "".join(secrets.choice(_ACCESS_KEY_ALPHABET) for _ in range(18))
        if secret_key is None:
            secret_key = "".join(secrets.choice(_SECRET_KEY_ALPHABET) for _ in range(40))
        key = AccessKey(access_key_id, secret_key, owner, time.time())
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO access_keys (access_key_id, secret_key, owner, created) VALUES (?, ?, ?, ?)",
                    (key.access_key_id, key.secret_key, key.owner, key.created),
                )
        except sqlite3.IntegrityError as error:
            raise AccessKeyAlreadyExists(access_key_id) from error
        return key

    def get_access_key(self, access_key_id: str) -> AccessKey | None:
        """See MetadataStore.get_access_key."""
        row = (
            self._connection()
            .execute(
                "SELECT access_key_id, secret_key, owner, created FROM access_keys WHERE access_key_id = ?",
                (access_key_id,),
            )
            .fetchone()
        )
        return None if row is None else AccessKey(*row)

    def list_access_keys(self) -> list[AccessKey]:
        """See MetadataStore.list_access_keys."""
        rows = self._connection().execute(
            "SELECT access_key_id, secret_key, owner, created FROM access_keys ORDER BY access_key_id"
        )
        return [AccessKey(*row) for row in rows]

    def delete_access_key(self, access_key_id: str) -> bool:
        """See MetadataStore.delete_access_key."""
        with self._write() as conn:
            cursor = conn.execute("DELETE FROM access_keys WHERE access_key_id = ?", (access_key_id,))
            return cursor.rowcount > 0

    # Buckets ---------------------------------------------------------------------------------

    def create_bucket(self, name: str, owner: str) -> BucketRecord:
        """See MetadataStore.create_bucket."""
        record = BucketRecord(name, owner, time.time())
        with self._write() as conn:
            row = conn.execute("SELECT owner FROM buckets WHERE name = ?", (name,)).fetchone()
            if row is not None:
                if row[0] == owner:
                    raise BucketAlreadyOwnedByYou(name)
                raise BucketAlreadyExists(name)
            conn.execute(
                "INSERT INTO buckets (name, owner, created) VALUES (?, ?, ?)",
                (record.name, record.owner, record.created),
            )
        return record

    def get_bucket(self, name: str) -> BucketRecord | None:
        """See MetadataStore.get_bucket."""
        row = (
            self._connection()
            .execute("SELECT name, owner, created FROM buckets WHERE name = ?", (name,))
            .fetchone()
        )
        return None if row is None else BucketRecord(*row)

    def list_buckets(self, owner: str | None = None) -> list[BucketRecord]:
        """See MetadataStore.list_buckets."""
        conn = self._connection()
        if owner is None:
            rows = conn.execute("SELECT name, owner, created FROM buckets ORDER BY name")
        else:
            rows = conn.execute(
                "SELECT name, owner, created FROM buckets WHERE owner = ? ORDER BY name", (owner,)
            )
        return [BucketRecord(*row) for row in rows]

    def delete_bucket(self, name: str) -> None:
        """See MetadataStore.delete_bucket."""
        with self._write() as conn:
            self._require_bucket(conn, name)
            if conn.execute("SELECT 1 FROM objects WHERE bucket = ? LIMIT 1", (name,)).fetchone():
                raise BucketNotEmpty(name)
            upload_ids = [
                row[0]
                for row in conn.execute("SELECT upload_id FROM multipart_uploads WHERE bucket = ?", (name,))
            ]
            for upload_id in upload_ids:
                self._drop_upload(conn, upload_id)
            conn.execute("DELETE FROM buckets WHERE name = ?", (name,))

    # Chunks ----------------------------------------------------------------------------------

    def _select_hashes(self, hashes: Iterable[str], where: str) -> set[str]:
        """The given hashes whose chunk row satisfies `where` (SQL over the ``chunks`` columns)."""
        wanted = sorted({_hash_bytes(chunk_hash) for chunk_hash in hashes})
        with self._read() as conn:
            return {
                bytes(hash_).hex()
                for cursor in _in_batches(conn, f"SELECT hash FROM chunks WHERE hash IN ({{}}) AND {where}", wanted)
                for (hash_,) in cursor
            }

    def chunks_present(self, hashes: Iterable[str]) -> set[str]:
        """See MetadataStore.chunks_present."""
        return self._select_hashes(hashes, f"state = {int(ChunkState.LIVE)}")

    def chunks_recorded(self, hashes: Iterable[str]) -> set[str]:
        """See MetadataStore.chunks_recorded."""
        return self._select_hashes(hashes, "1")

    def chunk_state(self, chunk_hash: str) -> ChunkState | None:
        """See MetadataStore.chunk_state."""
        row = (
            self._connection()
            .execute("SELECT state FROM chunks WHERE hash = ?", (_hash_bytes(chunk_hash),))
            .fetchone()
        )
        return None if row is None else ChunkState(row[0])

    def pin_chunks(self, pin_id: str, chunks: Sequence[ChunkRef]) -> PinResult:
        """See MetadataStore.pin_chunks. One unsynced write transaction (module docstring)."""
        sizes: dict[bytes, int] = {}
        for chunk in chunks:
            sizes.setdefault(_hash_bytes(chunk.hash), chunk.size)
        hashes = list(sizes)
        present: set[str] = set()
        to_write: set[str] = set()
        being_collected: set[str] = set()
        now = time.time()
        with self._write(synced=False) as conn:
            states = self._chunk_states(conn, hashes)
            new = [hash_ for hash_ in hashes if hash_ not in states]
            conn.executemany(
                "INSERT INTO chunks (hash, size, refcount, zero_since, state) VALUES (?, ?, 0, ?, ?)",
                [(hash_, sizes[hash_], now, ChunkState.WRITING) for hash_ in new],
            )
            pins: list[tuple[str, bytes, float]] = []
            for hash_ in hashes:
                state = states.get(hash_, ChunkState.WRITING)
                if state == ChunkState.DELETING:
                    being_collected.add(hash_.hex())
                    continue
                (present if state == ChunkState.LIVE else to_write).add(hash_.hex())
                pins.append((pin_id, hash_, now))
            conn.executemany(
                "INSERT INTO chunk_pins (pin_id, hash, created) VALUES (?, ?, ?) "
                "ON CONFLICT (pin_id, hash) DO UPDATE SET created = excluded.created",
                pins,
            )
        return PinResult(frozenset(present), frozenset(to_write), frozenset(being_collected))

    def release_pins(self, pin_id: str) -> int:
        """See MetadataStore.release_pins."""
        with self._write(synced=False) as conn:
            return conn.execute("DELETE FROM chunk_pins WHERE pin_id = ?", (pin_id,)).rowcount

    def expire_pins(self, created_before: float) -> int:
        """See MetadataStore.expire_pins."""
        with self._write() as conn:
            return conn.execute("DELETE FROM chunk_pins WHERE created < ?", (created_before,)).rowcount

    def mark_chunks_for_collection(
        self, unreferenced_before: float, pins_expired_before: float, limit: int = 1000
    ) -> list[ZeroRefcountChunk]:
        """See MetadataStore.mark_chunks_for_collection."""
        now = time.time()
        with self._write() as conn:
            conn.execute("DELETE FROM chunk_pins WHERE created < ?", (pins_expired_before,))
            rows = conn.execute(
                "SELECT hash, size, zero_since FROM chunks AS c "
                "WHERE refcount = 0 AND zero_since < ? AND state <> ? "
                "AND NOT EXISTS (SELECT 1 FROM chunk_pins AS p WHERE p.hash = c.hash) "
                "ORDER BY zero_since LIMIT ?",
                (unreferenced_before, ChunkState.DELETING, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE chunks SET state = ?, marked_at = ? WHERE hash = ?",
                [(ChunkState.DELETING, now, hash_) for hash_, _size, _zero_since in rows],
            )
        return [ZeroRefcountChunk(bytes(hash_).hex(), size, zero_since, now) for hash_, size, zero_since in rows]

    def chunks_being_collected(self, limit: int = 1000) -> list[ZeroRefcountChunk]:
        """See MetadataStore.chunks_being_collected."""
        rows = self._connection().execute(
            "SELECT hash, size, zero_since, marked_at FROM chunks WHERE state = ? ORDER BY marked_at LIMIT ?",
            (ChunkState.DELETING, limit),
        )
        return [
            ZeroRefcountChunk(bytes(hash_).hex(), size, zero_since if zero_since is not None else 0.0, marked_at)
            for hash_, size, zero_since, marked_at in rows
        ]

    def finish_collection(self, hashes: Iterable[str]) -> int:
        """See MetadataStore.finish_collection."""
        wanted = sorted({_hash_bytes(chunk_hash) for chunk_hash in hashes})
        with self._write() as conn:
            return sum(
                cursor.rowcount
                for cursor in _in_batches(conn, "DELETE FROM chunks WHERE hash IN ({}) AND state = ? AND refcount = 0",
                                          wanted, after=[ChunkState.DELETING])
            )

    def gc_counts(self) -> GcCounts:
        """See MetadataStore.gc_counts."""
        with self._read() as conn:
            zero = conn.execute("SELECT count(*) FROM chunks WHERE refcount = 0").fetchone()[0]
            deleting = conn.execute(
                "SELECT count(*) FROM chunks WHERE state = ?", (ChunkState.DELETING,)
            ).fetchone()[0]
            pins = conn.execute("SELECT count(*) FROM chunk_pins").fetchone()[0]
        return GcCounts(zero_refcount=int(zero), being_collected=int(deleting), pins=int(pins))

    def chunk_refcount(self, chunk_hash: str) -> int:
        """See MetadataStore.chunk_refcount."""
        row = (
            self._connection()
            .execute("SELECT refcount FROM chunks WHERE hash = ?", (_hash_bytes(chunk_hash),))
            .fetchone()
        )
        return 0 if row is None else int(row[0])

    def zero_refcount_chunks(
        self, unreferenced_before: float | None = None, limit: int = 1000
    ) -> list[ZeroRefcountChunk]:
        """See MetadataStore.zero_refcount_chunks."""
        if unreferenced_before is None:
            rows = self._connection().execute(
                "SELECT hash, size, zero_since FROM chunks WHERE refcount = 0 ORDER BY zero_since LIMIT ?",
                (limit,),
            )
        else:
            rows = self._connection().execute(
                "SELECT hash, size, zero_since FROM chunks WHERE refcount = 0 AND zero_since < ? "
                "ORDER BY zero_since LIMIT ?",
                (unreferenced_before, limit),
            )
        return [ZeroRefcountChunk(bytes(hash_).hex(), size, zero_since) for hash_, size, zero_since in rows]

    # Objects ---------------------------------------------------------------------------------

    def put_object(
        self, record: ObjectRecord, condition: WriteCondition | None = None, pin_id: str | None = None
    ) -> ObjectRecord | None:
        """See MetadataStore.put_object."""
        with self._write() as conn:
            self._require_bucket(conn, record.bucket)
            self._check_condition(conn, record, condition)
            return self._replace_object(conn, record, pin_id)

    def _check_condition(self, conn: sqlite3.Connection, record: ObjectRecord,
                         condition: WriteCondition | None) -> None:
        if condition is None or (condition.if_match is None and not condition.if_none_match):
            return
        current = self._fetch_object(conn, record.bucket, record.key.encode("utf-8"))
        if condition.if_none_match and current is not None:
            raise PreconditionFailed(f"{record.bucket}/{record.key!r} exists")
        if condition.if_match is not None:
            if current is None:
                raise NoSuchKey(record.key)
            if condition.if_match.strip() != "*" and \
                    _strip_quotes(current.etag) != _strip_quotes(condition.if_match.strip()):
                raise PreconditionFailed(f"{record.bucket}/{record.key!r} has ETag {current.etag}")

    def get_object(self, bucket: str, key: str) -> ObjectRecord:
        """See MetadataStore.get_object."""
        # One statement answers both "bucket exists?" and "object?" from one snapshot.
        row = (
            self._connection()
            .execute(
                f"SELECT b.name, {_OBJECT_COLUMNS_JOINED} "
                "FROM buckets b LEFT JOIN objects o ON o.bucket = b.name AND o.key = ? WHERE b.name = ?",
                (key.encode("utf-8"), bucket),
            )
            .fetchone()
        )
        if row is None:
            raise NoSuchBucket(bucket)
        if row[1] is None:
            raise NoSuchKey(key)
        return self._object_from_row(bucket, row[1:])

    def delete_object(self, bucket: str, key: str) -> bool:
        """See MetadataStore.delete_object."""
        key_bytes = key.encode("utf-8")
        with self._write() as conn:
            self._require_bucket(conn, bucket)
            previous = self._fetch_object(conn, bucket, key_bytes)
            if previous is None:
                return False
            conn.execute("DELETE FROM objects WHERE bucket = ? AND key = ?", (bucket, key_bytes))
            self._release_references(conn, previous.chunks)
            return True

    def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        delimiter: str = "",
        start_after: str = "",
        max_keys: int = 1000,
    ) -> ListResult:
        """See MetadataStore.list_objects.

        Walks the (bucket, key) index in order. Each common prefix costs one index seek: after
        returning it, the walk restarts at the prefix's successor, so the keys under it are never
        read. Statements are stepped lazily, so rows after the point a page fills are not read.
        """
        if max_keys < 0:
            raise ValueError(f"max_keys must be >= 0, got {max_keys}")
        prefix_bytes = prefix.encode("utf-8")
        delimiter_bytes = delimiter.encode("utf-8")
        after = start_after.encode("utf-8")
        upper = _successor(prefix_bytes)
        objects: list[ObjectSummary] = []
        common_prefixes: list[str] = []
        last_returned: bytes | None = None
        is_truncated = False

        with self._read() as conn:
            self._require_bucket(conn, bucket)
            if max_keys == 0:
                return ListResult([], [], False, None)
            # Valid UTF-8 never contains 0xFF, so a non-empty prefix always has a successor.
            upper_clause = "" if upper is None else " AND key < :upper"
            if prefix_bytes > after:
                lower, lower_op = prefix_bytes, ">="
            else:
                lower, lower_op = after, ">"
            while True:
                sql = (
                    "SELECT key, size, etag, last_modified FROM objects "
                    f"WHERE bucket = :bucket AND key {lower_op} :lower{upper_clause} ORDER BY key"
                )
                cursor = conn.execute(sql, {"bucket": bucket, "lower": lower, "upper": upper})
                seek_to: bytes | None = None
                try:
                    for stored_key, size, etag, last_modified in cursor:
                        key = bytes(stored_key)
                        if delimiter_bytes:
                            found = key.find(delimiter_bytes, len(prefix_bytes))
                            if found >= 0:
                                common_prefix = key[: found + len(delimiter_bytes)]
                                if common_prefix > after:
                                    if len(objects) + len(common_prefixes) == max_keys:
                                        is_truncated = True
                                        break
                                    common_prefixes.append(common_prefix.decode("utf-8"))
                                    last_returned = common_prefix
                                # Skip every other key under this common prefix with one seek.
                                seek_to = _successor(common_prefix)
                                break
                        if len(objects) + len(common_prefixes) == max_keys:
                            is_truncated = True
                            break
                        objects.append(ObjectSummary(key.decode("utf-8"), size, etag, last_modified))
                        last_returned = key
                finally:
                    cursor.close()
                if is_truncated or seek_to is None:
                    break
                lower, lower_op = seek_to, ">="

        return ListResult(
            objects=objects,
            common_prefixes=common_prefixes,
            is_truncated=is_truncated,
            next_start_after=None if last_returned is None else last_returned.decode("utf-8"),
        )

    # Multipart uploads -----------------------------------------------------------------------

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
        """See MetadataStore.create_multipart_upload."""
        upload = MultipartUpload(
            upload_id=secrets.token_urlsafe(24),
            bucket=bucket,
            key=key,
            initiated=time.time(),
            owner=owner,
            content_type=content_type,
            user_metadata=dict(user_metadata),
            system_metadata=dict(system_metadata),
            checksum_algorithm=checksum_algorithm,
        )
        with self._write() as conn:
            self._require_bucket(conn, bucket)
            conn.execute(
                f"INSERT INTO multipart_uploads ({_UPLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    upload.upload_id,
                    bucket,
                    key.encode("utf-8"),
                    upload.initiated,
                    owner,
                    content_type,
                    _json(upload.user_metadata),
                    _json(upload.system_metadata),
                    checksum_algorithm,
                ),
            )
        return upload

    def get_multipart_upload(self, upload_id: str) -> MultipartUpload:
        """See MetadataStore.get_multipart_upload."""
        return self._fetch_upload(self._connection(), upload_id)

    def put_part(self, upload_id: str, part: PartRecord, pin_id: str | None = None) -> None:
        """See MetadataStore.put_part."""
        with self._write() as conn:
            self._fetch_upload(conn, upload_id)
            row = conn.execute(
                "SELECT chunk_list FROM parts WHERE upload_id = ? AND part_number = ?",
                (upload_id, part.part_number),
            ).fetchone()
            self._add_references(conn, part.chunks, pin_id)
            conn.execute(
                f"INSERT OR REPLACE INTO parts (upload_id, {_PART_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    upload_id,
                    part.part_number,
                    part.size,
                    part.etag,
                    part.last_modified,
                    _json(part.checksums),
                    _encode_chunks(part.chunks),
                ),
            )
            if row is not None:
                self._release_references(conn, _decode_chunks(row[0]))

    def list_parts(
        self, upload_id: str, part_number_marker: int = 0, max_parts: int = 1000
    ) -> tuple[list[PartRecord], bool]:
        """See MetadataStore.list_parts."""
        with self._read() as conn:
            self._fetch_upload(conn, upload_id)
            rows = conn.execute(
                f"SELECT {_PART_COLUMNS} FROM parts WHERE upload_id = ? AND part_number > ? "
                "ORDER BY part_number LIMIT ?",
                (upload_id, part_number_marker, max_parts + 1),
            ).fetchall()
        return [self._part_from_row(row) for row in rows[:max_parts]], len(rows) > max_parts

    def list_multipart_uploads(
        self,
        bucket: str,
        prefix: str = "",
        key_marker: str = "",
        upload_id_marker: str = "",
        max_uploads: int = 1000,
    ) -> tuple[list[MultipartUpload], bool]:
        """See MetadataStore.list_multipart_uploads."""
        prefix_bytes = prefix.encode("utf-8")
        clauses = ["bucket = :bucket", "key >= :prefix"]
        params: dict[str, Any] = {"bucket": bucket, "prefix": prefix_bytes, "limit": max_uploads + 1}
        upper = _successor(prefix_bytes)
        if upper is not None:
            clauses.append("key < :upper")
            params["upper"] = upper
        with self._read() as conn:
            self._require_bucket(conn, bucket)
            if key_marker:
                params["key_marker"] = key_marker.encode("utf-8")
                marker = None
                if upload_id_marker:
                    marker = conn.execute(
                        "SELECT initiated FROM multipart_uploads "
                        "WHERE upload_id = ? AND bucket = ? AND key = ?",
                        (upload_id_marker, bucket, params["key_marker"]),
                    ).fetchone()
                if marker is None:
                    clauses.append("key > :key_marker")
                else:
                    clauses.append("(key, initiated, upload_id) > (:key_marker, :initiated, :upload_id)")
                    params["initiated"] = marker[0]
                    params["upload_id"] = upload_id_marker
            rows = conn.execute(
                f"SELECT {_UPLOAD_COLUMNS} FROM multipart_uploads WHERE {' AND '.join(clauses)} "
                "ORDER BY key, initiated, upload_id LIMIT :limit",
                params,
            ).fetchall()
        return [self._upload_from_row(row) for row in rows[:max_uploads]], len(rows) > max_uploads

    def complete_multipart_upload(
        self, upload_id: str, record: ObjectRecord, parts: list[tuple[int, str]],
        condition: WriteCondition | None = None,
    ) -> ObjectRecord | None:
        """See MetadataStore.complete_multipart_upload."""
        with self._write() as conn:
            upload = self._fetch_upload(conn, upload_id)
            if (record.bucket, record.key) != (upload.bucket, upload.key):
                raise ValueError(
                    f"upload {upload_id} is for {upload.bucket}/{upload.key!r}, "
                    f"not {record.bucket}/{record.key!r}"
                )
            for part_number, etag in parts:
                row = conn.execute(
                    "SELECT etag FROM parts WHERE upload_id = ? AND part_number = ?",
                    (upload_id, part_number),
                ).fetchone()
                if row is None or _strip_quotes(row[0]) != _strip_quotes(etag):
                    raise InvalidPart(f"part {part_number} with ETag {etag}")
            self._check_condition(conn, record, condition)
            # The object's references go in before the parts' come out: shared chunks never hit 0.
            previous = self._replace_object(conn, record)
            self._drop_upload(conn, upload_id)
            return previous

    def abort_multipart_upload(self, upload_id: str) -> None:
        """See MetadataStore.abort_multipart_upload."""
        with self._write() as conn:
            self._fetch_upload(conn, upload_id)
            self._drop_upload(conn, upload_id)
