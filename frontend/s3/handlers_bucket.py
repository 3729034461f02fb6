"""Bucket operations: ListBuckets, CreateBucket, DeleteBucket, HeadBucket, GetBucketLocation,
ListObjectsV2 and ListObjects (v1)."""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from frontend.s3 import errors, names, xml
from frontend.s3.context import S3Call, iso8601
from frontend.s3.payload import read_small_body
from metadata.store import BucketAlreadyOwnedByYou

MAX_KEYS_LIMIT = 1000


def _xml(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/xml")


async def list_buckets(call: S3Call) -> web.StreamResponse:
    """ListBuckets: the caller's buckets, by name."""
    owner = call.auth.access_key_id
    buckets = await call.services.meta(call.services.metadata.list_buckets, None)
    entries = [(bucket.name, iso8601(bucket.created)) for bucket in buckets]
    return _xml(xml.list_all_my_buckets_result(owner_id=owner, owner_name=owner, buckets=entries))


async def create_bucket(call: S3Call) -> web.StreamResponse:
    """CreateBucket: validates the name and any CreateBucketConfiguration (its region must be ours)."""
    names.validate_bucket_name(call.bucket)
    body = await read_small_body(call.request, call.auth)
    if body.strip():
        location = xml.parse_create_bucket_configuration(body)
        if location and location != call.services.config.region:
            raise errors.InvalidLocationConstraint(
                f"The specified location-constraint {location!r} is not valid for this endpoint "
                f"(region {call.services.config.region}).")
    owner = await _owner(call)
    try:
        await call.services.meta(call.services.metadata.create_bucket, call.bucket, owner)
    except BucketAlreadyOwnedByYou:
        # us-east-1 answers 200 to re-creating your own bucket; other regions answer 409.
        if call.services.config.region != "us-east-1":
            raise

    return web.Response(status=200, headers={"Location": f"/{call.bucket}"})


async def _owner(call: S3Call) -> str:
    key = await call.services.meta(call.services.metadata.get_access_key, call.auth.access_key_id)
    return key.owner if key is not None else call.auth.access_key_id


async def delete_bucket(call: S3Call) -> web.StreamResponse:
    """DeleteBucket: only an empty bucket (BucketNotEmpty otherwise)."""
    await call.services.meta(call.services.metadata.delete_bucket, call.bucket)
    return web.Response(status=204)


async def head_bucket(call: S3Call) -> web.StreamResponse:
    """HeadBucket: 200 when the bucket exists (404 without a body otherwise)."""
    if await call.services.meta(call.services.metadata.get_bucket, call.bucket) is None:
        raise errors.NoSuchBucket(bucket=call.bucket)
    return web.Response(status=200, headers={"x-amz-bucket-region": call.services.config.region})


async def get_bucket_location(call: S3Call) -> web.StreamResponse:
    """GetBucketLocation: the region (empty for us-east-1, as AWS answers)."""
    if await call.services.meta(call.services.metadata.get_bucket, call.bucket) is None:
        raise errors.NoSuchBucket(bucket=call.bucket)
    region = call.services.config.region
    return _xml(xml.location_constraint("" if region == "us-east-1" else region))


async def get_bucket_versioning(call: S3Call) -> web.StreamResponse:
    """GetBucketVersioning: Coffer's buckets are never versioned (an empty configuration, as S3
    answers for a bucket that never had versioning enabled)."""
    if await call.services.meta(call.services.metadata.get_bucket, call.bucket) is None:
        raise errors.NoSuchBucket(bucket=call.bucket)
    return _xml(xml.versioning_configuration())


def _max_keys(query: dict[str, str]) -> int:
    raw = query.get("max-keys", str(MAX_KEYS_LIMIT))
    try:
        value = int(raw)
    except ValueError as exc:
        raise errors.InvalidArgument("Provided max-keys not an integer or within integer range",
                                     ArgumentName="max-keys", ArgumentValue=raw) from exc
    if value < 0:
        raise errors.InvalidArgument("Argument maxKeys must be an integer between 0 and 2147483647",
                                     ArgumentName="max-keys", ArgumentValue=raw)
    return min(value, MAX_KEYS_LIMIT)


def encode_continuation_token(start_after: str) -> str:
    """An opaque continuation token: the last key or common prefix returned, base64 (URL-safe)."""
    return base64.urlsafe_b64encode(("v1:" + start_after).encode()).decode()


def decode_continuation_token(token: str) -> str:
    """Inverse of :func:`encode_continuation_token`.

    Raises:
        errors.InvalidArgument: the token was not issued by us.
    """
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise errors.InvalidArgument("The continuation token provided is incorrect",
                                     ArgumentName="continuation-token") from exc
    if not text.startswith("v1:"):
        raise errors.InvalidArgument("The continuation token provided is incorrect",
                                     ArgumentName="continuation-token")
    return text[3:]


def _encoding_type(query: dict[str, str]) -> str | None:
    encoding = query.get("encoding-type")
    if encoding is not None and encoding != "url":
        raise errors.InvalidArgument("Invalid Encoding Method specified in Request",
                                     ArgumentName="encoding-type", ArgumentValue=encoding)
    return encoding


async def list_objects_v2(call: S3Call) -> web.StreamResponse:
    """ListObjectsV2: prefix, delimiter, max-keys, continuation-token, start-after, encoding-type."""
    query = call.query
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter", "")
    max_keys = _max_keys(query)
    encoding = _encoding_type(query)
    token = query.get("continuation-token")
    start_after = query.get("start-after", "")
    resume = decode_continuation_token(token) if token is not None else start_after
    result = await call.services.meta(call.services.metadata.list_objects, call.bucket, prefix, delimiter,
                                      resume, max_keys)
    next_token = (encode_continuation_token(result.next_start_after)
                  if result.is_truncated and result.next_start_after is not None else None)
    body = xml.list_bucket_result_v2(
        bucket=call.bucket, prefix=prefix, delimiter=delimiter, max_keys=max_keys,
        objects=[xml.ListedObject(key=o.key, last_modified=iso8601(o.last_modified), etag=o.etag,
                                  size=o.size) for o in result.objects],
        common_prefixes=result.common_prefixes, is_truncated=result.is_truncated,
        continuation_token=token, next_continuation_token=next_token,
        start_after=query.get("start-after"), encoding_type=encoding,
        fetch_owner=query.get("fetch-owner") == "true", owner_id=call.auth.access_key_id)
    return _xml(body)


async def list_objects_v1(call: S3Call) -> web.StreamResponse:
    """ListObjects (version 1): prefix, delimiter, marker, max-keys, encoding-type."""
    query = call.query
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter", "")
    max_keys = _max_keys(query)
    encoding = _encoding_type(query)
    marker = query.get("marker", "")
    result = await call.services.meta(call.services.metadata.list_objects, call.bucket, prefix, delimiter,
                                      marker, max_keys)
    body = xml.list_bucket_result_v1(
        bucket=call.bucket, prefix=prefix, delimiter=delimiter, max_keys=max_keys, marker=marker,
        objects=[xml.ListedObject(key=o.key, last_modified=iso8601(o.last_modified), etag=o.etag,
                                  size=o.size) for o in result.objects],
        common_prefixes=result.common_prefixes, is_truncated=result.is_truncated,
        next_marker=result.next_start_after if result.is_truncated and delimiter else None,
        encoding_type=encoding, owner_id=call.auth.access_key_id)
    return _xml(body)
