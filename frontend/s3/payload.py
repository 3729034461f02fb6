"""Turning an S3 request body into verified payload bytes.

A :class:`Payload` yields the decoded payload of a PUT (plain, or ``aws-chunked`` with signed chunks
or unsigned chunks plus trailers) as pieces, feeds every integrity check the request asked for, and,
after the body has been stored but before anything becomes visible, :meth:`Payload.verify` compares
them: ``Content-MD5`` (RFC 1864), ``x-amz-content-sha256`` (SigV4 signed payload) and the flexible
checksums ``x-amz-checksum-*`` from headers or trailers (Amazon S3 user guide, "Checking object
integrity"). A mismatch raises the S3 error and the caller records nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from aiohttp import web

from frontend.s3 import checksums, errors
from frontend.s3.aws_chunked import AwsChunkedDecoder
from frontend.s3.sigv4 import AuthContext

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PREFIX = "STREAMING-"
READ_SIZE = 1024 * 1024


class Hasher(Protocol):
    """What an integrity check needs from a hash: incremental update."""

    def update(self, data: bytes | memoryview, /) -> Any:
        """Feed the next payload bytes."""


class _Sha256:
    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _content_md5(headers: Mapping[str, str]) -> bytes | None:
    value = headers.get("Content-MD5")
    if value is None:
        return None
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise errors.InvalidDigest() from exc
    if len(digest) != 16:
        raise errors.InvalidDigest()
    return digest


class Payload:
    """The payload of one request, decoded and checked as it streams.

    Args:
        request: the aiohttp request whose body is read (never whole: in pieces of <= 1 MiB).
        auth: the verified SigV4 context (gives the payload mode and the chunk-signing seed).
        checksum_algorithm: an algorithm to compute even when the client sent no value for it
            (e.g. the upload's ``ChecksumAlgorithm``), so it can be stored and returned.

    Raises (from the constructor, before any byte is read):
        errors.MissingContentLength: a body without Content-Length or decoded length.
        errors.InvalidDigest / errors.InvalidRequest: malformed Content-MD5 or checksum headers.
    """

    def __init__(self, request: web.Request, auth: AuthContext, checksum_algorithm: str | None = None) -> None:
        self._request = request
        headers = request.headers
        self.mode = auth.payload_hash or UNSIGNED_PAYLOAD
        self._decoder: AwsChunkedDecoder | None = None
        self._sha256: _Sha256 | None = None
        self._expected_md5 = _content_md5(headers)
        try:
            self._expected = checksums.parse_checksum_headers(headers)
        except errors.S3Error:
            raise
        except ValueError as exc:
            raise errors.InvalidRequest(str(exc)) from exc
        trailer_names = [name.strip().lower() for name in headers.get("x-amz-trailer", "").split(",")
                         if name.strip()]
        if trailer_names and not self.mode.endswith("-TRAILER"):
            # A declared trailer that the body framing cannot carry would never be compared.
            raise errors.InvalidRequest("x-amz-trailer needs a STREAMING-*-TRAILER x-amz-content-sha256")
        algorithms = set(self._expected)
        for name in trailer_names:
            algorithm = checksums.ALGORITHM_FOR_HEADER.get(name)
            if algorithm is None:
                raise errors.InvalidRequest(f"Unsupported trailer {name!r}")
            algorithms.add(algorithm)
        sdk_algorithm = headers.get("x-amz-sdk-checksum-algorithm")
        if sdk_algorithm:
            algorithms.add(checksums.normalize_algorithm(sdk_algorithm))
        if checksum_algorithm:
            algorithms.add(checksums.normalize_algorithm(checksum_algorithm))
        self.hashers: dict[str, checksums.Hasher] = {name: checksums.new_hasher(name) for name in algorithms}

        if self.mode.startswith(STREAMING_PREFIX):
            decoded = headers.get("x-amz-decoded-content-length")
            if decoded is None or not decoded.isdigit():
                raise errors.MissingContentLength("x-amz-decoded-content-length is required for aws-chunked")
            self.declared_length = int(decoded)
            self._decoder = AwsChunkedDecoder(self.mode, auth_context=auth, trailer_names=trailer_names)
        else:
            if request.content_length is None:
                raise errors.MissingContentLength()
            self.declared_length = request.content_length
            if self.mode != UNSIGNED_PAYLOAD:
                if len(self.mode) != 64:
                    raise errors.InvalidArgument("x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                                                 "a STREAMING-* mode or a hex SHA-256")
                self._sha256 = _Sha256()
        self._signed_chunks = self.mode.startswith("STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
        self.received = 0
        self._trailers: dict[str, str] = {}

    @property
    def observers(self) -> list[Hasher]:
        """The hashers that must see every payload byte, in order (for ``object_io.write_stream``)."""
        observers: list[Hasher] = list(self.hashers.values())
        if self._sha256 is not None:
            observers.append(self._sha256)
        return observers

    async def pieces(self) -> AsyncIterator[bytes | memoryview]:
        """Yield the payload in order, decoded from aws-chunked framing when present.

        Raises:
            errors.IncompleteBody: the connection ended before the declared length arrived, or more
                bytes arrived than declared.
            errors.SignatureDoesNotMatch: a signed chunk's signature is wrong.
        """
        content = self._request.content
        while True:
            data = await content.readany()
            if not data:
                break
            if self._decoder is not None:
                # Signed chunks are SHA-256'd by the decoder: do that off the event loop.
                decoded = (await asyncio.to_thread(self._decoder.feed, data) if self._signed_chunks
                           else self._decoder.feed(data))
                for piece in decoded:
                    self.received += len(piece)
                    if self.received > self.declared_length:
                        raise errors.IncompleteBody("The body is longer than x-amz-decoded-content-length")
                    yield piece
            else:
                self.received += len(data)
                if self.received > self.declared_length:
                    raise errors.IncompleteBody("The body is longer than Content-Length")
                yield data
        if self._decoder is not None:
            self._trailers = self._decoder.finish()
        if self.received != self.declared_length:
            raise errors.IncompleteBody()

    def verify(self, md5_digest: bytes) -> dict[str, str]:
        """Compare every integrity check with what the body hashed to.

        ``md5_digest``: the 16-byte MD5 of the payload (computed by the write path).
        Returns the verified checksums, algorithm -> base64 value, for storage.

        Raises:
            errors.BadDigest: Content-MD5 or an x-amz-checksum-* value does not match.
            errors.XAmzContentSHA256Mismatch: the signed payload hash does not match.
            errors.InvalidRequest: a trailer named in x-amz-trailer did not arrive.
        """
        if self._expected_md5 is not None and self._expected_md5 != md5_digest:
            raise errors.BadDigest()
        if self._sha256 is not None and self._sha256.hexdigest() != self.mode.lower():
            raise errors.XAmzContentSHA256Mismatch(
                ClientComputedContentSHA256=self.mode, S3ComputedContentSHA256=self._sha256.hexdigest())
        expected = dict(self._expected)
        for header, value in self._trailers.items():
            algorithm = checksums.ALGORITHM_FOR_HEADER.get(header.lower())
            if algorithm is not None:
                expected[algorithm] = value.strip()
        computed = {name: hasher.b64() for name, hasher in self.hashers.items()}
        for algorithm, value in expected.items():
            if computed.get(algorithm) != value:
                raise errors.BadDigest(f"The {algorithm} you specified did not match the calculated checksum.")
        return computed


SMALL_BODY_LIMIT = 1024 * 1024


async def read_small_body(request: web.Request, auth: AuthContext, limit: int = SMALL_BODY_LIMIT) -> bytes:
    """Read a small request document (XML) whole, with the same integrity checks as object bodies.

    ``limit``: the most bytes accepted.

    Raises:
        errors.MalformedXML: the body is larger than ``limit`` (request documents are small).
        errors.BadDigest / errors.XAmzContentSHA256Mismatch: as :meth:`Payload.verify`.
    """
    # Request documents may legitimately be absent (e.g. CreateBucket without configuration).
    no_length = request.content_length is None and not request.headers.get("x-amz-decoded-content-length")
    if no_length and not request.can_read_body:
        return b""
    payload = Payload(request, auth)
    if payload.declared_length > limit:
        raise errors.MalformedXML("The request document is too large")
    md5 = hashlib.md5()
    pieces: list[bytes] = []
    async for piece in payload.pieces():
        md5.update(piece)
        for hasher in payload.observers:
            hasher.update(piece)
        pieces.append(bytes(piece))
    payload.verify(md5.digest())
    return b"".join(pieces)
