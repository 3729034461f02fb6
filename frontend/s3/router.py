"""S3 request routing: (method, host, path, query, headers) -> a typed Operation, before any work.

Public API:
    Operation(name: str, bucket: str | None, key: str | None)   frozen; name is the S3 API action
    route(method, host, raw_path, query, headers=None, *, virtual_host_suffixes=()) -> Operation
    OPERATIONS: frozenset of the action names route() can return.

Actions: ListBuckets, CreateBucket, DeleteBucket, HeadBucket, GetBucketLocation,
GetBucketVersioning, ListObjectsV2, ListObjects, ListMultipartUploads, DeleteObjects, PutObject,
CopyObject, GetObject, HeadObject, DeleteObject, CreateMultipartUpload, UploadPart,
UploadPartCopy, CompleteMultipartUpload, AbortMultipartUpload, ListParts. Any other sub-resource
(``?acl``, ``?tagging``, ``?versions`` ...) raises NotImplemented naming the AWS action.

Path-style (``/bucket/key``) and virtual-hosted-style (``bucket.<suffix>``) requests. The key is
percent-decoded from the raw path exactly once and never normalized: ``../``, ``//``, ``%``,
spaces and unicode stay as they are. Bucket names are checked (InvalidBucketName); key length is
left to names.validate_key in the handlers.

Source: Amazon S3 API Reference (operation request syntax) and User Guide "Virtual hosting of
buckets".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from frontend.s3 import errors
from frontend.s3.names import validate_bucket_name

__all__ = ["OPERATIONS", "Operation", "route"]

OPERATIONS = frozenset({
    "ListBuckets", "CreateBucket", "DeleteBucket", "HeadBucket", "GetBucketLocation",
    "GetBucketVersioning", "ListObjectsV2", "ListObjects", "ListMultipartUploads", "DeleteObjects",
    "PutObject", "CopyObject", "GetObject", "HeadObject", "DeleteObject", "CreateMultipartUpload",
    "UploadPart", "UploadPartCopy", "CompleteMultipartUpload", "AbortMultipartUpload", "ListParts",
})

# Sub-resource query names -> the AWS action noun (prefixed Get/Put/Delete/List when refused).
_BUCKET_SUBRESOURCES: dict[str, str] = {
    "acl": "BucketAcl", "policy": "BucketPolicy", "policyStatus": "BucketPolicyStatus",
    "cors": "BucketCors", "lifecycle": "BucketLifecycleConfiguration", "tagging": "BucketTagging",
    "website": "BucketWebsite", "logging": "BucketLogging", "notification": "BucketNotificationConfiguration",
    "replication": "BucketReplication", "encryption": "BucketEncryption",
    "requestPayment": "BucketRequestPayment",
    "accelerate": "BucketAccelerateConfiguration", "analytics": "BucketAnalyticsConfiguration",
    "inventory": "BucketInventoryConfiguration", "metrics": "BucketMetricsConfiguration",
    "intelligent-tiering": "BucketIntelligentTieringConfiguration", "object-lock": "ObjectLockConfiguration",
    "ownershipControls": "BucketOwnershipControls", "publicAccessBlock": "PublicAccessBlock",
    "versioning": "BucketVersioning", "location": "BucketLocation", "versions": "ObjectVersions",
    "session": "Session", "metadataTable": "BucketMetadataTableConfiguration",
}
_OBJECT_SUBRESOURCES: dict[str, str] = {
    "acl": "ObjectAcl", "tagging": "ObjectTagging", "retention": "ObjectRetention",
    "legal-hold": "ObjectLegalHold", "torrent": "ObjectTorrent", "attributes": "ObjectAttributes",
    "restore": "RestoreObject", "select": "SelectObjectContent", "renameObject": "RenameObject",
}


@dataclass(frozen=True)
class Operation:
    """A routed S3 request: the AWS action name and its (decoded) bucket and key."""

    name: str
    bucket: str | None
    key: str | None


def _query_names(query: Mapping[str, str] | Iterable[tuple[str, str]] | Any) -> dict[str, str]:
    """name -> first value, from a mapping / multidict or a list of decoded pairs."""
    items = query.items() if hasattr(query, "items") else query
    names: dict[str, str] = {}
    for name, value in items:
        names.setdefault(str(name), str(value))
    return names


def _header(headers: Mapping[str, str] | Any | None, name: str) -> str | None:
    """``name`` (lowercase) from a case-insensitive multidict or a lowercase-keyed dict."""
    if headers is None:
        return None
    value = headers.get(name)
    return None if value is None else str(value)


def _strip_port(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # IPv6 literal: [::1]:9000
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if ":" in host else host


def _decode(raw: str) -> str:
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError as error:
        raise errors.InvalidURI() from error


def _target(host: str, raw_path: str, suffixes: Sequence[str]) -> tuple[str | None, str | None]:
    """(bucket, key) from the host and raw path; key None for bucket-level requests."""
    if not raw_path.startswith("/"):
        raise errors.InvalidURI()
    hostname = _strip_port(host)
    for configured in suffixes:
        suffix = _strip_port(configured)
        if suffix and hostname.endswith("." + suffix):
            bucket = hostname[: -len(suffix) - 1]
            key_raw = raw_path[1:]
            return bucket, (_decode(key_raw) if key_raw else None)
    bucket_raw, _slash, key_raw = raw_path[1:].partition("/")
    if not bucket_raw:
        return None, None
    return _decode(bucket_raw), (_decode(key_raw) if key_raw else None)


def _not_implemented(action: str) -> errors.S3Error:
    return errors.NotImplemented(f"{action} is not implemented by Coffer.")


def route(
    method: str,
    host: str,
    raw_path: str,
    query: Mapping[str, str] | Iterable[tuple[str, str]] | Any,
    headers: Mapping[str, str] | Any | None = None,
    *,
    virtual_host_suffixes: Sequence[str] = (),
) -> Operation:
    """Decide which S3 action a request is.

    Args:
        method: HTTP method (any case).
        host: the Host header (port allowed, stripped).
        raw_path: the path as sent, percent-encoded, without the query.
        query: decoded (name, value) pairs or a mapping / multidict.
        headers: case-insensitive mapping (multidict) or a dict with lowercase keys; used for
            ``x-amz-copy-source`` (CopyObject, UploadPartCopy).
        virtual_host_suffixes: endpoint host names (e.g. ``s3.example.com``) under which
            ``bucket.s3.example.com`` names a bucket.

    Raises:
        InvalidBucketName, InvalidURI (undecodable path), NotImplemented (known but unsupported
        actions), MethodNotAllowed (a method the resource does not have), InvalidRequest.
    """
    method = method.upper()
    bucket, key = _target(host, raw_path, virtual_host_suffixes)
    params = _query_names(query)
    if bucket is None:
        if method in ("GET", "HEAD"):
            return Operation("ListBuckets", None, None)
        raise errors.MethodNotAllowed(resource="/")
    validate_bucket_name(bucket)
    if key is None:
        return Operation(_bucket_action(method, params), bucket, None)
    copy_source = _header(headers, "x-amz-copy-source")
    return Operation(_object_action(method, params, copy_source is not None, bucket, key), bucket, key)


def _bucket_action(method: str, params: dict[str, str]) -> str:
    subresources = [name for name in params if name in _BUCKET_SUBRESOURCES]
    if method == "HEAD":
        return "HeadBucket"
    if method == "GET":
        if "uploads" in params:
            return "ListMultipartUploads"
        if "location" in params:
            return "GetBucketLocation"
        if "versioning" in params:
            return "GetBucketVersioning"
        if subresources:
            raise _not_implemented(("List" if subresources[0] == "versions" else "Get")
                                   + _BUCKET_SUBRESOURCES[subresources[0]])
        if params.get("list-type") == "2":
            return "ListObjectsV2"
        return "ListObjects"
    if method == "PUT":
        if subresources:
            raise _not_implemented("Put" + _BUCKET_SUBRESOURCES[subresources[0]])
        return "CreateBucket"
    if method == "DELETE":
        if subresources:
            raise _not_implemented("Delete" + _BUCKET_SUBRESOURCES[subresources[0]])
        return "DeleteBucket"
    if method == "POST":
        if "delete" in params:
            return "DeleteObjects"
        raise _not_implemented("PostObject")
    raise errors.MethodNotAllowed()


def _object_action(method: str, params: dict[str, str], copy: bool, bucket: str, key: str) -> str:
    subresources = [name for name in params if name in _OBJECT_SUBRESOURCES]
    if method == "HEAD":
        return "HeadObject"
    if method == "GET":
        if "uploadId" in params:
            return "ListParts"
        if subresources:
            raise _not_implemented("Get" + _OBJECT_SUBRESOURCES[subresources[0]])
        return "GetObject"
    if method == "PUT":
        if subresources:
            raise _not_implemented("Put" + _OBJECT_SUBRESOURCES[subresources[0]])
        if "partNumber" in params or "uploadId" in params:
            if "partNumber" not in params or "uploadId" not in params:
                raise errors.InvalidRequest("UploadPart needs both partNumber and uploadId.")
            return "UploadPartCopy" if copy else "UploadPart"
        return "CopyObject" if copy else "PutObject"
    if method == "DELETE":
        if subresources:
            raise _not_implemented("Delete" + _OBJECT_SUBRESOURCES[subresources[0]])
        return "AbortMultipartUpload" if "uploadId" in params else "DeleteObject"
    if method == "POST":
        if "uploads" in params:
            return "CreateMultipartUpload"
        if "uploadId" in params:
            return "CompleteMultipartUpload"
        if subresources:
            raise _not_implemented(_OBJECT_SUBRESOURCES[subresources[0]])
        raise errors.MethodNotAllowed(resource=f"/{bucket}/{key}")
    raise errors.MethodNotAllowed(resource=f"/{bucket}/{key}")
