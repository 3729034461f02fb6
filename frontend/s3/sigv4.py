"""AWS Signature Version 4 verification for S3 requests: pure functions, no I/O.

Public API:
    verify_request(method, raw_path, query, headers, lookup_secret, now, region=None) -> AuthContext
        Header-signed (``Authorization: AWS4-HMAC-SHA256 ...``) and presigned (``X-Amz-*`` query)
        requests. Raises AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch,
        RequestTimeTooSkewed, AuthorizationHeaderMalformed, AuthorizationQueryParametersError,
        InvalidRequest, InvalidArgument (frontend.s3.errors).
    AuthContext(access_key_id, signature, signing_key, scope, amz_date, payload_hash, presigned,
                signed_headers)
    signing_key(secret, date, region, service="s3") -> bytes
    chunk_signature(signing_key, amz_date, scope, previous_signature, chunk_sha256_hex) -> str
    trailer_signature(signing_key, amz_date, scope, previous_signature, canonical_trailers) -> str
    canonical_uri(raw_path) -> str, canonical_query_string(pairs) -> str,
    canonical_headers(headers, signed_headers) -> str, string_to_sign(amz_date, scope, canonical_request)
    constant_time_equal(a, b) -> bool
    Payload-hash constants: UNSIGNED_PAYLOAD, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER, EMPTY_SHA256.

Sources: AWS General Reference "Signature Version 4 signing process"; Amazon S3 API Reference
"Authenticating Requests: Using the Authorization Header", "Authenticating Requests: Using Query
Parameters", "Signature Calculations for the Authorization Header: Transferring Payload in Multiple
Chunks (Chunked Upload)" and "... Including Trailing Headers". S3 differs from other services: the
canonical URI is the path URI-encoded once (not twice) and is not normalized (``..`` and ``//`` stay).
SigV2 is not supported.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote

from frontend.s3.errors import (
    AccessDenied,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    InvalidAccessKeyId,
    InvalidArgument,
    InvalidRequest,
    RequestTimeTooSkewed,
    S3Error,
    SignatureDoesNotMatch,
)

__all__ = [
    "EMPTY_SHA256",
    "MAX_PRESIGNED_EXPIRES",
    "MAX_SKEW",
    "STREAMING_SIGNED",
    "STREAMING_SIGNED_TRAILER",
    "STREAMING_UNSIGNED_TRAILER",
    "UNSIGNED_PAYLOAD",
    "AuthContext",
    "canonical_headers",
    "canonical_query_string",
    "canonical_uri",
    "chunk_signature",
    "constant_time_equal",
    "signing_key",
    "string_to_sign",
    "trailer_signature",
    "verify_request",
]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_PAYLOAD_KEYWORDS = frozenset({UNSIGNED_PAYLOAD, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER,
                               STREAMING_UNSIGNED_TRAILER})
MAX_SKEW = timedelta(minutes=15)
MAX_PRESIGNED_EXPIRES = 604_800  # seconds: one week, the AWS limit
_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_SIGNED_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_QUERY_AUTH_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                      "X-Amz-SignedHeaders", "X-Amz-Signature")

HeadersLike = Mapping[str, str] | Any  # a dict with lowercase keys or a multidict (has getall)
QueryLike = Iterable[tuple[str, str]] | Mapping[str, str]


@dataclass(frozen=True)
class AuthContext:
    """The outcome of a verified request; what the aws-chunked decoder needs to chain signatures.

    Attributes:
        access_key_id: the caller's access key id.
        signature: the request (seed) signature, 64 lowercase hex chars.
        signing_key: the derived SigV4 signing key (32 bytes).
        scope: ``date/region/s3/aws4_request``.
        amz_date: the request timestamp in ISO 8601 basic format (``20130524T000000Z``).
        payload_hash: the x-amz-content-sha256 value signed (hex SHA-256, ``UNSIGNED-PAYLOAD`` or a
            ``STREAMING-*`` keyword); ``UNSIGNED-PAYLOAD`` for presigned URLs without that header.
        presigned: True for query-string (presigned URL) authentication.
        signed_headers: the lowercase header names covered by the signature.
    """

    access_key_id: str
    signature: str
    signing_key: bytes
    scope: str
    amz_date: str
    payload_hash: str
    presigned: bool
    signed_headers: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- primitives


def _hmac(key: bytes, message: str | bytes) -> bytes:
    data = message.encode("utf-8") if isinstance(message, str) else message
    return hmac.new(key, data, hashlib.sha256).digest()


@lru_cache(maxsize=256)
def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    """Derive the SigV4 signing key: HMAC chain over date (``YYYYMMDD``), region, service,
    ``aws4_request`` starting from ``"AWS4" + secret``. Returns 32 bytes. Cached: one derivation
    per key, day and region."""
    k_date = _hmac(("AWS4" + secret).encode("utf-8"), date)
    k_region = _hmac(k_date, region)
    k_service = _hmac(k_region, service)
    return _hmac(k_service, "aws4_request")


def constant_time_equal(a: str, b: str) -> bool:
    """Compare two signatures without leaking the position of the first difference."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _uri_encode(value: str, *, keep_slash: bool) -> str:
    """AWS UriEncode: every byte but the unreserved ``A-Za-z0-9-_.~`` is %XX (uppercase hex)."""
    return quote(value, safe="/~" if keep_slash else "~")


def canonical_uri(raw_path: str) -> str:
    """S3 canonical URI: the decoded path URI-encoded once, ``/`` kept; no normalization.

    ``raw_path`` is the path as sent (percent-encoded, no query). An empty path is ``/``.
    """
    return _uri_encode(unquote(raw_path), keep_slash=True) if raw_path else "/"


def canonical_query_string(pairs: Iterable[tuple[str, str]]) -> str:
    """Sort the URI-encoded (name, value) pairs by name then value and join ``n=v`` with ``&``.

    ``pairs`` are decoded (name, value) tuples; a name without ``=`` has value ``""``.
    """
    encoded = sorted((_uri_encode(name, keep_slash=False), _uri_encode(value, keep_slash=False))
                     for name, value in pairs)
    return "&".join(f"{name}={value}" for name, value in encoded)


def _header_values(headers: HeadersLike, name: str) -> list[str]:
    """All values of header ``name`` (lowercase) from a multidict or a lowercase-keyed dict."""
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return [str(value) for value in getall(name, [])]
    value = headers.get(name)
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(item) for item in value]


def _header(headers: HeadersLike, name: str) -> str | None:
    values = _header_values(headers, name)
    return ",".join(values) if values else None


def _header_names(headers: HeadersLike) -> set[str]:
    return {str(name).lower() for name in headers}


def canonical_headers(headers: HeadersLike, signed_headers: Iterable[str]) -> str:
    """``name:value\\n`` for each signed header (sorted, lowercase), values trimmed with inner
    runs of spaces collapsed, repeated headers joined with ``,``."""
    lines = []
    for name in signed_headers:
        values = [" ".join(value.split()) for value in _header_values(headers, name)]
        lines.append(f"{name}:{','.join(values)}\n")
    return "".join(lines)


def string_to_sign(amz_date: str, scope: str, canonical_request: str) -> str:
    """``AWS4-HMAC-SHA256\\n<amz_date>\\n<scope>\\n<hex sha256(canonical_request)>``."""
    digest = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def chunk_signature(key: bytes, amz_date: str, scope: str, previous_signature: str,
                    chunk_sha256_hex: str) -> str:
    """Signature of one aws-chunked chunk, chained from the previous (or seed) signature.

    String to sign: ``AWS4-HMAC-SHA256-PAYLOAD\\n<amz_date>\\n<scope>\\n<previous>\\n
    <sha256("")>\\n<sha256(chunk)>``. Returns 64 lowercase hex chars.
    """
    to_sign = (f"AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{previous_signature}\n"
               f"{EMPTY_SHA256}\n{chunk_sha256_hex}")
    return hmac.new(key, to_sign.encode("ascii"), hashlib.sha256).hexdigest()


def trailer_signature(key: bytes, amz_date: str, scope: str, previous_signature: str,
                      canonical_trailers: bytes) -> str:
    """Signature of the trailing headers, chained from the final (0-length) chunk's signature.

    ``canonical_trailers`` is ``name:value\\n`` per trailer (lowercase names, sorted).
    String to sign: ``AWS4-HMAC-SHA256-TRAILER\\n<amz_date>\\n<scope>\\n<previous>\\n
    <sha256(canonical_trailers)>``.
    """
    digest = hashlib.sha256(canonical_trailers).hexdigest()
    to_sign = f"AWS4-HMAC-SHA256-TRAILER\n{amz_date}\n{scope}\n{previous_signature}\n{digest}"
    return hmac.new(key, to_sign.encode("ascii"), hashlib.sha256).hexdigest()


# ----------------------------------------------------------------------------- parsing helpers


def _pairs(query: QueryLike) -> list[tuple[str, str]]:
    items = query.items() if hasattr(query, "items") else query
    return [(str(name), str(value)) for name, value in items]


def _parse_amz_date(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, _AMZ_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def _aware(now: datetime) -> datetime:
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Credential:
    access_key_id: str
    date: str
    region: str
    scope: str


def _parse_credential(value: str, region: str | None, error: type[S3Error]) -> _Credential:
    """Split ``AKID/YYYYMMDD/region/s3/aws4_request``; ``error`` is raised on any defect."""
    parts = value.split("/")
    if len(parts) != 5 or not parts[0]:
        raise error(f"Error parsing the Credential parameter: {value!r}.")
    access_key_id, date, scope_region, service, terminator = parts
    if len(date) != 8 or not date.isdigit():
        raise error(f"Invalid credential date {date!r}; expecting YYYYMMDD.")
    if not scope_region:
        raise error("The credential scope names no region.")
    if region is not None and scope_region != region:
        raise error(f"The authorization header is malformed; the region '{scope_region}' is wrong; "
                    f"expecting '{region}'", Region=region)
    if service != "s3":
        raise error(f"The credential scope names service {service!r}; expecting 's3'.")
    if terminator != "aws4_request":
        raise error(f"The credential scope must end with 'aws4_request', not {terminator!r}.")
    return _Credential(access_key_id, date, scope_region, f"{date}/{scope_region}/s3/aws4_request")


def _parse_signed_headers(value: str, error: type[S3Error]) -> tuple[str, ...]:
    names = tuple(value.split(";"))
    if not value or any(not _SIGNED_HEADER_NAME.fullmatch(name) for name in names):
        raise error(f"Invalid SignedHeaders {value!r}.")
    if "host" not in names:
        raise error("SignedHeaders must include host.")
    return names


def _parse_authorization(value: str) -> dict[str, str]:
    """``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`` -> its fields."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        if algorithm == "AWS":
            raise InvalidRequest("The authorization mechanism you have provided is not supported. "
                                 "Please use AWS4-HMAC-SHA256.")
        raise AuthorizationHeaderMalformed(f"Unsupported authorization algorithm {algorithm!r}.")
    fields: dict[str, str] = {}
    for component in rest.split(","):
        name, equals, field_value = component.strip().partition("=")
        if not equals or name in fields:
            raise AuthorizationHeaderMalformed("The authorization header is malformed.")
        fields[name] = field_value.strip()
    missing = [name for name in ("Credential", "SignedHeaders", "Signature") if name not in fields]
    if missing:
        raise AuthorizationHeaderMalformed(
            f"The authorization header is malformed; missing {', '.join(missing)}.")
    return fields


def _request_time(headers: HeadersLike) -> tuple[str, datetime]:
    """The signed timestamp: ``x-amz-date`` (ISO 8601 basic) or, failing that, ``Date`` (RFC 7231).

    Returns (amz_date string used in the string to sign, aware datetime).
    """
    amz_date = _header(headers, "x-amz-date")
    if amz_date is not None:
        parsed = _parse_amz_date(amz_date)
        if parsed is None:
            raise AccessDenied("AWS authentication requires a valid Date or x-amz-date header")
        return amz_date, parsed
    date = _header(headers, "date")
    if date is not None:
        try:
            parsed = parsedate_to_datetime(date)
        except (TypeError, ValueError):
            parsed = None
        if parsed is not None:
            parsed = _aware(parsed).astimezone(UTC)
            return parsed.strftime(_AMZ_DATE_FORMAT), parsed
    raise AccessDenied("AWS authentication requires a valid Date or x-amz-date header")


def _check_signature(expected_signature: str, provided: str, access_key_id: str,
                     to_sign: str, canonical_request: str) -> None:
    if not constant_time_equal(expected_signature, provided.lower()):
        raise SignatureDoesNotMatch(
            AWSAccessKeyId=access_key_id,
            StringToSign=to_sign,
            SignatureProvided=provided,
            CanonicalRequest=canonical_request,
        )


@dataclass(frozen=True)
class _Signed:
    """What a signature covers, apart from the path."""

    method: str
    query_string: str
    headers_block: str
    signed_headers: tuple[str, ...]
    payload_hash: str
    amz_date: str
    scope: str


def _verify_against_paths(raw_path: str, signed: _Signed, key: bytes, provided: str,
                          access_key_id: str) -> None:
    """Check ``provided`` against the canonical request.

    SDKs send paths URI-encoded exactly as SigV4 encodes them, so the re-encoded decoded path and
    the raw path coincide. Some clients leave characters like ``!``, ``'`` or ``+`` unencoded on
    the wire and sign the wire form; both forms name the same key, so either is accepted.
    """
    candidates = [canonical_uri(raw_path)]
    if raw_path and raw_path != candidates[0]:
        candidates.append(raw_path)
    first_failure: SignatureDoesNotMatch | None = None
    for path in candidates:
        canonical_request = "\n".join([signed.method.upper(), path, signed.query_string,
                                       signed.headers_block, ";".join(signed.signed_headers),
                                       signed.payload_hash])
        to_sign = string_to_sign(signed.amz_date, signed.scope, canonical_request)
        expected = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        try:
            _check_signature(expected, provided, access_key_id, to_sign, canonical_request)
            return
        except SignatureDoesNotMatch as failure:
            first_failure = first_failure or failure
    assert first_failure is not None
    raise first_failure


# ----------------------------------------------------------------------------- verification


def verify_request(
    method: str,
    raw_path: str,
    query: QueryLike,
    headers: HeadersLike,
    lookup_secret: Callable[[str], str | None],
    now: datetime,
    region: str | None = None,
) -> AuthContext:
    """Authenticate an S3 request signed with SigV4 (Authorization header or presigned query).

    Args:
        method: HTTP method (any case).
        raw_path: the path as sent on the wire, still percent-encoded, without the query.
        query: decoded (name, value) pairs in order (list, or a mapping / multidict with
            ``items()``).
        headers: case-insensitive multidict, or a dict with lowercase keys; repeated headers are
            joined with ``,``.
        lookup_secret: access key id -> secret access key, or None when unknown.
        now: the server's current time (naive values are taken as UTC).
        region: the region this endpoint serves; None accepts any region in the credential scope.

    Returns:
        AuthContext. The body is NOT checked here: the caller compares the body's SHA-256 with
        ``payload_hash`` (XAmzContentSHA256Mismatch) or decodes aws-chunked bodies with it.

    Raises:
        AccessDenied: no authentication ("Anonymous access is forbidden"), no valid date,
            expired presigned URL ("Request has expired"), unsigned x-amz-* headers.
        InvalidAccessKeyId, SignatureDoesNotMatch, RequestTimeTooSkewed (header auth, >15 min),
        AuthorizationHeaderMalformed, AuthorizationQueryParametersError, InvalidRequest (SigV2,
        missing x-amz-content-sha256), InvalidArgument (two auth mechanisms, bad payload hash).
    """
    pairs = _pairs(query)
    now = _aware(now).astimezone(UTC)
    authorization = _header(headers, "authorization")
    query_names = {name for name, _ in pairs}
    is_presigned = "X-Amz-Algorithm" in query_names or "X-Amz-Signature" in query_names or (
        "X-Amz-Credential" in query_names)
    if authorization is not None and is_presigned:
        raise InvalidArgument("Only one auth mechanism allowed; only the X-Amz-Algorithm query "
                              "parameter or the Authorization header should be specified")
    if is_presigned:
        return _verify_presigned(method, raw_path, pairs, headers, lookup_secret=lookup_secret,
                                 now=now, region=region)
    if authorization is None:
        if "AWSAccessKeyId" in query_names or "Signature" in query_names:
            raise InvalidRequest("The authorization mechanism you have provided is not supported. "
                                 "Please use AWS4-HMAC-SHA256.")
        raise AccessDenied("Anonymous access is forbidden")
    return _verify_header(method, raw_path, pairs, headers, authorization=authorization,
                          lookup_secret=lookup_secret, now=now, region=region)


def _verify_header(method: str, raw_path: str, pairs: list[tuple[str, str]], headers: HeadersLike, *,
                   authorization: str, lookup_secret: Callable[[str], str | None], now: datetime,
                   region: str | None) -> AuthContext:
    fields = _parse_authorization(authorization)
    credential = _parse_credential(fields["Credential"], region, AuthorizationHeaderMalformed)
    signed_headers = _parse_signed_headers(fields["SignedHeaders"], AuthorizationHeaderMalformed)
    provided = fields["Signature"]
    if not _HEX64.fullmatch(provided.lower()):
        raise AuthorizationHeaderMalformed("The Signature field must be 64 hexadecimal characters.")

    amz_date, request_time = _request_time(headers)
    if credential.date != amz_date[:8]:
        raise AuthorizationHeaderMalformed(
            f"Invalid credential date {credential.date!r}. It is not the same as X-Amz-Date "
            f"{amz_date[:8]!r}.")
    if abs(now - request_time) > MAX_SKEW:
        raise RequestTimeTooSkewed(
            RequestTime=amz_date,
            ServerTime=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            MaxAllowedSkewMilliseconds=int(MAX_SKEW.total_seconds() * 1000),
        )

    payload_hash = _header(headers, "x-amz-content-sha256")
    if payload_hash is None:
        raise InvalidRequest("Missing required header for this request: x-amz-content-sha256")
    if payload_hash not in _PAYLOAD_KEYWORDS and not _SHA256_HEX.fullmatch(payload_hash):
        raise InvalidArgument("x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                              "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, or a valid sha256 value.",
                              ArgumentName="x-amz-content-sha256", ArgumentValue=payload_hash)
    _refuse_unsigned_amz_headers(headers, signed_headers)

    secret = lookup_secret(credential.access_key_id)
    if secret is None:
        raise InvalidAccessKeyId(AWSAccessKeyId=credential.access_key_id)
    key = signing_key(secret, credential.date, credential.region, "s3")
    signed = _Signed(method, canonical_query_string(pairs), canonical_headers(headers, signed_headers),
                     signed_headers, payload_hash, amz_date, credential.scope)
    _verify_against_paths(raw_path, signed, key, provided, credential.access_key_id)
    return _context(credential, provided, key, amz_date, payload_hash, signed_headers, presigned=False)


def _context(credential: _Credential, provided: str, key: bytes, amz_date: str, payload_hash: str,
             signed_headers: tuple[str, ...], *, presigned: bool) -> AuthContext:
    """The AuthContext of a request whose signature has been verified."""
    return AuthContext(access_key_id=credential.access_key_id, signature=provided.lower(), signing_key=key,
                       scope=credential.scope, amz_date=amz_date, payload_hash=payload_hash,
                       presigned=presigned, signed_headers=signed_headers)


def _refuse_unsigned_amz_headers(headers: HeadersLike, signed_headers: Iterable[str],
                                 ignored: Iterable[str] = ()) -> None:
    """AWS rejects x-amz-* headers left out of the signature: they change the request's meaning
    (on a presigned PUT URL, an added ``x-amz-copy-source`` would turn it into a copy of any object).
    ``ignored`` names headers that are disregarded rather than trusted when unsigned."""
    signed, skip = set(signed_headers), set(ignored)
    unsigned = sorted(name for name in _header_names(headers)
                      if name.startswith("x-amz-") and name not in signed and name not in skip)
    if unsigned:
        raise AccessDenied("There were headers present in the request which were not signed",
                           HeadersNotSigned=", ".join(unsigned))


def _verify_presigned(method: str, raw_path: str, pairs: list[tuple[str, str]], headers: HeadersLike, *,
                      lookup_secret: Callable[[str], str | None], now: datetime,
                      region: str | None) -> AuthContext:
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in _QUERY_AUTH_PARAMS:
            if name in params:
                raise AuthorizationQueryParametersError(f"Repeated query parameter {name}.")
            params[name] = value
    missing = [name for name in _QUERY_AUTH_PARAMS if name not in params]
    if missing:
        raise AuthorizationQueryParametersError(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
            "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise AuthorizationQueryParametersError(
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"")
    credential = _parse_credential(params["X-Amz-Credential"], region,
                                   AuthorizationQueryParametersError)
    signed_headers = _parse_signed_headers(params["X-Amz-SignedHeaders"],
                                           AuthorizationQueryParametersError)
    _refuse_unsigned_amz_headers(headers, signed_headers, ignored=("x-amz-content-sha256",))
    provided = params["X-Amz-Signature"]
    if not _HEX64.fullmatch(provided.lower()):
        raise AuthorizationQueryParametersError("X-Amz-Signature must be 64 hexadecimal characters.")
    amz_date = params["X-Amz-Date"]
    request_time = _parse_amz_date(amz_date)
    if request_time is None:
        raise AuthorizationQueryParametersError(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    if credential.date != amz_date[:8]:
        raise AuthorizationQueryParametersError(
            f"Invalid credential date {credential.date!r}. It is not the same as X-Amz-Date.")
    expires_text = params["X-Amz-Expires"]
    if not expires_text.isdigit():
        raise AuthorizationQueryParametersError("X-Amz-Expires should be a number")
    expires = int(expires_text)
    if expires > MAX_PRESIGNED_EXPIRES:
        raise AuthorizationQueryParametersError(
            "X-Amz-Expires must be less than a week (in seconds) that is; 604800")
    server_time = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    if now > request_time + timedelta(seconds=expires):
        raise AccessDenied(
            "Request has expired",
            **{"X-Amz-Expires": expires_text,
               "Expires": (request_time + timedelta(seconds=expires)).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "ServerTime": server_time})
    if request_time - now > MAX_SKEW:
        raise AccessDenied("Request is not valid yet", ServerTime=server_time)

    # A presigned request may carry x-amz-content-sha256 when the signer covered it.
    signed_payload = _header(headers, "x-amz-content-sha256") if "x-amz-content-sha256" in signed_headers \
        else None
    payload_hash = signed_payload or UNSIGNED_PAYLOAD

    secret = lookup_secret(credential.access_key_id)
    if secret is None:
        raise InvalidAccessKeyId(AWSAccessKeyId=credential.access_key_id)
    key = signing_key(secret, credential.date, credential.region, "s3")
    unsigned_pairs = [(name, value) for name, value in pairs if name != "X-Amz-Signature"]
    signed = _Signed(method, canonical_query_string(unsigned_pairs),
                     canonical_headers(headers, signed_headers), signed_headers, payload_hash,
                     amz_date, credential.scope)
    _verify_against_paths(raw_path, signed, key, provided, credential.access_key_id)
    return _context(credential, provided, key, amz_date, payload_hash, signed_headers, presigned=True)
