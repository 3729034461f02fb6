"""Records, errors and pure helpers of the sync metadata (issue 4: Dropbox-style sync).

Vocabulary (the contracts of issue 4): a **sync chunk** is one FastCDC chunk of a synced file, named
by the SHA-256 of its bytes (64 lowercase hex); on the server it is stored as one or more **storage
chunks** (<= 4 MiB, erasure-coded, refcounted). A **namespace** is a user's root folder; an **entry**
is a file or folder in it with a stable integer `file_id`; a **version** is one committed content of
a file; the **journal** is the append-only per-namespace log read through **cursors**.

Every record is a frozen dataclass. Times are unix seconds (float), sizes bytes. Every error
subclasses `SyncError` (a `MetadataError`) and carries the HTTP error `code` and `status` the sync
API answers with, so the frontend maps errors in one place.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from metadata.records import MetadataError

#: Longest valid path, in UTF-8 bytes.
MAX_PATH_BYTES = 4096
#: Largest sync chunk the server accepts (the client's FastCDC maximum), bytes.
MAX_SYNC_CHUNK_SIZE = 16 << 20

EntryKind = Literal["file", "folder"]
JournalAction = Literal["commit", "delete", "move", "mkdir", "restore"]
UploadState = Literal["open", "committed", "expired"]

_HASH_PATTERN = re.compile(r"[0-9a-f]{64}")
_CURSOR_PREFIX = "c1."


# Records ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncUser:
    """A sync account: integer `user_id`, unique `name`, `created` (unix seconds). Each user owns
    exactly one namespace, created with it."""

    user_id: int
    name: str
    created: float


@dataclass(frozen=True)
class Device:
    """One bearer token of a user: `device_id`, the owner's `user_id` and `user_name`, the device
    `name` (used in conflicted-copy names), the owner's `namespace_id`, `created` and `revoked`
    (unix seconds; None while the token is valid)."""

    device_id: int
    user_id: int
    user_name: str
    name: str
    namespace_id: int
    created: float
    revoked: float | None


@dataclass(frozen=True)
class SyncChunk:
    """One occurrence of a sync chunk in a file: `hash` (SHA-256 of its bytes, 64 lowercase hex) and
    `size` in bytes (1..16 MiB). Its offset in the file is the sum of the sizes before it."""

    hash: str
    size: int


@dataclass(frozen=True)
class Entry:
    """A file or folder of a namespace.

    `file_id` is stable across moves; `path` is its current (or, if `deleted`, last) path;
    `current_version` is the version_id of its content (None for folders); `size` (bytes) and
    `chunks` describe that version (None for folders).
    """

    file_id: int
    namespace_id: int
    path: str
    kind: EntryKind
    current_version: int | None
    deleted: bool
    size: int | None
    chunks: tuple[SyncChunk, ...] | None


@dataclass(frozen=True)
class Version:
    """One committed content of a file: `version_id` (globally increasing), the file's `file_id`,
    `size` bytes, ordered `chunks`, `created` (unix seconds), the name of the `device` that made it
    (None if unknown) and the `base_version` it was edited from (None for a new file)."""

    version_id: int
    file_id: int
    size: int
    chunks: tuple[SyncChunk, ...]
    created: float
    device: str | None
    base_version: int | None


@dataclass(frozen=True)
class JournalEntry:
    """One change of a namespace, as `changes` and `tree` return it.

    `seq`: the journal sequence number (global, strictly increasing). `action`: commit, restore,
    delete, move or mkdir (`tree` uses commit for files and mkdir for folders). `path`: the
    entry's path after the change; `old_path`: its path before a move (else None). `version_id`
    and `size` (bytes): the file's version after a commit, restore or move (None for folders and
    deletes). `chunks`: that version's chunks for commit, restore and tree files, else None.
    `deleted`: True for deletes. `device`: the name of the device that made the change (None if
    unknown). `created`: when the change was made (unix seconds).
    """

    seq: int
    namespace_id: int
    file_id: int
    kind: EntryKind
    action: JournalAction
    path: str
    old_path: str | None
    version_id: int | None
    size: int | None
    chunks: tuple[SyncChunk, ...] | None
    deleted: bool
    device: str | None
    created: float


@dataclass(frozen=True)
class CommitResult:
    """What a commit (or restore) made: the `file_id` and new `version_id`, the `path` it was stored
    at, whether it was a `conflict` (stored as a conflicted copy), the path it conflicted with
    (`conflict_of`, else None) and the journal `seq` of its entry."""

    file_id: int
    version_id: int
    path: str
    conflict: bool
    conflict_of: str | None
    seq: int


@dataclass(frozen=True)
class Upload:
    """An upload session (`upload_id` "u" + 24 hex).

    `file_id`: the file it will update (the base version's file, or the live file at `path` when
    the session began), else None. `size` bytes; `chunks` the file's ordered chunk list;
    `base_version` the version it was edited from (None: new file); `device_id` the uploading
    device; `created`, `expires_at` unix seconds (activity pushes `expires_at` back); `state` open,
    committed or expired; `uploaded` the hashes this session holds (an expired session holds none);
    `result` the answer of its commit once committed.
    """

    upload_id: str
    namespace_id: int
    file_id: int | None
    path: str
    size: int
    chunks: tuple[SyncChunk, ...]
    base_version: int | None
    device_id: int | None
    created: float
    expires_at: float
    state: UploadState
    uploaded: frozenset[str]
    result: CommitResult | None


@dataclass(frozen=True)
class ChangesPage:
    """One page of a namespace's journal: `entries` in seq order, `seq` the last seq this page covers
    (the `after_seq` asked for when empty; the next page starts after it), `has_more` whether more
    entries follow."""

    entries: list[JournalEntry]
    seq: int
    has_more: bool


# Errors ----------------------------------------------------------------------------------------


class SyncError(MetadataError):
    """Base of the sync store's errors: `code` is the sync API's error code, `status` its HTTP
    status."""

    code = "InternalError"
    status = 500


class InvalidSyncPath(SyncError):
    """A path breaks the path rules (see `validate_path`)."""

    code = "InvalidSyncPath"
    status = 400


class InvalidSyncRequest(SyncError):
    """A request is malformed (sizes, hashes, a chunk not in the session, a bad name...)."""

    code = "InvalidRequest"
    status = 400


class SyncNotFound(SyncError):
    """No such user, device, entry, version or upload session (or no live entry at a path)."""

    code = "NotFound"
    status = 404


class SyncForbidden(SyncError):
    """The object belongs to another namespace."""

    code = "Forbidden"
    status = 403


class PathExists(SyncError):
    """A live entry (or a live file at a parent path) is in the way."""

    code = "PathExists"
    status = 409


class SyncPreconditionFailed(SyncError):
    """A conditional change whose condition no longer holds: the file's current version is not
    the expected one, or a folder to delete only if empty has live entries under it."""

    code = "PreconditionFailed"
    status = 412


class SyncChunksMissing(SyncError):
    """A commit names chunks that are neither uploaded in its session nor referenced by the
    namespace (or whose storage chunks are no longer LIVE). Nothing was changed.

    Attribute `missing`: their hashes (64 hex), distinct, in first-occurrence order.
    """

    code = "ChunksMissing"
    status = 409

    def __init__(self, missing: Iterable[str]) -> None:
        self.missing = list(dict.fromkeys(missing))
        shown = ", ".join(self.missing[:3]) + (" ..." if len(self.missing) > 3 else "")
        super().__init__(f"{len(self.missing)} chunk(s) missing: {shown}")


class UploadClosed(SyncError):
    """The upload session is committed or expired, so it takes no more chunks (or an expired one
    cannot be committed)."""

    code = "UploadClosed"
    status = 409


class UserExists(SyncError):
    """A sync user with this name already exists."""

    code = "UserExists"
    status = 409


# Pure helpers ----------------------------------------------------------------------------------


def validate_path(path: str) -> str:
    """Return `path` unchanged if it is a valid sync path, else raise InvalidSyncPath.

    Valid: a non-empty str, relative, '/'-separated, no leading or trailing '/', no empty, '.' or
    '..' component, no NUL, at most 4096 bytes in UTF-8 (so no lone surrogates). Paths compare
    exactly: no case folding, no Unicode normalisation.
    """
    if not isinstance(path, str) or not path:
        raise InvalidSyncPath("path must be a non-empty string")
    if "\x00" in path:
        raise InvalidSyncPath("path contains NUL")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidSyncPath("path is not valid Unicode") from error
    if len(encoded) > MAX_PATH_BYTES:
        raise InvalidSyncPath(f"path is longer than {MAX_PATH_BYTES} UTF-8 bytes")
    for component in path.split("/"):
        if component in ("", ".", ".."):
            raise InvalidSyncPath(f"path {path!r} has an empty, '.' or '..' component (or a leading/trailing '/')")
    return path


def validate_chunk_hash(chunk_hash: str) -> str:
    """Return `chunk_hash` if it is 64 lowercase hex characters, else raise InvalidSyncRequest."""
    if not isinstance(chunk_hash, str) or _HASH_PATTERN.fullmatch(chunk_hash) is None:
        raise InvalidSyncRequest(f"chunk hash must be 64 lowercase hex characters, got {chunk_hash!r}")
    return chunk_hash


def encode_cursor(namespace_id: int, seq: int) -> str:
    """The opaque cursor for position `seq` (0 = before the first entry) of a namespace's journal:
    "c1." + base64url without padding of "<namespace_id>.<seq>"."""
    if namespace_id < 1 or seq < 0:
        raise ValueError(f"bad cursor position ({namespace_id}, {seq})")
    payload = f"{namespace_id}.{seq}".encode("ascii")
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """(namespace_id, seq) of a cursor made by `encode_cursor`. Raises ValueError on anything else
    (wrong prefix, bad base64, not two canonical decimal integers, namespace_id < 1)."""
    if not isinstance(cursor, str) or not cursor.startswith(_CURSOR_PREFIX):
        raise ValueError("not a sync cursor")
    body = cursor[len(_CURSOR_PREFIX):]
    if not body or not re.fullmatch(r"[A-Za-z0-9_-]+", body):
        raise ValueError("malformed sync cursor")
    try:
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError) as error:
        raise ValueError("malformed sync cursor") from error
    match = re.fullmatch(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)", payload)
    if match is None:
        raise ValueError("malformed sync cursor")
    namespace_id, seq = int(match.group(1)), int(match.group(2))
    if namespace_id < 1:
        raise ValueError("malformed sync cursor")
    return namespace_id, seq


def conflicted_copy_name(path: str, device: str, when: float, attempt: int) -> str:
    """The path a conflicting commit of `path` by `device` at `when` (unix seconds) is stored at.

    "docs/report.pdf", "laptop", 2026-11-22 -> "docs/report (laptop's conflicted copy
    2026-11-22).pdf" (UTC date). `attempt` 1 is that name; attempt n >= 2 (the name was taken)
    adds " (n)" before the extension. The extension is the last '.'-suffix of the last component
    unless that '.' is its first character (".bashrc" has none); no extension -> suffix at the end.
    Dropbox's naming. Raises ValueError if attempt < 1.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    folder, slash, name = path.rpartition("/")
    dot = name.rfind(".")
    stem, extension = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    date = datetime.datetime.fromtimestamp(when, tz=datetime.UTC).strftime("%Y-%m-%d")
    counter = f" ({attempt})" if attempt > 1 else ""
    return f"{folder}{slash}{stem} ({device}'s conflicted copy {date}){counter}{extension}"
