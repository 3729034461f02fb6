"""AWS Signature Version 2 verification for S3 (legacy, but still what boto3's
``generate_presigned_url`` produces by default): pure functions, no I/O.

Public API:
    is_sigv2(headers, query) -> bool
    verify_request(method, raw_path, query, headers, lookup_secret, now, bucket=None) -> AuthContext
        Header form ``Authorization: AWS <access key id>:<signature>`` and query form
        (``AWSAccessKeyId``, ``Signature``, ``Expires``). Raises AccessDenied (expired),
        InvalidAccessKeyId, SignatureDoesNotMatch, AuthorizationHeaderMalformed.

Source: Amazon S3 Developer Guide (2006-03-01), "Signing and Authenticating REST Requests":
StringToSign = Verb \\n Content-MD5 \\n Content-Type \\n Date-or-Expires \\n
CanonicalizedAmzHeaders CanonicalizedResource, signed with HMAC-SHA1 and base64-encoded. The
payload is not covered by a SigV2 signature, so bodies are treated as ``UNSIGNED-PAYLOAD``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from frontend.s3 import errors
from frontend.s3.sigv4 import UNSIGNED_PAYLOAD, AuthContext

# Sub-resources that are part of the canonicalized resource (the developer guide's list, plus
# the newer ones SDKs include, as botocore's HmacV1Auth does).
SUBRESOURCES = frozenset({
    "accelerate", "acl", "analytics", "cors", "delete", "inventory", "lifecycle", "location", "logging",
    "metrics", "notification", "object-lock", "partNumber", "policy", "replication", "requestPayment",
    "response-cache-control", "response-content-disposition", "response-content-encoding",
    "response-content-language", "response-content-type", "response-expires", "restore", "select",
    "select-type", "storageClass", "tagging", "torrent", "uploadId", "uploads", "versionId", "versioning",
    "versions", "website",
})
MAX_SKEW_SECONDS = 15 * 60


def _header(headers: Mapping[str, str] | Any, name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return "" if value is None else str(value)


def _amz_headers(headers: Mapping[str, str] | Any) -> str:
    collected: dict[str, list[str]] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith("x-amz-"):
            collected.setdefault(lowered, []).append(" ".join(str(value).split()))
    return "".join(f"{name}:{','.join(values)}\n" for name, values in sorted(collected.items()))


def canonical_resource(raw_path: str, query: Iterable[tuple[str, str]]) -> str:
    """The CanonicalizedResource: the raw (still percent-encoded) path plus sorted sub-resources."""
    parts = sorted((name, value) for name, value in query if name in SUBRESOURCES)
    if not parts:
        return raw_path
    rendered = "&".join(f"{name}={value}" if value else name for name, value in parts)
    return f"{raw_path}?{rendered}"


def string_to_sign(method: str, date_or_expires: str, raw_path: str, query: Iterable[tuple[str, str]],
                   headers: Mapping[str, str] | Any) -> str:
    """The SigV2 StringToSign of a request (see the module docstring for the layout)."""
    return (f"{method}\n{_header(headers, 'Content-MD5')}\n{_header(headers, 'Content-Type')}\n"
            f"{date_or_expires}\n{_amz_headers(headers)}{canonical_resource(raw_path, query)}")


def sign(secret: str, text: str) -> str:
    """Base64 of HMAC-SHA1(secret, text)."""
    return base64.b64encode(hmac.new(secret.encode(), text.encode("utf-8"), hashlib.sha1).digest()).decode()


def is_sigv2(headers: Mapping[str, str] | Any, query: Iterable[tuple[str, str]]) -> bool:
    """True when the request carries SigV2 credentials (header ``AWS ...`` or ``AWSAccessKeyId``)."""
    if _header(headers, "Authorization").startswith("AWS "):
        return True
    return any(name == "AWSAccessKeyId" for name, _ in query)


def verify_request(method: str, raw_path: str, query: list[tuple[str, str]], headers: Mapping[str, str] | Any,
                   lookup_secret: Callable[[str], str | None], now: datetime,
                   bucket: str | None = None) -> AuthContext:
    """Verify a SigV2-signed request and return its :class:`AuthContext`.

    ``raw_path`` is the path as sent; ``bucket`` is the addressed bucket (a virtual-hosted-style
    request's canonical resource is ``/bucket`` + path). ``query`` holds percent-decoded pairs.

    Raises:
        errors.AccessDenied: a presigned URL past its Expires time.
        errors.InvalidAccessKeyId: unknown access key id.
        errors.SignatureDoesNotMatch: the signature differs.
        errors.AuthorizationHeaderMalformed: the Authorization header cannot be parsed.
        errors.RequestTimeTooSkewed: a header-signed request dated over 15 minutes away.
    """
    parameters = dict(query)
    authorization = _header(headers, "Authorization")
    presigned = not authorization.startswith("AWS ")
    if presigned:
        access_key_id = parameters.get("AWSAccessKeyId", "")
        provided = parameters.get("Signature", "")
        expires = parameters.get("Expires", "")
        if not expires.isdigit() or not provided:
            raise errors.AccessDenied("Query-string authentication requires the Signature, Expires and "
                                      "AWSAccessKeyId parameters")
        if int(expires) < now.timestamp():
            raise errors.AccessDenied("Request has expired", Expires=expires)
        date_field = expires
    else:
        credential, _, provided = authorization[4:].strip().rpartition(":")
        access_key_id = credential.strip()
        if not access_key_id or not provided:
            raise errors.AuthorizationHeaderMalformed()
        date_field = "" if _header(headers, "x-amz-date") else _header(headers, "Date")
        stamp = _header(headers, "x-amz-date") or _header(headers, "Date")
        _check_skew(stamp, now)
    secret = lookup_secret(access_key_id)
    if secret is None:
        raise errors.InvalidAccessKeyId(AWSAccessKeyId=access_key_id)
    # A virtual-hosted-style request signs "/bucket" + path; trying both forms costs one more HMAC.
    candidates = [raw_path] + ([f"/{bucket}{raw_path}"] if bucket else [])
    for path in candidates:
        text = string_to_sign(method, date_field, path, query, headers)
        if hmac.compare_digest(sign(secret, text).encode(), provided.encode("utf-8", "surrogateescape")):
            return AuthContext(access_key_id=access_key_id, signature=provided, signing_key=b"", scope="",
                               amz_date="", payload_hash=UNSIGNED_PAYLOAD, presigned=presigned)
    raise errors.SignatureDoesNotMatch(
        StringToSign=string_to_sign(method, date_field, candidates[0], query, headers),
        AWSAccessKeyId=access_key_id)


def _check_skew(stamp: str, now: datetime) -> None:
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(stamp)
    except (TypeError, ValueError) as exc:
        raise errors.AccessDenied("AWS authentication requires a valid Date or x-amz-date header") from exc
    if when.tzinfo is None:  # "-0000" means UTC with unknown local offset (RFC 5322 3.3)
        when = when.replace(tzinfo=UTC)
    if abs((now - when).total_seconds()) > MAX_SKEW_SECONDS:
        raise errors.RequestTimeTooSkewed(RequestTime=stamp, ServerTime=now.isoformat())
