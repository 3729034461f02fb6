"""Sync chunk transfer over presigned SigV4 URLs: ``PUT``/``GET /-/chunks/{hash}`` (contracts §1).

``PUT /-/chunks/{hash}?upload=<upload_id>&X-Amz-...``: the body is one sync chunk (<= 16 MiB,
Content-Length required). After the signature (the sync presign key only), the session (open, lists
``hash``) and the declared size are checked, the body is stored through the normal write path
(``S3Services.store_body``: cut into storage chunks, pinned under a fresh pin id) while a SHA-256
observer hashes it; a body that does not hash to ``hash`` is 400 BadDigest and nothing is recorded.
Then ``SyncStore.record_chunk_upload`` gives the session references to the storage chunks in one
transaction (dropping the pins). A chunk the session already holds is drained, not stored again.

``GET /-/chunks/{hash}?namespace=<id>&X-Amz-...``: streams the chunk (its storage chunks, checksums
verified by the read path) if that namespace references it (committed version or open upload).

Errors are S3 error XML (frontend/s3/errors.py) as for any presigned S3 URL.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import re
import secrets
import time

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import Counter

from frontend import object_io
from frontend.s3 import errors, sigv4
from frontend.s3.dispatch import error_response, map_error, send_continue, split_target
from frontend.s3.handlers_object import StreamAborted, stream_content
from frontend.s3.payload import Payload
from frontend.sync.metrics import REQUESTS
from frontend.sync.services import MAX_SYNC_CHUNK_BYTES, SyncServices
from metadata.sync_records import SyncError, SyncNotFound, Upload, UploadClosed

log = logging.getLogger("frontend.sync.chunks")

CHUNK_BYTES = Counter("coffer_sync_chunk_bytes_total", "Sync chunk bytes transferred through presigned URLs",
                      ["direction"])

_HASH = re.compile(r"[0-9a-f]{64}")


class UploadNotOpen(errors.S3Error):
    """The upload session of a chunk PUT is committed or expired (409)."""

    code = "UploadClosed"
    status = 409
    message = "The upload session is committed or expired"


def _sync_error_to_s3(exc: SyncError) -> errors.S3Error:
    if isinstance(exc, SyncNotFound):
        return errors.NoSuchUpload(str(exc) or None)
    if isinstance(exc, UploadClosed):
        return UploadNotOpen()
    return errors.InvalidRequest(str(exc))


class ChunkTransfer:
    """The aiohttp handler of ``/-/chunks/{hash}`` for one frontend."""

    def __init__(self, services: SyncServices) -> None:
        self.services = services

    def _verify(self, request: web.Request) -> tuple[str, dict[str, str]]:
        """Check the presigned signature (sync presign key only); return (chunk hash, query).

        Raises:
            errors.S3Error: AccessDenied (not presigned, expired), SignatureDoesNotMatch,
                InvalidAccessKeyId (another key), InvalidArgument (not a chunk name).
        """
        raw_path, pairs = split_target(request.raw_path)
        key = self.services.presign_key

        def lookup(access_key_id: str) -> str | None:
            return key.secret_key if access_key_id == key.access_key_id else None

        auth = sigv4.verify_request(request.method, raw_path, pairs, request.headers, lookup,
                                    datetime.datetime.now(datetime.UTC), region=self.services.s3.config.region)
        if not auth.presigned:
            raise errors.AccessDenied("Chunk transfers need a presigned URL from the sync API")
        chunk_hash = request.match_info.get("hash", "")
        if not _HASH.fullmatch(chunk_hash):
            raise errors.InvalidArgument("A chunk is named by its lowercase hex SHA-256")
        return chunk_hash, dict(pairs)

    async def _open_upload(self, query: dict[str, str], chunk_hash: str) -> tuple[Upload, int]:
        """The open session named by the signed ``upload`` parameter and the size it declares for
        ``chunk_hash``."""
        upload_id = query.get("upload", "")
        try:
            upload = await self.services.s3.meta(self.services.store.get_upload, upload_id)
        except SyncError as exc:
            raise _sync_error_to_s3(exc) from exc
        if upload.state != "open":
            raise UploadNotOpen()
        sizes = {chunk.hash: chunk.size for chunk in upload.chunks}
        if chunk_hash not in sizes:
            raise errors.InvalidArgument("The chunk is not part of this upload session")
        return upload, sizes[chunk_hash]

    async def expect_continue(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: send 100 only for a valid URL of an open session, so a refused
        upload never transfers its body (the connection closes after the error)."""
        request_id = secrets.token_hex(8).upper()
        try:
            chunk_hash, query = self._verify(request)
            if request.method == "PUT":
                await self._open_upload(query, chunk_hash)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            response = self._error(request, exc, request_id)
            response.force_close()
            return response
        return await send_continue(request, request_id)

    def _error(self, request: web.Request, exc: Exception, request_id: str) -> web.Response:
        mapped = _sync_error_to_s3(exc) if isinstance(exc, SyncError) else map_error(exc)
        if mapped is None:
            log.exception("unexpected error in a chunk transfer", extra={"fields": {"request_id": request_id}})
            mapped = errors.InternalError()
        elif mapped.status >= 500:
            log.warning("chunk transfer unavailable", extra={"fields": {"request_id": request_id,
                                                                        "error": repr(exc)}})
        return error_response(request, mapped, request_id)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        """Answer one chunk transfer; never raises (errors become S3 error documents)."""
        request_id = secrets.token_hex(8).upper()
        operation = "chunk_put" if request.method == "PUT" else "chunk_get"
        try:
            if request.method == "PUT":
                response = await self._put(request)
            elif request.method in ("GET", "HEAD"):
                response = await self._get(request)
            else:
                raise errors.MethodNotAllowed(Method=request.method, ResourceType="CHUNK")
            response.headers.setdefault("x-amz-request-id", request_id)
        except asyncio.CancelledError:
            REQUESTS.labels(operation, "cancelled").inc()
            raise
        except StreamAborted as exc:
            REQUESTS.labels(operation, "aborted").inc()
            return exc.response
        except (ConnectionResetError, HttpProcessingError):
            REQUESTS.labels(operation, "disconnected").inc()
            raise
        except Exception as exc:
            response = self._error(request, exc, request_id)
        REQUESTS.labels(operation, str(response.status)).inc()
        return response

    async def _put(self, request: web.Request) -> web.StreamResponse:
        chunk_hash, query = self._verify(request)
        upload, size = await self._open_upload(query, chunk_hash)
        payload = Payload(request, sigv4.AuthContext(access_key_id="", signature="", signing_key=b"", scope="",
                                                     amz_date="", payload_hash=sigv4.UNSIGNED_PAYLOAD,
                                                     presigned=True))
        if payload.declared_length > MAX_SYNC_CHUNK_BYTES:
            raise errors.EntityTooLarge(ProposedSize=payload.declared_length, MaxSizeAllowed=MAX_SYNC_CHUNK_BYTES)
        if payload.declared_length != size:
            raise errors.InvalidArgument(f"The chunk is {size} bytes; the body declares {payload.declared_length}",
                                         ArgumentName="Content-Length", ArgumentValue=payload.declared_length)
        if chunk_hash in upload.uploaded:
            md5 = hashlib.md5(usedforsecurity=False)
            async for piece in payload.pieces():
                md5.update(piece)
            log.info("chunk already uploaded", extra={"fields": {"upload_id": upload.upload_id,
                                                                 "chunk": chunk_hash}})
            return web.Response(status=200, headers={"ETag": f'"{md5.hexdigest()}"'})
        pin_id = object_io.new_pin_id()
        sha256 = hashlib.sha256()
        started = time.perf_counter()
        try:
            written = await self.services.s3.store_body(payload.pieces(), payload.declared_length, pin_id,
                                                        [*payload.observers, sha256])
            payload.verify(bytes.fromhex(written.md5_hex))
            if sha256.hexdigest() != chunk_hash:
                raise errors.BadDigest("The body's SHA-256 does not match the chunk's name",
                                       ExpectedDigest=chunk_hash, CalculatedDigest=sha256.hexdigest())
            try:
                recorded = await object_io.run_to_completion(
                    self.services.store.record_chunk_upload, upload.upload_id, chunk_hash, written.size,
                    written.chunks, pin_id)
            except SyncError as exc:
                raise _sync_error_to_s3(exc) from exc
        except BaseException:
            await object_io.release_pins(self.services.s3.metadata, pin_id)
            raise
        if not recorded:  # a concurrent PUT of the same chunk won: its references protect the chunk
            await object_io.release_pins(self.services.s3.metadata, pin_id)
        CHUNK_BYTES.labels("up").inc(written.size)
        log.info("chunk stored", extra={"fields": {
            "upload_id": upload.upload_id, "chunk": chunk_hash, "bytes": written.size,
            "new_storage_chunks": written.new_chunk_count, "seconds": round(time.perf_counter() - started, 3)}})
        return web.Response(status=200, headers={"ETag": f'"{written.md5_hex}"'})

    async def _get(self, request: web.Request) -> web.StreamResponse:
        chunk_hash, query = self._verify(request)
        namespace_text = query.get("namespace", "")
        if not namespace_text.isdigit():
            raise errors.InvalidArgument("The URL names no namespace")
        store = self.services.store
        meta = self.services.s3.meta
        if not await meta(store.namespace_has_chunk, int(namespace_text), chunk_hash):
            raise errors.NoSuchKey(key=chunk_hash)
        refs = await meta(store.storage_chunks_of, chunk_hash)
        if refs is None:
            raise errors.NoSuchKey(key=chunk_hash)
        size = sum(ref.size for ref in refs)
        headers = {"Content-Type": "application/octet-stream", "ETag": f'"{chunk_hash}"'}
        if request.method == "HEAD":
            headers["Content-Length"] = str(size)
            return web.Response(status=200, headers=headers)
        response = await stream_content(request, self.services.s3, refs, 0, size, 200, headers,
                                        {"chunk": chunk_hash})
        CHUNK_BYTES.labels("down").inc(size)
        return response
