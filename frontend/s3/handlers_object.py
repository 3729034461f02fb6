"""Object operations: PutObject, CopyObject, GetObject, HeadObject, DeleteObject, DeleteObjects.

Write path (design brief): stream the body into chunks, store each new chunk as a stripe (quorum
12), verify every integrity check the client sent, then record the object in one metadata
transaction. Nothing is visible before that last step, so a failed or interrupted PUT leaves no
object behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections.abc import Sequence

from aiohttp import web

from frontend import object_io
from frontend.config import MAX_SINGLE_PUT_BYTES
from frontend.s3 import checksums, errors, names, xml
from frontend.s3.context import S3Call, S3Services, iso8601
from frontend.s3.object_headers import (
    DEFAULT_CONTENT_TYPE,
    RESPONSE_OVERRIDES,
    NotModified,
    check_preconditions,
    object_response_headers,
    parse_range,
    system_metadata,
    user_metadata,
    write_condition,
)
from frontend.s3.payload import Payload, read_small_body
from metadata.store import ChunkRef, ObjectRecord

log = logging.getLogger("frontend.s3")


def quote_etag(md5_hex: str) -> str:
    """The S3 ETag of single-part content: its MD5 in hex, in double quotes."""
    return f'"{md5_hex}"'


def checksum_headers(found: dict[str, str]) -> dict[str, str]:
    """``x-amz-checksum-<algorithm>`` response headers for stored checksums."""
    headers: dict[str, str] = {}
    for algorithm, value in found.items():
        header = checksums.HEADER_FOR.get(algorithm)
        if header is not None:
            headers[header] = value
    if "checksum_type" in found:
        headers["x-amz-checksum-type"] = found["checksum_type"]
    return headers


async def require_bucket(call: S3Call) -> None:
    """Raise NoSuchBucket before any body is read when the bucket does not exist."""
    if await call.services.meta(call.services.metadata.get_bucket, call.bucket) is None:
        raise errors.NoSuchBucket(bucket=call.bucket)


async def put_object(call: S3Call) -> web.StreamResponse:
    """PutObject: store the body as a new object (replacing any previous one at the key)."""
    names.validate_key(call.key)
    headers = call.request.headers
    if headers.get("x-amz-copy-source"):
        return await copy_object(call)
    meta = user_metadata(headers)
    system = system_metadata(headers)
    condition = write_condition(headers)
    await require_bucket(call)
    payload = Payload(call.request, call.auth)
    if payload.declared_length > MAX_SINGLE_PUT_BYTES:
        raise errors.EntityTooLarge(ProposedSize=payload.declared_length, MaxSizeAllowed=MAX_SINGLE_PUT_BYTES)
    # The body's chunks are pinned under pin_id until the commit (which drops the pins) or, on any
    # failure, until release_pins: garbage collection never deletes a chunk this request uses.
    pin_id = object_io.new_pin_id()
    try:
        written = await call.services.store_body(payload.pieces(), payload.declared_length, pin_id,
                                                 payload.observers)
        verified = payload.verify(bytes.fromhex(written.md5_hex))
        if verified:
            verified["checksum_type"] = "FULL_OBJECT"
        record = ObjectRecord(
            bucket=call.bucket, key=call.key, size=written.size, etag=quote_etag(written.md5_hex),
            last_modified=time.time(), content_type=headers.get("Content-Type") or DEFAULT_CONTENT_TYPE,
            user_metadata=meta, system_metadata=system, checksums=verified, chunks=written.chunks,
            part_count=None)
        await object_io.run_to_completion(call.services.metadata.put_object, record, condition, pin_id)
    except BaseException:
        await object_io.release_pins(call.services.metadata, pin_id)
        raise
    return web.Response(status=200, headers={"ETag": record.etag, **checksum_headers(verified)})


def parse_copy_source(value: str) -> tuple[str, str]:
    """Split ``x-amz-copy-source`` (``bucket/key`` or ``/bucket/key``, URL-encoded) into bucket and key.

    Raises:
        errors.InvalidArgument: the value does not name a bucket and a key, or names a version.
    """
    source, _, query = value.partition("?")
    if query:
        raise errors.InvalidArgument("Copying a specific version is not supported",
                                     ArgumentName="x-amz-copy-source", ArgumentValue=value)
    try:
        decoded = urllib.parse.unquote(source, errors="strict").lstrip("/")
    except UnicodeDecodeError as exc:
        raise errors.InvalidArgument("x-amz-copy-source is not valid percent-encoded UTF-8",
                                     ArgumentName="x-amz-copy-source", ArgumentValue=value) from exc
    bucket, _, key = decoded.partition("/")
    if not bucket or not key:
        raise errors.InvalidArgument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                                     ArgumentName="x-amz-copy-source", ArgumentValue=value)
    return bucket, key


async def copy_source(call: S3Call) -> tuple[str, str, ObjectRecord]:
    """The object named by ``x-amz-copy-source``, after its ``x-amz-copy-source-if-*`` conditions.

    Returns (source bucket, source key, record).

    Raises:
        errors.InvalidArgument: a malformed copy source.
        NoSuchBucket / NoSuchKey (metadata errors): no such source.
        errors.PreconditionFailed: a copy-source condition does not hold (S3 answers 412 for all four).
    """
    headers = call.request.headers
    source_bucket, source_key = parse_copy_source(headers["x-amz-copy-source"])
    source = await call.services.meta(call.services.metadata.get_object, source_bucket, source_key)
    conditions = {
        header: headers[f"x-amz-copy-source-{header.lower()}"]
        for header in ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")
        if f"x-amz-copy-source-{header.lower()}" in headers
    }
    try:
        check_preconditions(conditions, source.etag, source.last_modified)
    except NotModified as exc:
        raise errors.PreconditionFailed() from exc
    return source_bucket, source_key, source


async def copy_object(call: S3Call) -> web.StreamResponse:
    """CopyObject: the new object references the source's chunks; no data moves (chunks are shared).
    The commit takes no pin: it needs the chunks LIVE, so a chunk garbage collection took since the
    source was read makes it fail with ChunksUnavailable (503 SlowDown) instead of referencing it."""
    names.validate_key(call.key)
    headers = call.request.headers
    await require_bucket(call)
    source_bucket, source_key, source = await copy_source(call)
    directive = headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise errors.InvalidArgument("Unknown metadata directive.", ArgumentName="x-amz-metadata-directive")
    if directive == "COPY":
        if (source_bucket, source_key) == (call.bucket, call.key):
            raise errors.InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to itself without "
                "changing the object's metadata, storage class, website redirect location or encryption "
                "attributes.")
        content_type, meta, system = source.content_type, source.user_metadata, source.system_metadata
    else:
        content_type = headers.get("Content-Type") or DEFAULT_CONTENT_TYPE
        meta, system = user_metadata(headers), system_metadata(headers)
    record = ObjectRecord(
        bucket=call.bucket, key=call.key, size=source.size, etag=source.etag, last_modified=time.time(),
        content_type=content_type, user_metadata=meta, system_metadata=system, checksums=source.checksums,
        chunks=source.chunks, part_count=source.part_count, part_sizes=source.part_sizes)
    await call.services.meta(call.services.metadata.put_object, record)
    body = xml.copy_object_result(etag=record.etag, last_modified=iso8601(record.last_modified))
    return web.Response(status=200, body=body, content_type="application/xml")


async def _object_for_read(call: S3Call) -> ObjectRecord:
    names.validate_key(call.key)
    return await call.services.meta(call.services.metadata.get_object, call.bucket, call.key)


def _read_headers(call: S3Call, record: ObjectRecord) -> dict[str, str]:
    headers = object_response_headers(
        etag=record.etag, last_modified=record.last_modified, content_type=record.content_type,
        user_meta=record.user_metadata, system_meta=record.system_metadata)
    query = call.query
    for parameter, header in RESPONSE_OVERRIDES.items():
        value = query.get(parameter)
        if value is not None:
            headers[header] = value
    return headers


class StreamAborted(Exception):
    """A response body could not be completed after its status line was sent; the connection has
    been aborted, so the client sees a short body (and retries) rather than wrong bytes. The
    dispatcher must not write anything more on it: it hands ``response`` (already sent) back."""

    def __init__(self, response: web.StreamResponse, reason: str) -> None:
        super().__init__(reason)
        self.response = response


async def stream_content(request: web.Request, services: S3Services, chunks: Sequence[ChunkRef], start: int,
                         end: int, status: int, headers: dict[str, str], log_fields: dict[str, object]
                         ) -> web.StreamResponse:
    """Send bytes ``start..end`` of the content made of ``chunks`` as the body of a ``status``
    response, stripes read ahead by ``object_io.read_stream_pieces`` (within ``services.read_budget``)
    and their payload views written as they are (no per-chunk join).

    The first piece is read before the status line, so an unreadable first stripe is a clean error
    (the caller's exception, e.g. 503). A failure after that aborts the connection and raises
    StreamAborted: the client sees a short body, never wrong bytes. ``log_fields`` name the content
    in that warning."""
    # Closing the stream cancels its read-ahead and frees its read budget.
    stream = object_io.read_stream_pieces(services.chunk_store, chunks, start, end, budget=services.read_budget)
    async with contextlib.aclosing(stream):
        first: bytes | memoryview = await anext(stream) if end > start else b""
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = end - start
        await response.prepare(request)
        try:
            if first:
                await response.write(first)
            async for piece in stream:
                await response.write(piece)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.warning("aborting a GET mid-body: a stripe could not be read",
                        extra={"fields": {**log_fields, "error": repr(exc)}})
            if request.transport is not None:
                request.transport.abort()
            raise StreamAborted(response, repr(exc)) from exc
    return response


def _selection(call: S3Call, record: ObjectRecord, headers: dict[str, str]) -> tuple[int, int, int]:
    """Which bytes a GET/HEAD returns: ``(start, end, status)``, adding Content-Range and part headers.

    Handles ``Range`` and ``?partNumber=N`` (the Nth part of a multipart object; a single-part object
    is one part), which S3 does not allow together.

    Raises:
        errors.InvalidRange / errors.InvalidPartNumber (416), errors.InvalidRequest,
        errors.InvalidArgument (bad part number or a version id: buckets are unversioned).
    """
    query = call.query
    version = query.get("versionId")
    if version is not None and version != "null":
        raise errors.InvalidArgument("Invalid version id specified", ArgumentName="versionId",
                                     ArgumentValue=version)
    range_header = call.request.headers.get("Range")
    raw_part = query.get("partNumber")
    if raw_part is not None:
        if range_header:
            raise errors.InvalidRequest("Cannot specify both Range header and partNumber query parameter")
        if not raw_part.isdigit() or not 1 <= int(raw_part) <= 10_000:
            raise errors.InvalidArgument("Part number must be an integer between 1 and 10000, inclusive",
                                         ArgumentName="partNumber", ArgumentValue=raw_part)
        sizes = record.part_sizes if record.part_count else (record.size,)
        number = int(raw_part)
        if number > len(sizes):
            raise errors.InvalidPartNumber()
        start = sum(sizes[:number - 1])
        end = start + sizes[number - 1]
        headers["x-amz-mp-parts-count"] = str(len(sizes))
        if not record.part_count:
            return start, end, 200
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{record.size}" if end > start else \
            f"bytes */{record.size}"
        return start, end, 206
    byte_range = parse_range(range_header, record.size)
    if byte_range is None:
        if call.request.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
            headers.update(checksum_headers(record.checksums))
        return 0, record.size, 200
    headers["Content-Range"] = byte_range.content_range()
    return byte_range.start, byte_range.end, 206


async def get_object(call: S3Call) -> web.StreamResponse:
    """GetObject, with Range, partNumber and conditional requests; bytes stream as stripes are read.

    The first chunk is read before the status line goes out, so an unreadable object is a clean
    503. If a later stripe cannot be read, the connection is aborted short of Content-Length
    (:class:`StreamAborted`): the client sees a truncated body and retries; it never gets wrong bytes.
    """
    record = await _object_for_read(call)
    headers = _read_headers(call, record)
    try:
        check_preconditions(call.request.headers, record.etag, record.last_modified)
    except NotModified:
        return web.Response(status=304, headers={"ETag": record.etag,
                                                 "Last-Modified": headers["Last-Modified"]})
    start, end, status = _selection(call, record, headers)
    headers["x-amz-request-id"] = call.request_id
    return await stream_content(call.request, call.services, record.chunks, start, end, status, headers,
                                {"bucket": call.bucket, "key": call.key, "request_id": call.request_id})


async def head_object(call: S3Call) -> web.StreamResponse:
    """HeadObject: the GetObject headers (Range and partNumber included), no body."""
    record = await _object_for_read(call)
    headers = _read_headers(call, record)
    try:
        check_preconditions(call.request.headers, record.etag, record.last_modified)
    except NotModified:
        return web.Response(status=304, headers={"ETag": record.etag})
    start, end, status = _selection(call, record, headers)
    headers["Content-Length"] = str(end - start)
    return web.Response(status=status, headers=headers)


async def delete_object(call: S3Call) -> web.StreamResponse:
    """DeleteObject: 204 whether or not the key existed (S3 semantics); NoSuchBucket otherwise."""
    names.validate_key(call.key)
    await call.services.meta(call.services.metadata.delete_object, call.bucket, call.key)
    return web.Response(status=204)


MAX_DELETE_KEYS = 1000


async def delete_objects(call: S3Call) -> web.StreamResponse:
    """DeleteObjects (POST ?delete): up to 1,000 keys; per-key results in a DeleteResult document."""
    await require_bucket(call)
    body = await read_small_body(call.request, call.auth, limit=xml.MAX_DOCUMENT_BYTES)
    keys, quiet = xml.parse_delete(body)
    if len(keys) > MAX_DELETE_KEYS:
        raise errors.MalformedXML()
    deleted: list[str] = []
    failed: list[tuple[str, str, str]] = []
    for key in keys:
        try:
            names.validate_key(key)
            await call.services.meta(call.services.metadata.delete_object, call.bucket, key)
            deleted.append(key)
        except errors.S3Error as exc:
            failed.append((key, exc.code, exc.message))
    return web.Response(status=200, body=xml.delete_result(deleted=[] if quiet else deleted, errors=failed),
                        content_type="application/xml")


__all__ = ["copy_object", "delete_object", "delete_objects", "get_object", "head_object",
           "put_object"]
