"""From an aiohttp request to an S3 operation handler, and from any failure to S3 error XML.

The order is: route (a typed :class:`~frontend.s3.router.Operation` before anything happens),
authenticate (SigV4, header-signed or presigned), run the handler. Domain errors of the layers below
(metadata, data path) are mapped to S3 errors in :data:`ERROR_MAP`, the one place that does so;
anything unmapped is logged and answered with 500 InternalError.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import re
import secrets
import sqlite3
import time
import urllib.parse
from collections.abc import Awaitable, Callable

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import Counter, Histogram

import metadata.store as metadata_errors
from frontend import datapath_errors
from frontend.cluster_view import ClusterMapUnavailable
from frontend.s3 import errors, handlers_bucket, handlers_multipart, handlers_object, router, sigv2, sigv4
from frontend.s3.context import S3Call, S3Services
from frontend.sync.presign import SYNC_PRESIGN_OWNER
from metadata.store import AccessKey

log = logging.getLogger("frontend.s3")

Handler = Callable[[S3Call], Awaitable[web.StreamResponse]]

HANDLERS: dict[str, Handler] = {
    "ListBuckets": handlers_bucket.list_buckets,
    "CreateBucket": handlers_bucket.create_bucket,
    "DeleteBucket": handlers_bucket.delete_bucket,
    "HeadBucket": handlers_bucket.head_bucket,
    "GetBucketLocation": handlers_bucket.get_bucket_location,
    "GetBucketVersioning": handlers_bucket.get_bucket_versioning,
    "ListObjectsV2": handlers_bucket.list_objects_v2,
    "ListObjects": handlers_bucket.list_objects_v1,
    "PutObject": handlers_object.put_object,
    "CopyObject": handlers_object.copy_object,
    "GetObject": handlers_object.get_object,
    "HeadObject": handlers_object.head_object,
    "DeleteObject": handlers_object.delete_object,
    "DeleteObjects": handlers_object.delete_objects,
    "CreateMultipartUpload": handlers_multipart.create_multipart_upload,
    "UploadPart": handlers_multipart.upload_part,
    "UploadPartCopy": handlers_multipart.upload_part_copy,
    "CompleteMultipartUpload": handlers_multipart.complete_multipart_upload,
    "AbortMultipartUpload": handlers_multipart.abort_multipart_upload,
    "ListParts": handlers_multipart.list_parts,
    "ListMultipartUploads": handlers_multipart.list_multipart_uploads,
}

# Domain error -> S3 error class. Retryable storage failures are 503 so SDKs back off and retry.
ERROR_MAP: dict[type[Exception], type[errors.S3Error]] = {
    metadata_errors.NoSuchBucket: errors.NoSuchBucket,
    metadata_errors.NoSuchKey: errors.NoSuchKey,
    metadata_errors.NoSuchUpload: errors.NoSuchUpload,
    metadata_errors.BucketAlreadyExists: errors.BucketAlreadyExists,
    metadata_errors.BucketAlreadyOwnedByYou: errors.BucketAlreadyOwnedByYou,
    metadata_errors.BucketNotEmpty: errors.BucketNotEmpty,
    metadata_errors.InvalidPart: errors.InvalidPart,
    metadata_errors.PreconditionFailed: errors.PreconditionFailed,
    # Garbage collection holds a chunk the request needs: retry (SDKs back off on SlowDown).
    metadata_errors.ChunksUnavailable: errors.SlowDown,
    datapath_errors.ChunkBeingCollected: errors.SlowDown,
    datapath_errors.InsufficientFragments: errors.ServiceUnavailable,
    datapath_errors.ChunkUnavailable: errors.ServiceUnavailable,
    datapath_errors.ChunkCorrupt: errors.ServiceUnavailable,
    datapath_errors.EntityTooLarge: errors.EntityTooLarge,
    ClusterMapUnavailable: errors.ServiceUnavailable,
    ClientPayloadError: errors.IncompleteBody,
}

REQUESTS = Counter("coffer_frontend_s3_requests_total", "S3 requests answered", ["operation", "status"])
LATENCY = Histogram("coffer_frontend_s3_request_seconds", "S3 request latency until the response is sent",
                    ["operation"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                            5, 10, 30, 60, 300))

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
ACCESS_KEY_CACHE_SECONDS = 30.0
# Unknown ids are remembered briefly only, so a key created a moment ago works at once.
UNKNOWN_KEY_CACHE_SECONDS = 1.0


class AccessKeyCache:
    """Access keys by id, read from metadata in a thread and kept for 30 s (signature checks are
    synchronous and must not touch SQLite on the event loop)."""

    def __init__(self, services: S3Services) -> None:
        self._services = services
        self._keys: dict[str, tuple[float, AccessKey | None]] = {}

    async def load(self, access_key_id: str) -> None:
        """Make sure ``access_key_id`` (known or not) is in the cache."""
        cached = self._keys.get(access_key_id)
        if cached is not None:
            lifetime = ACCESS_KEY_CACHE_SECONDS if cached[1] is not None else UNKNOWN_KEY_CACHE_SECONDS
            if time.monotonic() - cached[0] < lifetime:
                return
        key = await self._services.meta(self._services.metadata.get_access_key, access_key_id)
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[access_key_id] = (time.monotonic(), key)

    def owner(self, access_key_id: str) -> str | None:
        """The owner of a loaded key, None when unknown."""
        cached = self._keys.get(access_key_id)
        return cached[1].owner if cached is not None and cached[1] is not None else None

    def secret(self, access_key_id: str) -> str | None:
        """The secret of a loaded key, None when unknown."""
        cached = self._keys.get(access_key_id)
        return cached[1].secret_key if cached is not None and cached[1] is not None else None


def requested_access_key(request: web.Request) -> str | None:
    """The access key id a request claims, from the Authorization header or X-Amz-Credential."""
    header = request.headers.get("Authorization", "")
    match = _CREDENTIAL.search(header)
    if match:
        return match.group(1)
    if header.startswith("AWS "):
        return header[4:].rpartition(":")[0].strip() or None
    credential = request.query.get("X-Amz-Credential")
    if credential:
        return credential.split("/", 1)[0]
    return request.query.get("AWSAccessKeyId")


def split_target(raw_target: str) -> tuple[str, list[tuple[str, str]]]:
    """Split a request target into the raw path and percent-decoded query pairs, in order.

    ``+`` stays ``+``: S3 query strings are percent-encoded (RFC 3986), not form-encoded, so a
    literal plus is not a space (parse_qsl would say it is, and signatures would not match).
    """
    raw_path, _, raw_query = raw_target.partition("?")
    query = []
    for pair in raw_query.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            query.append((urllib.parse.unquote(name), urllib.parse.unquote(value)))
    return raw_path, query


async def send_continue(request: web.Request, request_id: str) -> web.Response | None:
    """The end of an ``Expect: 100-continue`` hook whose checks passed: send ``100 Continue`` and
    return None, or, for any other Expect value, a 400 InvalidRequest that closes the connection
    (the held-back body must not be read as the next request)."""
    if request.headers.get("Expect", "").lower() != "100-continue":
        response = error_response(request, errors.InvalidRequest("Unsupported Expect header"), request_id)
        response.force_close()
        return response
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None


def error_response(request: web.Request, error: errors.S3Error, request_id: str) -> web.Response:
    """The S3 error document for ``error`` (no body for HEAD, as S3 answers)."""
    headers = {"x-amz-request-id": request_id}
    if error.status == 503:
        headers["Retry-After"] = "1"
    if request.method == "HEAD":
        return web.Response(status=error.status, headers=headers)
    return web.Response(status=error.status, body=error.to_xml(request_id), content_type="application/xml",
                        headers=headers)


def map_error(exc: Exception) -> errors.S3Error | None:
    """The S3 error for a domain error (walking its class hierarchy), None when unmapped."""
    if isinstance(exc, errors.S3Error):
        return exc
    if isinstance(exc, UnicodeError):
        # aiohttp surrogate-escapes non-UTF-8 header bytes; they cannot be signed or stored.
        return errors.InvalidArgument("A header or parameter is not valid UTF-8")
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        # SQLite gave up waiting for its write lock: the store is overloaded, the client should retry.
        return errors.SlowDown()
    for cls in type(exc).__mro__:
        target = ERROR_MAP.get(cls)
        if target is not None:
            return target()
    return None


class S3Dispatcher:
    """The aiohttp handler for every S3 request of one frontend."""

    def __init__(self, services: S3Services) -> None:
        self.services = services
        self.keys = AccessKeyCache(services)

    async def _authorize(self, request: web.Request, request_id: str) -> S3Call:
        """Route and authenticate ``request`` (no body is read).

        Raises:
            errors.S3Error: unroutable, unauthenticated, or an operation Coffer does not implement.
        """
        raw_path, query = split_target(request.raw_path)
        operation = router.route(request.method, request.host, raw_path, query, request.headers,
                                 virtual_host_suffixes=self.services.config.virtual_host_suffixes)
        access_key_id = requested_access_key(request)
        if access_key_id:
            await self.keys.load(access_key_id)
        now = datetime.datetime.now(datetime.UTC)
        if sigv2.is_sigv2(request.headers, query):
            auth = sigv2.verify_request(request.method, raw_path, query, request.headers, self.keys.secret,
                                        now, bucket=operation.bucket)
        else:
            auth = sigv4.verify_request(request.method, raw_path, query, request.headers, self.keys.secret,
                                        now, region=self.services.config.region)
        if self.keys.owner(auth.access_key_id) == SYNC_PRESIGN_OWNER:
            # The sync presign key signs chunk transfer URLs only (frontend/sync/presign.py).
            raise errors.AccessDenied("This access key is reserved for sync chunk transfers")
        if operation.name not in HANDLERS:
            raise errors.NotImplemented(f"{operation.name} is not implemented by Coffer")
        return S3Call(request=request, operation=operation, auth=auth, request_id=request_id,
                      services=self.services, query_pairs=query)

    def _error(self, request: web.Request, exc: Exception, operation_name: str, request_id: str) -> web.Response:
        mapped = map_error(exc)
        if mapped is None:
            log.exception("unexpected error", extra={"fields": {"operation": operation_name,
                                                                "request_id": request_id}})
            mapped = errors.InternalError()
        elif mapped.status >= 500:
            log.warning("service unavailable", extra={"fields": {
                "operation": operation_name, "request_id": request_id, "error": repr(exc)}})
        return error_response(request, mapped, request_id)

    async def expect_continue(self, request: web.Request) -> web.StreamResponse | None:
        """aiohttp's ``Expect: 100-continue`` hook: send ``100 Continue`` only once the request is
        routed and authenticated and its bucket (or multipart upload) exists, so a refused upload
        never transfers its body. Returns the error response otherwise (the connection then
        closes: the body the client held back must not be read as the next request)."""
        request_id = secrets.token_hex(8).upper()
        operation_name = "Unknown"
        try:
            call = await self._authorize(request, request_id)
            operation_name = call.operation.name
            if operation_name in ("PutObject", "CopyObject") and await self.services.meta(
                    self.services.metadata.get_bucket, call.bucket) is None:
                raise errors.NoSuchBucket(bucket=call.bucket)
            if operation_name in ("UploadPart", "UploadPartCopy"):
                upload = await self.services.meta(self.services.metadata.get_multipart_upload,
                                                  call.query.get("uploadId", ""))
                if (upload.bucket, upload.key) != (call.bucket, call.key):
                    raise errors.NoSuchUpload()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            response = self._error(request, exc, operation_name, request_id)
            response.force_close()
            REQUESTS.labels(operation_name, str(response.status)).inc()
            return response
        return await send_continue(request, request_id)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        """Answer one S3 request; never raises (errors become S3 error documents)."""
        request_id = secrets.token_hex(8).upper()
        started = time.perf_counter()
        operation_name = "Unknown"
        try:
            call = await self._authorize(request, request_id)
            operation_name = call.operation.name
            response = await HANDLERS[operation_name](call)
            response.headers.setdefault("x-amz-request-id", request_id)
        except asyncio.CancelledError:
            REQUESTS.labels(operation_name, "cancelled").inc()
            raise
        except handlers_object.StreamAborted as exc:
            # Headers and part of the body are out and the connection is aborted: nothing more may
            # be written (an error document here would land inside the body).
            REQUESTS.labels(operation_name, "aborted").inc()
            return exc.response
        except (ConnectionResetError, HttpProcessingError) as exc:
            REQUESTS.labels(operation_name, "disconnected").inc()
            log.info("client went away", extra={"fields": {"operation": operation_name, "error": str(exc),
                                                           "request_id": request_id}})
            raise
        except Exception as exc:  # every failure becomes an S3 error document
            response = self._error(request, exc, operation_name, request_id)
        REQUESTS.labels(operation_name, str(response.status)).inc()
        LATENCY.labels(operation_name).observe(time.perf_counter() - started)
        return response
