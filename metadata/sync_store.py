"""The `SyncStore` interface: users, devices, files, versions, the journal and upload sessions of
the sync API (issue 4).

`SqliteSyncStore` (metadata/sqlite_sync_store.py) implements it in the S3 metadata store's SQLite
file and transactions. Every method is synchronous and thread-safe (the frontend calls them through
`asyncio.to_thread`) and runs in one transaction: all of it is visible or none.

Storage-chunk references (the rules that keep synced bytes away from garbage collection):
- An open upload session holds one reference per storage chunk of each distinct sync chunk it
  uploaded (`record_chunk_upload`, which turns the writer's pins into these references: pins expire
  after minutes, sessions live for hours).
- A version holds one reference per storage-chunk occurrence of each sync-chunk occurrence of its
  chunk list, expanded through the sync chunk -> storage chunks mapping (`storage_chunks_of`).
  Versions are never removed (deletes are soft), so their storage chunks stay LIVE.
- `commit_upload` adds the version's references and releases the session's in one transaction;
  `expire_uploads` releases an abandoned session's, and garbage collection then collects what
  nothing else references. Moves and deletes change no reference.

Chunk presence is per namespace: a chunk is "present" for a namespace only when one of its
committed versions (`sync_namespace_chunks`, filled on commit and restore) or one of its open
sessions holds it, so one user cannot learn whether another stores some content, while storage
still dedups globally.

Paths follow `sync_records.validate_path`; a file or folder may be created where its parent
folders have no entry (parents are implied), but never under a live file.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from metadata.records import ChunkRef
from metadata.sync_records import (
    ChangesPage,
    CommitResult,
    Device,
    Entry,
    JournalEntry,
    SyncChunk,
    SyncUser,
    Upload,
    Version,
)

#: Default lifetime of an upload session after its last activity, seconds.
UPLOAD_EXPIRES_IN = 86400.0


class SyncStore(abc.ABC):
    """What the sync API needs from a metadata database. See the module docstring for the rules."""

    # Users and devices -----------------------------------------------------------------------

    @abc.abstractmethod
    def create_user(self, name: str) -> SyncUser:
        """Create a sync user and its namespace. `name`: non-empty, at most 255 characters, no '/'
        or control characters (InvalidSyncRequest). Raises UserExists if the name is taken."""

    @abc.abstractmethod
    def get_user(self, name: str) -> SyncUser | None:
        """The user called `name`, or None."""

    @abc.abstractmethod
    def list_users(self) -> list[SyncUser]:
        """Every sync user, sorted by name."""

    @abc.abstractmethod
    def create_device(self, user_name: str, device_name: str) -> tuple[Device, str]:
        """Create a device (one bearer token) for `user_name`; returns it and the token text
        ("cst_" + 43 url-safe characters: 256 random bits), which is never stored: only its
        SHA-256 is. A fast unsalted hash is enough because the token is 256 random bits (no
        dictionary to try). `device_name` as user names (InvalidSyncRequest). Raises SyncNotFound
        for an unknown user."""

    @abc.abstractmethod
    def device_for_token(self, token: str) -> Device | None:
        """The device of a bearer token, or None if unknown or revoked. One indexed lookup of the
        token's SHA-256 and no write: it runs on every request."""

    @abc.abstractmethod
    def list_devices(self, user_name: str | None = None) -> list[Device]:
        """Devices (revoked ones included), by user name then device id; only `user_name`'s if
        given (SyncNotFound if that user does not exist)."""

    @abc.abstractmethod
    def revoke_device(self, device_id: int) -> bool:
        """Revoke the device's token; True if it was valid until now (False: unknown or already
        revoked)."""

    @abc.abstractmethod
    def namespace_of(self, user_name: str) -> int:
        """The namespace_id of the user's namespace. Raises SyncNotFound."""

    # Uploads ---------------------------------------------------------------------------------

    @abc.abstractmethod
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
        """Open an upload session for a new file or a new version of the file at `path`.

        `size` bytes must equal the sum of the chunk sizes; each chunk 1..16 MiB, hash 64
        lowercase hex (an empty file has no chunks). `base_version`: the version the content was
        edited from (a version of a file of this namespace), None for a new file. The session
        expires `expires_in` seconds after its last activity. Returns the session and the
        distinct chunks the namespace does not hold (not referenced by any of its committed
        versions), in first-occurrence order: the chunks the client must upload.

        Raises InvalidSyncPath, InvalidSyncRequest (sizes, hashes, unknown base version),
        SyncNotFound (no such namespace), SyncForbidden (base version of another namespace),
        PathExists (a parent path is a live file). A stale base is not an error here: the
        commit stores a conflicted copy.
        """

    @abc.abstractmethod
    def get_upload(self, upload_id: str) -> Upload:
        """The session. Raises SyncNotFound."""

    @abc.abstractmethod
    def missing_chunks(self, upload_id: str) -> list[SyncChunk]:
        """The distinct chunks the session still needs (neither uploaded in it nor held by the
        namespace's committed versions), first-occurrence order; [] once committed. Raises
        SyncNotFound."""

    @abc.abstractmethod
    def record_chunk_upload(
        self, upload_id: str, chunk_hash: str, size: int, storage_chunks: Sequence[ChunkRef], pin_id: str
    ) -> bool:
        """Record that the session's chunk `chunk_hash` (`size` bytes) is stored as `storage_chunks`
        (offsets within the sync chunk), pinned by `pin_id`, in one transaction: the sync chunk's
        mapping is recorded if absent, the session takes one reference per storage chunk (the
        pins become references and are dropped), the chunk is marked uploaded and the session's
        expiry pushed back. Returns False, changing nothing, if the chunk already was uploaded in
        this session (then releasing `pin_id` is the caller's job).

        If the sync chunk already has a mapping whose storage chunks are all LIVE, the session
        references those (the pins are dropped all the same); a mapping with a collected storage
        chunk is replaced by `storage_chunks`.

        Raises SyncNotFound, UploadClosed (committed or expired), InvalidSyncRequest (hash not in
        the session, size differs from the session's, storage chunk sizes do not add up),
        ChunksUnavailable (a storage chunk neither LIVE nor WRITING and pinned by `pin_id`:
        retryable, nothing changed).
        """

    @abc.abstractmethod
    def commit_upload(self, upload_id: str, now: float | None = None) -> CommitResult:
        """Make the session's content a version, in one transaction: the version's references are
        added, the session's released, a journal entry ("commit") appended, the namespace's chunk
        presence updated, the session marked committed with its result.

        Target: with a current `base_version` (the file's current version), a new version of that
        file at its current path; with no base and no live entry at the path, a new file there.
        Otherwise (stale base: the file has another current version or was deleted; no base but a
        live entry at the path) the content is stored as a new file at
        `conflicted_copy_name(path, device, now, attempt)` (the first free attempt) and the result
        says `conflict` with `conflict_of` = the session's path. `now` (unix seconds, default the
        clock) dates the version and the conflicted copy; a session without a known device names
        the copy after "unknown device". An open session past `expires_at` that `expire_uploads`
        has not expired yet still commits: its references are still held.

        Committing a committed session returns its stored result again (idempotent). Raises
        SyncNotFound, UploadClosed (expired), SyncChunksMissing (chunks neither uploaded in the
        session nor held by the namespace, or whose storage chunks are gone; nothing changed),
        PathExists (a parent path is a live file).
        """

    @abc.abstractmethod
    def expire_uploads(self, now: float) -> int:
        """Expire every open session whose `expires_at` is before `now` (unix seconds): release its
        storage-chunk references, forget its uploaded chunks, state -> expired. Returns how many."""

    # Chunks ----------------------------------------------------------------------------------

    @abc.abstractmethod
    def storage_chunks_of(self, chunk_hash: str) -> tuple[ChunkRef, ...] | None:
        """The storage chunks (offsets within the sync chunk) a sync chunk is stored as, or None if
        it was never recorded. Raises InvalidSyncRequest on a malformed hash."""

    @abc.abstractmethod
    def namespace_has_chunk(self, namespace_id: int, chunk_hash: str) -> bool:
        """Whether the namespace may read this sync chunk: one of its committed versions holds it,
        or one of its open sessions uploaded it."""

    # Entries and versions --------------------------------------------------------------------

    @abc.abstractmethod
    def get_entry(self, file_id: int) -> Entry:
        """The entry (live or deleted). Raises SyncNotFound."""

    @abc.abstractmethod
    def entry_by_path(self, namespace_id: int, path: str) -> Entry:
        """The live entry at `path`. Raises InvalidSyncPath, SyncNotFound."""

    @abc.abstractmethod
    def versions(self, file_id: int) -> list[Version]:
        """The file's versions, oldest first ([] for a folder). Raises SyncNotFound."""

    @abc.abstractmethod
    def get_version(self, version_id: int) -> Version:
        """The version. Raises SyncNotFound."""

    @abc.abstractmethod
    def delete_entry(self, file_id: int, device_id: int | None, *, expected_version: int | None = None,
                     only_if_empty: bool = False) -> int:
        """Soft-delete the entry; a folder deletes every live entry at or under its path (children
        before parents), one journal entry ("delete") each, one transaction. Versions and chunk
        references stay. Returns the seq of the last journal entry written; the namespace's latest
        seq if the entry was already deleted. Conditions (checked in the same transaction, so a
        client never deletes what it has not seen): `expected_version` (a file's current version
        must be this one), `only_if_empty` (a folder must have no live entry under it). Raises
        SyncNotFound, SyncPreconditionFailed."""

    @abc.abstractmethod
    def move_entry(self, file_id: int, to_path: str, device_id: int | None) -> int:
        """Move (rename) a live entry to `to_path`; a folder moves every live entry at or under its
        path atomically (parents before children), one journal entry ("move", with `old_path`)
        each. Returns the seq of the last entry written (the latest seq if `to_path` is the
        current path). Raises SyncNotFound (unknown or deleted), InvalidSyncPath,
        InvalidSyncRequest (a folder into itself), PathExists (a live entry at or under
        `to_path`, or a live file at one of its parent paths)."""

    @abc.abstractmethod
    def restore_version(self, file_id: int, version_id: int, device_id: int | None) -> CommitResult:
        """Make a new version of the file with the content of its version `version_id` (base: the
        current version) and journal it ("restore"); a deleted file is undeleted at its last path.
        Returns the new version (conflict False). Raises SyncNotFound (unknown file, or the version
        is not this file's), InvalidSyncRequest (a folder), PathExists (the path is taken by
        another live entry or under a live file)."""

    @abc.abstractmethod
    def make_folder(self, namespace_id: int, path: str, device_id: int | None) -> tuple[Entry, int]:
        """Create a folder (journal "mkdir"); idempotent: an existing live folder is returned with
        the latest seq. Returns the folder and the seq after the operation. Raises
        InvalidSyncPath, SyncNotFound (no such namespace), PathExists (a live file at the path or
        at one of its parent paths)."""

    # Journal ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def tree(self, namespace_id: int) -> tuple[list[JournalEntry], int]:
        """Every live entry of the namespace, sorted by path, shaped as journal entries (action
        "commit" with version, size and chunks for files, "mkdir" for folders; `seq` the entry's
        last change, `device` and `created` of that change), and the namespace's latest seq,
        from one read snapshot."""

    @abc.abstractmethod
    def changes(self, namespace_id: int, after_seq: int, limit: int) -> ChangesPage:
        """At most `limit` (>= 1) journal entries of the namespace with seq > `after_seq`, in seq
        order. Raises InvalidSyncRequest if limit < 1."""

    @abc.abstractmethod
    def latest_seq(self, namespace_id: int) -> int:
        """The seq of the namespace's last journal entry, 0 if none."""
