"""Multipart upload: CreateMultipartUpload, UploadPart, CompleteMultipartUpload,
AbortMultipartUpload, ListParts, ListMultipartUploads.

Source: Amazon S3 API Reference for each action and the user guide's "Uploading and copying objects
using multipart upload" (part numbers 1..10,000; every part but the last at least 5 MiB; the ETag of
the result is the MD5 of the concatenated binary part MD5s, a dash and the part count).
Each part is chunked on its own and its chunks are stored when the part arrives; completing an
upload only writes metadata, in one transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import time
from collections.abc import Sequence

from aiohttp import web

from frontend import object_io
from frontend.config import MAX_PART_BYTES, MAX_PART_NUMBER, MIN_PART_BYTES
from frontend.s3 import checksums, errors, names, xml
from frontend.s3.context import S3Call, iso8601
from frontend.s3.handlers_object import checksum_headers, copy_source, quote_etag, require_bucket
from frontend.s3.object_headers import DEFAULT_CONTENT_TYPE, system_metadata, user_metadata, write_condition
from frontend.s3.payload import Payload, read_small_body
from metadata.store import ChunkRef, MultipartUpload, NoSuchKey, NoSuchUpload, ObjectRecord, PartRecord

LIST_LIMIT = 1000


def _int_parameter(call: S3Call, name: str, default: int, low: int, high: int) -> int:
    raw = call.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise errors.InvalidArgument(f"Provided {name} not an integer or within integer range",
                                     ArgumentName=name, ArgumentValue=raw) from exc
    if not low <= value <= high:
        raise errors.InvalidArgument(f"Argument {name} must be an integer between {low} and {high}",
                                     ArgumentName=name, ArgumentValue=raw)
    return value


async def _upload(call: S3Call) -> MultipartUpload:
    upload_id = call.query.get("uploadId", "")
    upload = await call.services.meta(call.services.metadata.get_multipart_upload, upload_id)
    if upload.bucket != call.bucket or upload.key != call.key:
        raise errors.NoSuchUpload(resource=f"/{call.bucket}/{call.key}")
    return upload


async def create_multipart_upload(call: S3Call) -> web.StreamResponse:
    """CreateMultipartUpload (POST ?uploads): records the upload and its object metadata."""
    names.validate_key(call.key)
    headers = call.request.headers
    algorithm = headers.get("x-amz-checksum-algorithm")
    if algorithm:
        algorithm = checksums.normalize_algorithm(algorithm)
    await require_bucket(call)
    key = await call.services.meta(call.services.metadata.get_access_key, call.auth.access_key_id)
    owner = key.owner if key is not None else call.auth.access_key_id
    upload = await call.services.meta(
        call.services.metadata.create_multipart_upload, call.bucket, call.key, owner,
        headers.get("Content-Type") or DEFAULT_CONTENT_TYPE, user_metadata(headers), system_metadata(headers),
        algorithm)
    response_headers = {"x-amz-checksum-algorithm": algorithm} if algorithm else {}
    body = xml.initiate_multipart_upload_result(bucket=call.bucket, key=call.key, upload_id=upload.upload_id)
    return web.Response(status=200, body=body, content_type="application/xml", headers=response_headers)


async def upload_part(call: S3Call) -> web.StreamResponse:
    """UploadPart (PUT ?partNumber&uploadId): stores the part's chunks, then records the part."""
    part_number = _int_parameter(call, "partNumber", 0, 1, MAX_PART_NUMBER)
    upload = await _upload(call)
    payload = Payload(call.request, call.auth, checksum_algorithm=upload.checksum_algorithm)
    if payload.declared_length > MAX_PART_BYTES:
        raise errors.EntityTooLarge(ProposedSize=payload.declared_length, MaxSizeAllowed=MAX_PART_BYTES)
    pin_id = object_io.new_pin_id()  # see put_object: pinned until the commit or release_pins
    try:
        written = await call.services.store_body(payload.pieces(), payload.declared_length, pin_id,
                                                 payload.observers)
        verified = payload.verify(bytes.fromhex(written.md5_hex))
        part = PartRecord(part_number=part_number, size=written.size, etag=quote_etag(written.md5_hex),
                          last_modified=time.time(), checksums=verified, chunks=written.chunks)
        await object_io.run_to_completion(call.services.metadata.put_part, upload.upload_id, part, pin_id)
    except BaseException:
        await object_io.release_pins(call.services.metadata, pin_id)
        raise
    return web.Response(status=200, headers={"ETag": part.etag, **checksum_headers(verified)})


def parse_copy_source_range(value: str | None, size: int) -> tuple[int, int]:
    """``x-amz-copy-source-range: bytes=first-last`` as ``[start, end)`` within a source of ``size``.

    Without the header the whole source is copied.

    Raises:
        errors.InvalidArgument: malformed, or not within the source object (as S3 answers).
    """
    if value is None:
        return 0, size
    unit, _, spec = value.strip().partition("=")
    first, _, last = spec.partition("-")
    if unit != "bytes" or not first.isdigit() or not last.isdigit() or int(last) < int(first):
        raise errors.InvalidArgument("The x-amz-copy-source-range value must be of the form bytes=first-last "
                                     "where first and last are the zero-based offsets of the first and last "
                                     "bytes to copy", ArgumentName="x-amz-copy-source-range",
                                     ArgumentValue=value)
    start, end = int(first), int(last) + 1
    if end > size:
        raise errors.InvalidArgument(f"Range specified is not valid for source object of size: {size}",
                                     ArgumentName="x-amz-copy-source-range", ArgumentValue=value)
    return start, end


async def upload_part_copy(call: S3Call) -> web.StreamResponse:
    """UploadPartCopy (PUT ?partNumber&uploadId with x-amz-copy-source): a part made of a byte range of
    an existing object.

    The range is read through the verified read path and written back through the write path, so a
    range that falls on the source's chunk boundaries dedups onto its chunks and moves no fragments;
    the part's ETag is the MD5 of the copied bytes, as S3 computes it.
    """
    part_number = _int_parameter(call, "partNumber", 0, 1, MAX_PART_NUMBER)
    upload = await _upload(call)
    _bucket, _key, source = await copy_source(call)
    start, end = parse_copy_source_range(call.request.headers.get("x-amz-copy-source-range"), source.size)
    if end - start > MAX_PART_BYTES:
        raise errors.InvalidRequest("The specified copy source is larger than the maximum allowable size for "
                                    "a copy source: 5368709120")
    pin_id = object_io.new_pin_id()  # see put_object: pinned until the commit or release_pins
    # Closed on every path: a failed copy stops the source's read-ahead and frees its read budget
    # now rather than whenever the suspended generator is collected.
    async with contextlib.aclosing(object_io.read_stream(call.services.chunk_store, source.chunks, start, end,
                                                         budget=call.services.read_budget)) as pieces:
        try:
            written = await call.services.store_body(pieces, end - start, pin_id)
            part = PartRecord(part_number=part_number, size=written.size, etag=quote_etag(written.md5_hex),
                              last_modified=time.time(), checksums={}, chunks=written.chunks)
            await object_io.run_to_completion(call.services.metadata.put_part, upload.upload_id, part, pin_id)
        except BaseException:
            await object_io.release_pins(call.services.metadata, pin_id)
            raise
    body = xml.copy_part_result(etag=part.etag, last_modified=iso8601(part.last_modified))
    return web.Response(status=200, body=body, content_type="application/xml")


async def _all_parts(call: S3Call, upload_id: str) -> dict[int, PartRecord]:
    parts: dict[int, PartRecord] = {}
    marker = 0
    while True:
        page, truncated = await call.services.meta(call.services.metadata.list_parts, upload_id, marker,
                                                   LIST_LIMIT)
        for part in page:
            parts[part.part_number] = part
        if not truncated or not page:
            return parts
        marker = page[-1].part_number


def _same_etag(given: str, stored: str) -> bool:
    return given.strip().strip('"') == stored.strip().strip('"')


async def complete_multipart_upload(call: S3Call) -> web.StreamResponse:
    """CompleteMultipartUpload (POST ?uploadId): joins the listed parts into the object.

    Raises InvalidPartOrder (numbers not ascending), InvalidPart (unknown part or ETag/checksum
    mismatch), EntityTooSmall (a part other than the last below 5 MiB), MalformedXML.
    """
    condition = write_condition(call.request.headers)
    body = await read_small_body(call.request, call.auth, limit=xml.MAX_DOCUMENT_BYTES)
    requested = xml.parse_complete_multipart_upload(body)
    if not requested:
        raise errors.MalformedXML()
    try:
        upload = await _upload(call)
    except (NoSuchUpload, errors.NoSuchUpload):
        # A retry whose first attempt completed (the response was lost) succeeds, as on AWS.
        return await _already_completed(call, requested)
    numbers = [number for number, _etag, _sums in requested]
    if any(later <= earlier for earlier, later in itertools.pairwise(numbers)):
        raise errors.InvalidPartOrder()
    stored = await _all_parts(call, upload.upload_id)
    chosen: list[PartRecord] = []
    for number, given_etag, sums in requested:
        part = stored.get(number)
        if part is None or not given_etag or not _same_etag(given_etag, part.etag):
            raise errors.InvalidPart(PartNumber=number, ETag=given_etag or "")
        for algorithm, value in sums.items():
            if part.checksums.get(algorithm) not in (None, value):
                raise errors.InvalidPart(f"The {algorithm} checksum of part {number} does not match.",
                                         PartNumber=number)
        chosen.append(part)
    for part in chosen[:-1]:
        if part.size < MIN_PART_BYTES:
            raise errors.EntityTooSmall(ProposedSize=part.size, MinSizeAllowed=MIN_PART_BYTES,
                                        PartNumber=part.part_number)
    chunks: list[ChunkRef] = []
    offset = 0
    for part in chosen:
        chunks.extend(ChunkRef(hash=c.hash, size=c.size, offset=offset + c.offset) for c in part.chunks)
        offset += part.size
    etag = multipart_etag([part.etag for part in chosen])
    assert etag is not None  # stored part ETags are MD5s we computed
    object_checksums: dict[str, str] = {}
    upload_algorithm = upload.checksum_algorithm
    if upload_algorithm and all(upload_algorithm in part.checksums for part in chosen):
        object_checksums[upload_algorithm] = checksums.composite_checksum(
            upload_algorithm, [part.checksums[upload_algorithm] for part in chosen])
        object_checksums["checksum_type"] = "COMPOSITE"
    record = ObjectRecord(
        bucket=call.bucket, key=call.key, size=offset, etag=etag, last_modified=time.time(),
        content_type=upload.content_type, user_metadata=upload.user_metadata,
        system_metadata=upload.system_metadata, checksums=object_checksums, chunks=tuple(chunks),
        part_count=len(chosen), part_sizes=tuple(part.size for part in chosen))
    await call.services.meta(call.services.metadata.complete_multipart_upload, upload.upload_id, record,
                             [(number, given or "") for number, given, _sums in requested], condition)
    location = f"http://{call.request.host}/{call.bucket}/{call.key}"
    body = xml.complete_multipart_upload_result(location=location, bucket=call.bucket, key=call.key,
                                                etag=etag, checksums=checksum_headers_for_xml(object_checksums))
    return web.Response(status=200, body=body, content_type="application/xml")


def multipart_etag(part_etags: list[str]) -> str | None:
    """The S3 ETag of an object made of parts with these ETags (MD5 of the binary part MD5s, a dash,
    the count); None when an ETag is not an MD5."""
    try:
        md5s = b"".join(bytes.fromhex(etag.strip().strip('"')) for etag in part_etags)
    except ValueError:
        return None
    return f'"{hashlib.md5(md5s).hexdigest()}-{len(part_etags)}"'


async def _already_completed(call: S3Call, requested: Sequence[tuple[int, str | None, dict[str, str]]]) -> web.Response:
    """Answer a CompleteMultipartUpload for an upload that no longer exists: success when the key
    holds exactly the object those parts make, NoSuchUpload otherwise."""
    expected = multipart_etag([etag or "" for _number, etag, _sums in requested])
    try:
        current = await call.services.meta(call.services.metadata.get_object, call.bucket, call.key)
    except NoSuchKey:
        current = None
    if expected is None or current is None or current.etag != expected or current.part_count != len(requested):
        raise errors.NoSuchUpload(resource=f"/{call.bucket}/{call.key}")
    location = f"http://{call.request.host}/{call.bucket}/{call.key}"
    body = xml.complete_multipart_upload_result(location=location, bucket=call.bucket, key=call.key,
                                                etag=current.etag,
                                                checksums=checksum_headers_for_xml(current.checksums))
    return web.Response(status=200, body=body, content_type="application/xml")


def checksum_headers_for_xml(found: dict[str, str]) -> dict[str, str]:
    """Stored checksums as S3 XML element names (``ChecksumCRC32`` ...)."""
    return {f"Checksum{algorithm}": value for algorithm, value in found.items() if algorithm != "checksum_type"}


async def abort_multipart_upload(call: S3Call) -> web.StreamResponse:
    """AbortMultipartUpload (DELETE ?uploadId): drops the upload and its parts."""
    upload = await _upload(call)
    await call.services.meta(call.services.metadata.abort_multipart_upload, upload.upload_id)
    return web.Response(status=204)


async def list_parts(call: S3Call) -> web.StreamResponse:
    """ListParts (GET ?uploadId): max-parts, part-number-marker."""
    upload = await _upload(call)
    max_parts = _int_parameter(call, "max-parts", LIST_LIMIT, 0, 2**31 - 1)
    marker = _int_parameter(call, "part-number-marker", 0, 0, MAX_PART_NUMBER)
    parts, truncated = await call.services.meta(call.services.metadata.list_parts, upload.upload_id, marker,
                                                min(max_parts, LIST_LIMIT))
    body = xml.list_parts_result(
        bucket=call.bucket, key=call.key, upload_id=upload.upload_id, part_number_marker=marker,
        next_part_number_marker=parts[-1].part_number if parts else marker, max_parts=max_parts,
        is_truncated=truncated,
        parts=[xml.ListedPart(part_number=p.part_number, last_modified=iso8601(p.last_modified), etag=p.etag,
                              size=p.size, checksums=checksum_headers_for_xml(p.checksums)) for p in parts],
        owner_id=upload.owner, checksum_algorithm=upload.checksum_algorithm)
    return web.Response(status=200, body=body, content_type="application/xml")


async def list_multipart_uploads(call: S3Call) -> web.StreamResponse:
    """ListMultipartUploads (GET ?uploads): prefix, key-marker, upload-id-marker, max-uploads."""
    await require_bucket(call)
    query = call.query
    prefix = query.get("prefix", "")
    key_marker = query.get("key-marker", "")
    upload_id_marker = query.get("upload-id-marker", "")
    max_uploads = _int_parameter(call, "max-uploads", LIST_LIMIT, 0, 2**31 - 1)
    uploads, truncated = await call.services.meta(
        call.services.metadata.list_multipart_uploads, call.bucket, prefix, key_marker, upload_id_marker,
        min(max_uploads, LIST_LIMIT))
    body = xml.list_multipart_uploads_result(
        bucket=call.bucket, prefix=prefix, key_marker=key_marker, upload_id_marker=upload_id_marker,
        next_key_marker=uploads[-1].key if uploads else "", next_upload_id_marker=uploads[-1].upload_id
        if uploads else "", max_uploads=max_uploads, is_truncated=truncated,
        uploads=[xml.ListedUpload(key=u.key, upload_id=u.upload_id, initiated=iso8601(u.initiated),
                                  owner_id=u.owner) for u in uploads])
    return web.Response(status=200, body=body, content_type="application/xml")
