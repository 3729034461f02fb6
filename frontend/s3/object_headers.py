"""Object metadata carried in HTTP headers: user metadata, system metadata, ranges, preconditions.

Sources: Amazon S3 API Reference (PutObject, GetObject, HeadObject) and RFC 9110 sections 13
(conditional requests) and 14 (range requests).
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from dataclasses import dataclass

from frontend.config import MAX_USER_METADATA_BYTES
from frontend.s3 import errors
from frontend.s3.context import http_date
from metadata.store import WriteCondition

USER_METADATA_PREFIX = "x-amz-meta-"
SYSTEM_METADATA_HEADERS = ("Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language",
                           "Expires")
DEFAULT_CONTENT_TYPE = "binary/octet-stream"


def user_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """Collect ``x-amz-meta-*`` headers as ``{name (lowercase, prefix removed): value}``.

    Raises:
        errors.MetadataTooLarge: names and values exceed 2 KiB of UTF-8 in total (S3's limit).
    """
    result: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith(USER_METADATA_PREFIX):
            result[lowered[len(USER_METADATA_PREFIX):]] = value
    size = sum(len(k.encode()) + len(v.encode()) for k, v in result.items())
    if size > MAX_USER_METADATA_BYTES:
        raise errors.MetadataTooLarge()
    return result


def system_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """Collect the standard headers S3 stores with an object (Cache-Control, Content-Encoding, ...).

    ``aws-chunked`` is a transfer framing, not a content coding, so it is dropped from
    Content-Encoding as S3 does.
    """
    result: dict[str, str] = {}
    for name in SYSTEM_METADATA_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        if name == "Content-Encoding":
            codings = [c.strip() for c in value.split(",") if c.strip() and c.strip() != "aws-chunked"]
            if not codings:
                continue
            value = ", ".join(codings)
        result[name] = value
    return result


@dataclass(frozen=True)
class ByteRange:
    """An inclusive-exclusive byte range ``[start, end)`` of an object of ``size`` bytes."""

    start: int
    end: int
    size: int

    def content_range(self) -> str:
        """The ``Content-Range`` header value, e.g. ``bytes 0-99/1000``."""
        return f"bytes {self.start}-{self.end - 1}/{self.size}"


def parse_range(value: str | None, size: int) -> ByteRange | None:
    """Parse a ``Range: bytes=...`` header against an object of ``size`` bytes (RFC 9110 14.1.2).

    Returns None when the whole object should be served (no header, a syntax S3 ignores, or several
    ranges, which S3 does not support and answers with the whole object).

    Raises:
        errors.InvalidRange: the range starts at or past the end of the object.
    """
    if not value:
        return None
    unit, _, spec = value.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not first:
        if not last.isdigit():
            return None
        suffix = int(last)
        if suffix == 0:
            raise errors.InvalidRange(ActualObjectSize=size, RangeRequested=value)
        start = max(0, size - suffix)
        end = size
    else:
        if not first.isdigit() or (last and not last.isdigit()):
            return None
        start = int(first)
        end = size if not last else min(size, int(last) + 1)
        if last and int(last) < start:
            return None
    if start >= size:
        raise errors.InvalidRange(ActualObjectSize=size, RangeRequested=value)
    return ByteRange(start, end, size)


def _parse_http_date(value: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed.timestamp()


def _etag_matches(condition: str, etag: str) -> bool:
    candidates = [c.strip() for c in condition.split(",")]
    bare = etag.strip('"')
    return any(c == "*" or c.strip('"') == bare for c in candidates)


class NotModified(Exception):
    """The conditional GET/HEAD should answer 304 Not Modified."""


def check_preconditions(headers: Mapping[str, str], etag: str, last_modified: float) -> None:
    """Evaluate If-Match / If-Unmodified-Since / If-None-Match / If-Modified-Since (RFC 9110 13.2.2).

    Last-Modified has one-second resolution in HTTP, so comparisons use whole seconds.

    Raises:
        errors.PreconditionFailed: If-Match or If-Unmodified-Since fails (412).
        NotModified: If-None-Match or If-Modified-Since says the client's copy is current (304).
    """
    modified = int(last_modified)
    if_match = headers.get("If-Match")
    if if_match is not None:
        if not _etag_matches(if_match, etag):
            raise errors.PreconditionFailed(Condition="If-Match")
    else:
        since = headers.get("If-Unmodified-Since")
        when = _parse_http_date(since) if since else None
        if when is not None and modified > when:
            raise errors.PreconditionFailed(Condition="If-Unmodified-Since")
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        if _etag_matches(if_none_match, etag):
            raise NotModified()
    else:
        since = headers.get("If-Modified-Since")
        when = _parse_http_date(since) if since else None
        if when is not None and modified <= when:
            raise NotModified()


def write_condition(headers: Mapping[str, str]) -> WriteCondition | None:
    """The conditional-write headers of a PutObject or CompleteMultipartUpload (S3 supports
    ``If-None-Match: *`` and ``If-Match: <etag>``), evaluated by the metadata transaction.

    Raises:
        errors.NotImplemented: ``If-None-Match`` with anything but ``*`` (S3 answers the same).
    """
    if_match = headers.get("If-Match")
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None and if_none_match.strip() != "*":
        raise errors.NotImplemented("If-None-Match on writes supports only '*'", Header="If-None-Match")
    if if_match is None and if_none_match is None:
        return None
    return WriteCondition(if_match=if_match, if_none_match=if_none_match is not None)


def object_response_headers(*, etag: str, last_modified: float, content_type: str,
                            user_meta: Mapping[str, str], system_meta: Mapping[str, str]) -> dict[str, str]:
    """Headers describing a stored object, for GET and HEAD responses."""
    headers = {
        "ETag": etag,
        "Last-Modified": http_date(last_modified),
        "Content-Type": content_type or DEFAULT_CONTENT_TYPE,
        "Accept-Ranges": "bytes",
    }
    headers.update(system_meta)
    for name, value in user_meta.items():
        headers[USER_METADATA_PREFIX + name] = value
    return headers


# GetObject query parameters that override response headers (presigned download links use them).
RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}
