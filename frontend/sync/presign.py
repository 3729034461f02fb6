"""Presigned URLs: AWS Signature Version 4 query-string authentication, the signing side.

The sync API hands clients short-lived URLs for single chunk transfers (``/-/chunks/{hash}``); the
frontend verifies them with :func:`frontend.s3.sigv4.verify_request` like any presigned S3 URL.
They are signed with the internal **sync presign key**, an ordinary access key whose owner is
:data:`SYNC_PRESIGN_OWNER`; S3 requests signed with it are refused (frontend/s3/dispatch.py), so the
key only ever authorizes the chunk transfers the sync API chose.

Source: Amazon S3 API Reference, "Authenticating Requests: Using Query Parameters (AWS Signature
Version 4)": the canonical request is ``METHOD\\nURI\\nQUERY\\nhost:HOST\\n\\nhost\\nUNSIGNED-PAYLOAD``
where QUERY holds the caller's parameters plus ``X-Amz-Algorithm``, ``X-Amz-Credential``,
``X-Amz-Date``, ``X-Amz-Expires`` and ``X-Amz-SignedHeaders`` (``host``); ``X-Amz-Signature`` is
appended. The canonical helpers are sigv4.py's, so signer and verifier cannot drift apart.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime

from frontend.s3.sigv4 import (
    ALGORITHM,
    MAX_PRESIGNED_EXPIRES,
    UNSIGNED_PAYLOAD,
    canonical_query_string,
    canonical_uri,
    signing_key,
    string_to_sign,
)

#: The owner of the access key that signs chunk transfer URLs (created at frontend start).
SYNC_PRESIGN_OWNER = "coffer-sync"

_DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_host(base_url: str) -> str:
    """The ``Host`` header a client sends for ``base_url`` (``scheme://host[:port]``): the network
    location, without the scheme's default port (HTTP clients omit it, and botocore signs it so).

    Raises:
        ValueError: ``base_url`` has no scheme or host.
    """
    parts = urllib.parse.urlsplit(base_url)
    if not parts.scheme or not parts.hostname:
        raise ValueError(f"not an absolute URL: {base_url!r}")
    netloc = parts.netloc.rpartition("@")[2]
    if parts.port is not None and parts.port == _DEFAULT_PORTS.get(parts.scheme.lower()):
        netloc = netloc.rsplit(":", 1)[0]
    return netloc


def presign_url(method: str, base_url: str, path: str, query: Mapping[str, str], access_key: str, secret: str,
                region: str, expires_in: int, now: datetime | None = None) -> str:
    """A SigV4 presigned URL for ``method`` on ``base_url`` + ``path`` with ``query``.

    Args:
        method: HTTP method (``GET``, ``PUT``); the URL is valid for that method only.
        base_url: ``scheme://host[:port]`` the client will use (its Host header is signed).
        path: the decoded path (``/-/chunks/<hash>``); URI-encoded here.
        query: extra query parameters (decoded names and values), covered by the signature.
        access_key, secret: the signing access key id and its secret.
        region: the region of the credential scope (the frontend's ``--region``).
        expires_in: seconds the URL stays valid, 1..604800 (X-Amz-Expires).
        now: the signing time (aware or naive UTC); the current time when None.

    Returns:
        The absolute URL: ``base_url`` + encoded path + ``?`` + the sorted, encoded query including
        the ``X-Amz-*`` parameters and ``X-Amz-Signature``. Payload is unsigned (UNSIGNED-PAYLOAD):
        the chunk handler checks the body's SHA-256 against the chunk's name instead.

    Raises:
        ValueError: ``expires_in`` out of range, a query parameter named ``X-Amz-*``, or a bad
            ``base_url``.
    """
    if not 1 <= expires_in <= MAX_PRESIGNED_EXPIRES:
        raise ValueError(f"expires_in must be 1..{MAX_PRESIGNED_EXPIRES} seconds, not {expires_in}")
    if any(name.lower().startswith("x-amz-") for name in query):
        raise ValueError("X-Amz-* query parameters are the signature's own")
    moment = (now or datetime.now(UTC))
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    scope = f"{date}/{region}/s3/aws4_request"
    host = canonical_host(base_url)
    pairs = [*query.items(),
             ("X-Amz-Algorithm", ALGORITHM),
             ("X-Amz-Credential", f"{access_key}/{scope}"),
             ("X-Amz-Date", amz_date),
             ("X-Amz-Expires", str(expires_in)),
             ("X-Amz-SignedHeaders", "host")]
    encoded_path = canonical_uri(urllib.parse.quote(path, safe="/~"))
    query_string = canonical_query_string(pairs)
    canonical_request = "\n".join([method.upper(), encoded_path, query_string, f"host:{host}\n", "host",
                                   UNSIGNED_PAYLOAD])
    to_sign = string_to_sign(amz_date, scope, canonical_request)
    signature = hmac.new(signing_key(secret, date, region, "s3"), to_sign.encode("utf-8"),
                         hashlib.sha256).hexdigest()
    return f"{base_url.rstrip('/')}{encoded_path}?{query_string}&X-Amz-Signature={signature}"
