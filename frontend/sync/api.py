"""The sync metadata API: JSON over HTTP under ``/-/sync`` on the S3 port (contracts §1).

Every call carries ``Authorization: Bearer <token>`` (frontend/sync/auth.py) and acts on the
device's own namespace: another namespace's file, upload or cursor is 403 Forbidden. Metadata calls
run in threads (``S3Services.meta``); chunk bytes never pass through here: uploads and downloads
use presigned URLs of ``/-/chunks/{hash}`` (frontend/sync/chunks.py), built on the scheme and host
the client used for this call, so they work through whatever address reached the frontend.
Commits, restores, deletes, moves and new folders wake the namespace's long polls
(frontend/sync/notifier.py).

Endpoints (all JSON; errors ``{"error": code, "message": text}``):
    GET    /-/sync/account
    POST   /-/sync/files                          begin an upload session (201)
    GET    /-/sync/files?path=P[&version=V]       an entry by path
    GET    /-/sync/files/{file_id}[?version=V]    an entry, its versions, GET URLs of its chunks
    DELETE /-/sync/files/{file_id}
    POST   /-/sync/files/{upload_id}:commit
    POST   /-/sync/files/{file_id}:move           {"to": path}
    POST   /-/sync/files/{file_id}:restore        {"version_id": V}
    GET    /-/sync/files/{upload_id}/chunks       resume: missing chunks with fresh PUT URLs
    POST   /-/sync/files/{upload_id}/chunks/{hash}  mark a chunk uploaded (idempotent)
    POST   /-/sync/folders                        {"path": P} (201 new, 200 existing)
    GET    /-/sync/tree
    GET    /-/sync/changes?since=C&limit=N&wait=S
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from aiohttp import web

from frontend.sync.auth import ApiError, authenticate, invalid_request, require_namespace
from frontend.sync.metrics import COMMITS, REQUESTS
from frontend.sync.presign import presign_url
from frontend.sync.services import MAX_SYNC_CHUNK_BYTES, SyncServices
from metadata.sync_records import (
    CommitResult,
    Device,
    Entry,
    JournalEntry,
    SyncChunk,
    SyncChunksMissing,
    SyncError,
    SyncNotFound,
    Upload,
    Version,
    decode_cursor,
    encode_cursor,
    validate_chunk_hash,
    validate_path,
)

log = logging.getLogger("frontend.sync")

P = ParamSpec("P")
T = TypeVar("T")
Fallback = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Largest JSON request body (bytes). A 50 GB file of 4 MiB chunks lists ~12,000 chunks (~1 MB).
MAX_JSON_BYTES = 16 * 1024 * 1024
#: Bodies, answers and URL lists larger than this are (de)serialized or signed in a thread.
_THREAD_THRESHOLD_BYTES = 64 * 1024
_THREAD_THRESHOLD_ITEMS = 256
MAX_CHANGES_LIMIT = 1000


def is_virtual_hosted(request: web.Request, suffixes: Iterable[str]) -> bool:
    """True when the Host names a bucket (``bucket.<suffix>``): then ``/-/...`` is an S3 object key."""
    host = request.host.rsplit(":", 1)[0].lower()
    return any(host.endswith("." + suffix) for suffix in suffixes)


@dataclass
class SyncCall:
    """One authenticated sync API request."""

    request: web.Request
    device: Device
    services: SyncServices

    @property
    def namespace_id(self) -> int:
        """The caller's namespace."""
        return self.device.namespace_id

    @property
    def base_url(self) -> str:
        """``scheme://host[:port]`` as the client addressed this frontend (presigned URLs use it)."""
        return f"{self.request.scheme}://{self.request.host}"

    async def meta(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking sync-store call in a thread."""
        return await asyncio.to_thread(function, *args, **kwargs)


# ----------------------------------------------------------------------------- request parsing


async def read_json(request: web.Request, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The request body as a JSON object (at most ``limit`` bytes; large bodies parse in a thread).

    Raises:
        ApiError: 400 InvalidRequest for a missing, oversized, malformed or non-object body.
    """
    if request.content_length is not None and request.content_length > limit:
        raise invalid_request(f"The request body is larger than {limit} bytes")
    body = bytearray()
    while True:
        piece = await request.content.readany()
        if not piece:
            break
        body += piece
        if len(body) > limit:
            raise invalid_request(f"The request body is larger than {limit} bytes")
    if not body:
        raise invalid_request("A JSON request body is required")
    try:
        value = (await asyncio.to_thread(json.loads, bytes(body)) if len(body) > _THREAD_THRESHOLD_BYTES
                 else json.loads(bytes(body)))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise invalid_request(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise invalid_request("The request body must be a JSON object")
    return value


def _integer(value: object, name: str, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum`` (JSON booleans are not integers). Raises ApiError 400."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise invalid_request(f"{name} must be an integer >= {minimum}")
    return value


def _optional_integer(value: object, name: str, minimum: int = 0) -> int | None:
    return None if value is None else _integer(value, name, minimum)


def _query_integer(request: web.Request, name: str, minimum: int = 0) -> int | None:
    text = request.query.get(name)
    if text is None:
        return None
    if not text.isdigit():
        raise invalid_request(f"{name} must be an integer >= {minimum}")
    return _integer(int(text), name, minimum)


def _path(value: object, name: str = "path") -> str:
    """A valid sync path (InvalidSyncPath 400 otherwise)."""
    if not isinstance(value, str):
        raise invalid_request(f"{name} must be a string")
    return validate_path(value)


def parse_chunks(value: object, size: int) -> tuple[SyncChunk, ...]:
    """The ``chunks`` list of a ``POST /files`` body: ``[{"hash": 64 hex, "size": 1..16 MiB}]``
    whose sizes add up to ``size``. Raises ApiError 400 / InvalidSyncRequest."""
    if not isinstance(value, list):
        raise invalid_request("chunks must be a list of {hash, size}")
    chunks = []
    for item in value:
        if not isinstance(item, dict):
            raise invalid_request("each chunk must be an object {hash, size}")
        chunk_hash = validate_chunk_hash(item.get("hash"))  # type: ignore[arg-type]
        chunk_size = _integer(item.get("size"), "chunk size", 1)
        if chunk_size > MAX_SYNC_CHUNK_BYTES:
            raise invalid_request(f"a chunk is at most {MAX_SYNC_CHUNK_BYTES} bytes")
        chunks.append(SyncChunk(chunk_hash, chunk_size))
    if sum(chunk.size for chunk in chunks) != size:
        raise invalid_request("the chunk sizes do not add up to size")
    return tuple(chunks)


def _cursor_position(call: SyncCall, cursor: str | None) -> int:
    """The journal seq of the caller's cursor (0 without one). Raises ApiError 400 / 403."""
    if cursor is None or cursor == "":
        return 0
    try:
        namespace_id, seq = decode_cursor(cursor)
    except ValueError as exc:
        raise invalid_request("since is not a valid cursor") from exc
    require_namespace(call.device, namespace_id, "The cursor")
    return seq


# ----------------------------------------------------------------------------- answers


def chunk_json(chunk: SyncChunk) -> dict[str, Any]:
    """``{"hash", "size"}``."""
    return {"hash": chunk.hash, "size": chunk.size}


def entry_json(entry: JournalEntry) -> dict[str, Any]:
    """A journal entry (changes) or live entry (tree) as the API's entry object."""
    return {"file_id": entry.file_id, "kind": entry.kind, "action": entry.action, "path": entry.path,
            "old_path": entry.old_path, "version_id": entry.version_id, "size": entry.size,
            "chunks": None if entry.chunks is None else [chunk_json(chunk) for chunk in entry.chunks],
            "deleted": entry.deleted, "device": entry.device, "created": entry.created}


def version_json(version: Version) -> dict[str, Any]:
    """A version in a file's history (no chunk list)."""
    return {"version_id": version.version_id, "size": version.size, "created": version.created,
            "device": version.device, "base_version": version.base_version}


async def json_response(data: Any, status: int = 200, large: bool = False) -> web.Response:
    """A JSON answer; ``large`` ones are serialized in a thread."""
    text = await asyncio.to_thread(json.dumps, data) if large else json.dumps(data)
    return web.Response(text=text, status=status, content_type="application/json")


def error_json(status: int, code: str, message: str, **extra: Any) -> web.Response:
    """``{"error": code, "message": message, **extra}`` with ``status``."""
    return web.json_response({"error": code, "message": message, **extra}, status=status)


def _chunk_urls(call: SyncCall, method: str, chunks: Sequence[SyncChunk], query: dict[str, str]
                ) -> list[dict[str, Any]]:
    """``[{"hash", "size", "url"}]``: a presigned ``method`` URL of ``/-/chunks/<hash>`` per chunk."""
    key = call.services.presign_key
    settings = call.services.settings
    region = call.services.s3.config.region
    base = call.base_url
    return [{"hash": chunk.hash, "size": chunk.size,
             "url": presign_url(method, base, f"/-/chunks/{chunk.hash}", query, key.access_key_id,
                                key.secret_key, region, settings.url_expires_seconds)}
            for chunk in chunks]


async def put_urls(call: SyncCall, upload_id: str, chunks: Sequence[SyncChunk]) -> list[dict[str, Any]]:
    """Presigned PUT URLs for ``chunks`` of upload session ``upload_id`` (signed in a thread when many)."""
    if len(chunks) > _THREAD_THRESHOLD_ITEMS:
        return await asyncio.to_thread(_chunk_urls, call, "PUT", chunks, {"upload": upload_id})
    return _chunk_urls(call, "PUT", chunks, {"upload": upload_id})


async def get_urls(call: SyncCall, chunks: Sequence[SyncChunk]) -> list[dict[str, Any]]:
    """Presigned GET URLs for ``chunks`` as seen by the caller's namespace."""
    query = {"namespace": str(call.namespace_id)}
    if len(chunks) > _THREAD_THRESHOLD_ITEMS:
        return await asyncio.to_thread(_chunk_urls, call, "GET", chunks, query)
    return _chunk_urls(call, "GET", chunks, query)


# ----------------------------------------------------------------------------- ownership checks


async def own_upload(call: SyncCall, upload_id: str) -> Upload:
    """The caller's upload session ``upload_id`` (404 unknown, 403 another namespace's)."""
    upload = await call.meta(call.services.store.get_upload, upload_id)
    require_namespace(call.device, upload.namespace_id, "The upload")
    return upload


async def own_entry(call: SyncCall, file_id_text: str) -> Entry:
    """The caller's entry ``file_id`` (400 not a number, 404 unknown, 403 another namespace's)."""
    if not file_id_text.isdigit():
        raise invalid_request("A file id is a positive integer")
    entry = await call.meta(call.services.store.get_entry, int(file_id_text))
    require_namespace(call.device, entry.namespace_id, "The file")
    return entry


def _notify(call: SyncCall) -> None:
    call.services.notifier.notify(call.namespace_id)


# ----------------------------------------------------------------------------- handlers


async def account(call: SyncCall) -> web.StreamResponse:
    """GET /-/sync/account: who the token is."""
    device = call.device
    return await json_response({"user": device.user_name, "device": device.name, "device_id": device.device_id,
                                "namespace_id": device.namespace_id})


async def begin_upload(call: SyncCall) -> web.StreamResponse:
    """POST /-/sync/files: open an upload session; answer the chunks this namespace lacks, with
    presigned PUT URLs (201)."""
    body = await read_json(call.request)
    namespace_id = _optional_integer(body.get("namespace_id"), "namespace_id", 1)
    if namespace_id is not None:
        require_namespace(call.device, namespace_id, "The namespace")
    path = _path(body.get("path"))
    size = _integer(body.get("size"), "size")
    chunks = parse_chunks(body.get("chunks"), size)
    base_version = _optional_integer(body.get("base_version"), "base_version", 1)
    settings = call.services.settings
    upload, missing = await call.meta(call.services.store.begin_upload, call.namespace_id, path, size, chunks,
                                      base_version, call.device.device_id, settings.upload_expires_seconds)
    log.info("upload session opened", extra={"fields": {
        "upload_id": upload.upload_id, "namespace_id": call.namespace_id, "bytes": size,
        "chunks": len(chunks), "missing": len(missing), "device_id": call.device.device_id}})
    return await json_response({"upload_id": upload.upload_id, "file_id": upload.file_id,
                                "missing": await put_urls(call, upload.upload_id, missing),
                                "expires_at": upload.expires_at,
                                "url_expires_in": settings.url_expires_seconds},
                               status=201, large=len(missing) > _THREAD_THRESHOLD_ITEMS)


async def upload_chunks(call: SyncCall) -> web.StreamResponse:
    """GET /-/sync/files/{upload_id}/chunks: the session's state, its missing chunks with fresh
    PUT URLs, and the hashes it holds."""
    upload = await own_upload(call, call.request.match_info["target"])
    missing: list[SyncChunk] = []
    if upload.state == "open":
        missing = await call.meta(call.services.store.missing_chunks, upload.upload_id)
    return await json_response({"upload_id": upload.upload_id, "state": upload.state,
                                "missing": await put_urls(call, upload.upload_id, missing),
                                "uploaded": sorted(upload.uploaded),
                                "url_expires_in": call.services.settings.url_expires_seconds},
                               large=len(missing) > _THREAD_THRESHOLD_ITEMS)


async def mark_chunk(call: SyncCall) -> web.StreamResponse:
    """POST /-/sync/files/{upload_id}/chunks/{hash}: 200 when the server holds the chunk for this
    session (uploaded, or already referenced by the namespace), else 409 ChunksMissing."""
    chunk_hash = validate_chunk_hash(call.request.match_info["hash"])
    upload = await own_upload(call, call.request.match_info["target"])
    if chunk_hash not in {chunk.hash for chunk in upload.chunks}:
        raise invalid_request("The chunk is not part of this upload")
    if upload.state == "expired":
        raise ApiError(409, "UploadClosed", "The upload session has expired")
    missing = ([] if upload.state == "committed"
               else await call.meta(call.services.store.missing_chunks, upload.upload_id))
    if chunk_hash in {chunk.hash for chunk in missing}:
        raise SyncChunksMissing([chunk_hash])
    return await json_response({"hash": chunk_hash, "uploaded": True, "missing": len(missing)})


async def commit(call: SyncCall, upload_id: str) -> web.StreamResponse:
    """POST /-/sync/files/{upload_id}:commit: make the session's file version (a conflicted copy if
    its base is stale); idempotent."""
    upload = await own_upload(call, upload_id)
    already = upload.state == "committed"
    result: CommitResult = await call.meta(call.services.store.commit_upload, upload.upload_id)
    if not already:
        _notify(call)
        COMMITS.labels("true" if result.conflict else "false").inc()
        log.info("upload committed", extra={"fields": {
            "upload_id": upload.upload_id, "file_id": result.file_id, "version_id": result.version_id,
            "conflict": result.conflict, "seq": result.seq}})
    return await json_response({"file_id": result.file_id, "version_id": result.version_id, "path": result.path,
                                "conflict": result.conflict, "conflict_of": result.conflict_of,
                                "cursor": encode_cursor(call.namespace_id, result.seq)})


async def _describe(call: SyncCall, entry: Entry) -> web.StreamResponse:
    """The answer of GET /-/sync/files/...: the entry, its versions and the chosen version's chunks."""
    store = call.services.store
    versions = await call.meta(store.versions, entry.file_id) if entry.kind == "file" else []
    wanted = _query_integer(call.request, "version", 1)
    chunks: Sequence[SyncChunk] = entry.chunks or ()
    version_id = entry.current_version
    size = entry.size
    if wanted is not None and wanted != entry.current_version:
        chosen = next((version for version in versions if version.version_id == wanted), None)
        if chosen is None:
            raise SyncNotFound(f"file {entry.file_id} has no version {wanted}")
        chunks, version_id, size = chosen.chunks, chosen.version_id, chosen.size
    return await json_response({
        "file_id": entry.file_id, "path": entry.path, "kind": entry.kind, "deleted": entry.deleted,
        "current_version": entry.current_version, "size": size,
        "versions": [version_json(version) for version in versions],
        "version_id": version_id, "chunks": await get_urls(call, chunks)},
        large=len(chunks) + len(versions) > _THREAD_THRESHOLD_ITEMS)


async def get_file(call: SyncCall, file_id_text: str) -> web.StreamResponse:
    """GET /-/sync/files/{file_id}[?version=V]."""
    return await _describe(call, await own_entry(call, file_id_text))


async def file_by_path(call: SyncCall) -> web.StreamResponse:
    """GET /-/sync/files?path=P[&version=V]: the live entry at P."""
    path = call.request.query.get("path")
    if path is None:
        raise invalid_request("path is required")
    entry = await call.meta(call.services.store.entry_by_path, call.namespace_id, _path(path))
    return await _describe(call, entry)


async def delete_file(call: SyncCall, file_id_text: str) -> web.StreamResponse:
    """DELETE /-/sync/files/{file_id}[?version=V][&if_empty=true]: soft delete (a folder with
    everything under it). ``version``: only if the file's current version is V; ``if_empty``: a
    folder only if nothing live is under it; else 412 PreconditionFailed and nothing changes."""
    entry = await own_entry(call, file_id_text)
    version_text = call.request.query.get("version")
    try:
        expected_version = int(version_text) if version_text is not None else None
    except ValueError:
        raise invalid_request("version must be an integer") from None
    only_if_empty = call.request.query.get("if_empty", "").lower() in ("1", "true", "yes")
    seq = await call.meta(call.services.store.delete_entry, entry.file_id, call.device.device_id,
                          expected_version=expected_version, only_if_empty=only_if_empty)
    _notify(call)
    return await json_response({"cursor": encode_cursor(call.namespace_id, seq)})


async def move_file(call: SyncCall, file_id: str) -> web.StreamResponse:
    """POST /-/sync/files/{file_id}:move {"to": path}: rename (a folder with everything under it)."""
    body = await read_json(call.request)
    to_path = _path(body.get("to"), "to")
    entry = await own_entry(call, file_id)
    seq = await call.meta(call.services.store.move_entry, entry.file_id, to_path, call.device.device_id)
    _notify(call)
    return await json_response({"cursor": encode_cursor(call.namespace_id, seq)})


async def restore_file(call: SyncCall, file_id: str) -> web.StreamResponse:
    """POST /-/sync/files/{file_id}:restore {"version_id": V}: a new version with V's content."""
    body = await read_json(call.request)
    version_id = _integer(body.get("version_id"), "version_id", 1)
    entry = await own_entry(call, file_id)
    result = await call.meta(call.services.store.restore_version, entry.file_id, version_id,
                             call.device.device_id)
    _notify(call)
    return await json_response({"version_id": result.version_id, "path": result.path,
                                "cursor": encode_cursor(call.namespace_id, result.seq)})


async def make_folder(call: SyncCall) -> web.StreamResponse:
    """POST /-/sync/folders {"path"}: 201 a new folder, 200 an existing live folder's id."""
    body = await read_json(call.request)
    path = _path(body.get("path"))
    store = call.services.store
    try:
        existing: Entry | None = await call.meta(store.entry_by_path, call.namespace_id, path)
    except SyncNotFound:
        existing = None
    entry, seq = await call.meta(store.make_folder, call.namespace_id, path, call.device.device_id)
    created = existing is None or existing.file_id != entry.file_id
    if created:
        _notify(call)
    return await json_response({"file_id": entry.file_id, "cursor": encode_cursor(call.namespace_id, seq)},
                               status=201 if created else 200)


async def tree(call: SyncCall) -> web.StreamResponse:
    """GET /-/sync/tree: every live entry and the cursor they are consistent with."""
    entries, seq = await call.meta(call.services.store.tree, call.namespace_id)
    data = {"entries": [entry_json(entry) for entry in entries], "cursor": encode_cursor(call.namespace_id, seq)}
    return await json_response(data, large=len(entries) > _THREAD_THRESHOLD_ITEMS)


async def changes(call: SyncCall) -> web.StreamResponse:
    """GET /-/sync/changes?since=C&limit=N&wait=S: journal entries after C; with ``wait``, a long
    poll that answers as soon as one arrives (or ``[]`` and the same cursor after S seconds)."""
    request = call.request
    after = _cursor_position(call, request.query.get("since"))
    limit = _query_integer(request, "limit", 1) or MAX_CHANGES_LIMIT
    limit = min(limit, MAX_CHANGES_LIMIT)
    try:
        wait = float(request.query.get("wait", "0"))
    except ValueError as exc:
        raise invalid_request("wait must be a number of seconds") from exc
    if not 0 <= wait < float("inf"):
        raise invalid_request("wait must be a number of seconds >= 0")
    wait = min(wait, call.services.settings.longpoll_max_seconds)
    store = call.services.store
    page = await call.meta(store.changes, call.namespace_id, after, limit)
    if not page.entries and wait > 0:
        async def latest() -> int:
            return await call.meta(store.latest_seq, call.namespace_id)

        newest = await call.services.notifier.wait(call.namespace_id, after, wait, latest)
        if newest > after:
            page = await call.meta(store.changes, call.namespace_id, after, limit)
    data = {"entries": [entry_json(entry) for entry in page.entries],
            "cursor": encode_cursor(call.namespace_id, page.seq), "has_more": page.has_more}
    return await json_response(data, large=len(page.entries) > _THREAD_THRESHOLD_ITEMS)


# ----------------------------------------------------------------------------- routing


async def post_file_action(call: SyncCall) -> web.StreamResponse:
    """POST /-/sync/files/{target}: ``{upload_id}:commit``, ``{file_id}:move``, ``{file_id}:restore``."""
    target, _, action = call.request.match_info["target"].rpartition(":")
    if action == "commit":
        return await commit(call, target)
    if action == "move":
        return await move_file(call, target)
    if action == "restore":
        return await restore_file(call, target)
    raise ApiError(404, "NotFound", "Unknown file action (commit, move, restore)")


SyncHandler = Callable[[SyncCall], Awaitable[web.StreamResponse]]


def _sync_error_response(exc: SyncError) -> web.Response:
    extra: dict[str, Any] = {}
    if isinstance(exc, SyncChunksMissing):
        extra["missing"] = exc.missing
    return error_json(exc.status, exc.code, str(exc) or exc.code, **extra)


def add_sync_routes(app: web.Application, services: SyncServices, s3_fallback: Fallback | None = None) -> None:
    """Add the ``/-/sync/...`` routes to ``app`` (before its S3 catch-all).

    ``s3_fallback`` (the S3 dispatcher) answers virtual-hosted requests (``bucket.<suffix>/-/sync/x``
    is an object key), which must stay S3. Any other unknown ``/-/sync`` path is a JSON 404.
    """
    suffixes = services.s3.config.virtual_host_suffixes

    def endpoint(operation: str, handler: SyncHandler) -> Fallback:
        async def serve(request: web.Request) -> web.StreamResponse:
            if s3_fallback is not None and is_virtual_hosted(request, suffixes):
                return await s3_fallback(request)
            started = time.perf_counter()
            try:
                device = await authenticate(request, services)
                response = await handler(SyncCall(request=request, device=device, services=services))
            except asyncio.CancelledError:
                REQUESTS.labels(operation, "cancelled").inc()
                raise
            except ApiError as exc:
                response = error_json(exc.status, exc.code, exc.message, **exc.extra)
            except SyncError as exc:
                response = _sync_error_response(exc)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    log.exception("sync metadata error", extra={"fields": {"operation": operation}})
                    response = error_json(500, "InternalError", "Internal error")
                else:  # the store is overloaded: retry later
                    response = error_json(503, "ServiceUnavailable", "The metadata store is busy; retry")
                    response.headers["Retry-After"] = "1"
            except Exception:
                log.exception("unexpected error in the sync API", extra={"fields": {"operation": operation}})
                response = error_json(500, "InternalError", "Internal error")
            REQUESTS.labels(operation, str(response.status)).inc()
            if response.status >= 500:
                log.warning("sync request failed", extra={"fields": {
                    "operation": operation, "status": response.status,
                    "seconds": round(time.perf_counter() - started, 3)}})
            return response
        return serve

    async def unrouted(request: web.Request) -> web.StreamResponse:
        if s3_fallback is not None and is_virtual_hosted(request, suffixes):
            return await s3_fallback(request)
        # Unknown paths are answered without authentication: there is nothing to protect.
        return error_json(404, "NotFound", f"No sync endpoint {request.method} {request.path}")

    async def file_or_describe(call: SyncCall) -> web.StreamResponse:
        return await get_file(call, call.request.match_info["target"])

    async def delete(call: SyncCall) -> web.StreamResponse:
        return await delete_file(call, call.request.match_info["target"])

    router = app.router
    router.add_get("/-/sync/account", endpoint("account", account))
    router.add_post("/-/sync/files", endpoint("begin_upload", begin_upload))
    router.add_get("/-/sync/files", endpoint("file_by_path", file_by_path))
    router.add_get("/-/sync/files/{target}/chunks", endpoint("upload_chunks", upload_chunks))
    router.add_post("/-/sync/files/{target}/chunks/{hash}", endpoint("mark_chunk", mark_chunk))
    router.add_post("/-/sync/files/{target}", endpoint("file_action", post_file_action))
    router.add_get("/-/sync/files/{target}", endpoint("get_file", file_or_describe))
    router.add_delete("/-/sync/files/{target}", endpoint("delete_file", delete))
    router.add_post("/-/sync/folders", endpoint("make_folder", make_folder))
    router.add_get("/-/sync/tree", endpoint("tree", tree))
    router.add_get("/-/sync/changes", endpoint("changes", changes))
    router.add_route("*", "/-/sync/{tail:.*}", unrouted)
    router.add_route("*", "/-/sync", unrouted)


__all__ = ["SyncCall", "add_sync_routes", "entry_json", "is_virtual_hosted", "read_json"]
