"""Sans-IO incremental decoder for ``Content-Encoding: aws-chunked`` request bodies.

Public API:
    AwsChunkedDecoder(mode: str, auth_context: AuthContext | None = None,
                      trailer_names: Iterable[str] = ())
        .feed(data: bytes | bytearray | memoryview) -> list[memoryview]   decoded payload pieces
        .finish() -> dict[str, str]                  trailers (lowercase names, without the
                                                      x-amz-trailer-signature)
        .decoded_length: int                          payload bytes produced so far
        .done: bool                                   the terminating chunk (and trailers) was read
    SUPPORTED_MODES: the x-amz-content-sha256 values this decoder handles.
    parse_trailer_header(value) -> tuple[str, ...]    lowercase names of an ``x-amz-trailer`` header

Modes (the request's ``x-amz-content-sha256``):
    STREAMING-AWS4-HMAC-SHA256-PAYLOAD: ``hex-size;chunk-signature=<sig>\\r\\n<data>\\r\\n`` chunks,
        each signature chained from the previous one starting at the request (seed) signature,
        ending with a 0-size chunk (also signed) and ``\\r\\n``.
    STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER: the same, then after the 0-size chunk the trailer
        lines ``name:value\\r\\n``, ``x-amz-trailer-signature:<sig>\\r\\n`` and ``\\r\\n``.
    STREAMING-UNSIGNED-PAYLOAD-TRAILER: ``hex-size\\r\\n<data>\\r\\n`` chunks, the 0-size chunk, the
        trailer lines and ``\\r\\n`` (what boto3 sends over HTTPS with a checksum).

Sources: Amazon S3 API Reference, "Signature Calculations for the Authorization Header:
Transferring Payload in Multiple Chunks (Chunked Upload)" and "... Including Trailing Headers".

Payload pieces are memoryview slices of the buffers given to ``feed`` (no copy): the caller must
not modify those buffers while it holds the pieces. A chunk's signature can only be checked once
all its bytes have arrived, so its payload is handed out before the check: a SignatureDoesNotMatch
from ``feed``/``finish`` means the whole body must be discarded (nothing may become visible).
Signed modes hash every payload byte with SHA-256 (CPU work: run large bodies off the event loop).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from enum import Enum, auto

from frontend.s3 import errors
from frontend.s3.errors import IncompleteBody, InvalidArgument, InvalidRequest, SignatureDoesNotMatch
from frontend.s3.sigv4 import (
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    AuthContext,
    chunk_signature,
    constant_time_equal,
    trailer_signature,
)

__all__ = ["SUPPORTED_MODES", "AwsChunkedDecoder", "parse_trailer_header"]

SUPPORTED_MODES = frozenset({STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER})
MAX_LINE = 4096  # bytes: a chunk header or trailer line longer than this is hostile
MAX_TRAILERS = 16
_MAX_SIZE_DIGITS = 16  # hex digits of a chunk size (64-bit)
_CHUNK_HEADER = re.compile(rb"([0-9a-fA-F]+)((?:;[^\r\n]*)?)")
_SIGNATURE_EXTENSION = re.compile(rb";chunk-signature=([0-9a-f]{64})")
_TRAILER_SIGNATURE = "x-amz-trailer-signature"


def parse_trailer_header(value: str | None) -> tuple[str, ...]:
    """Lowercase trailer names from an ``x-amz-trailer`` header (comma separated); () for None."""
    if not value:
        return ()
    return tuple(name.strip().lower() for name in value.split(",") if name.strip())


class _State(Enum):
    CHUNK_HEADER = auto()
    CHUNK_DATA = auto()
    CHUNK_CRLF = auto()
    FINAL_CRLF = auto()  # after the 0-size chunk without trailers
    TRAILER = auto()
    DONE = auto()


class AwsChunkedDecoder:
    """Incrementally strip aws-chunked framing, verify chunk signatures and collect trailers.

    Args:
        mode: the request's x-amz-content-sha256 value (one of SUPPORTED_MODES).
        auth_context: the verified request (sigv4.verify_request); required for signed modes,
            its ``signature`` seeds the chunk-signature chain.
        trailer_names: the names declared in ``x-amz-trailer``; trailers not declared are refused
            and declared ones must arrive.

    Raises (constructor): NotImplemented for ECDSA (SigV4a) streaming, InvalidArgument for other
    unknown modes, InvalidRequest when a signed mode has no auth context.
    """

    def __init__(self, mode: str, auth_context: AuthContext | None = None,
                 trailer_names: Iterable[str] = ()) -> None:
        if mode not in SUPPORTED_MODES:
            if mode.startswith("STREAMING-AWS4-ECDSA"):
                raise errors.NotImplemented("SigV4a (ECDSA) streaming uploads are not supported.")
            raise InvalidArgument(f"Unsupported x-amz-content-sha256 {mode!r} for aws-chunked.")
        self._signed = mode in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER)
        self._has_trailer = mode in (STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER)
        if self._signed and auth_context is None:
            raise InvalidRequest("A signed aws-chunked body needs the request's signature.")
        self._auth = auth_context
        self._previous_signature = auth_context.signature if auth_context else ""
        self._declared = frozenset(name.lower() for name in trailer_names)
        self._state = _State.CHUNK_HEADER
        self._line = bytearray()
        self._remaining = 0  # payload bytes left in the current chunk
        self._chunk_signature = b""
        self._chunk_hash = hashlib.sha256()
        self._crlf_seen = 0
        self._trailers: dict[str, str] = {}
        self._trailer_signature: str | None = None
        self.decoded_length = 0

    @property
    def done(self) -> bool:
        """True once the terminating chunk and any trailers have been read."""
        return self._state is _State.DONE

    # ------------------------------------------------------------------ feeding

    def feed(self, data: bytes | bytearray | memoryview) -> list[memoryview]:
        """Consume the next bytes of the body; return the payload bytes they complete.

        Raises InvalidRequest (malformed framing or trailers, data after the end),
        SignatureDoesNotMatch (a chunk or trailer signature is wrong).
        """
        view = memoryview(data).cast("B")
        pieces: list[memoryview] = []
        position, end = 0, len(view)
        while position < end:
            state = self._state
            if state is _State.CHUNK_DATA:
                take = min(self._remaining, end - position)
                piece = view[position:position + take]
                if self._signed:
                    self._chunk_hash.update(piece)
                pieces.append(piece)
                self._remaining -= take
                self.decoded_length += take
                position += take
                if self._remaining == 0:
                    self._state = _State.CHUNK_CRLF
                    self._crlf_seen = 0
            elif state in (_State.CHUNK_CRLF, _State.FINAL_CRLF):
                position = self._consume_crlf(view, position)
            elif state in (_State.CHUNK_HEADER, _State.TRAILER):
                line, position = self._read_line(view, position)
                if line is not None:
                    if state is _State.CHUNK_HEADER:
                        self._on_chunk_header(line)
                    else:
                        self._on_trailer_line(line)
            else:
                raise InvalidRequest("Unexpected data after the end of the aws-chunked body.")
        return pieces

    def finish(self) -> dict[str, str]:
        """Signal the end of the body; return the trailers (lowercase name -> value).

        Raises IncompleteBody when the body stopped before its terminating chunk (or trailers),
        InvalidRequest when a declared trailer is missing, SignatureDoesNotMatch when the trailer
        signature is missing in the signed trailer mode.
        """
        if self._state is _State.FINAL_CRLF and self._crlf_seen == 0:
            # Some clients end right after the 0-size chunk header.
            self._state = _State.DONE
        elif self._state is _State.TRAILER and not self._line and (
                self._trailers or self._trailer_signature is not None):
            # Lenient about a missing final blank line once trailers arrived.
            self._end_trailers()
        if self._state is not _State.DONE:
            raise IncompleteBody("The aws-chunked body ended before its terminating chunk.")
        return dict(self._trailers)

    # ------------------------------------------------------------------ internals

    def _consume_crlf(self, view: memoryview, position: int) -> int:
        expected = b"\r\n"
        while position < len(view) and self._crlf_seen < 2:
            if view[position] != expected[self._crlf_seen]:
                raise InvalidRequest("Malformed aws-chunked body: chunk data not followed by CRLF.")
            self._crlf_seen += 1
            position += 1
        if self._crlf_seen == 2:
            if self._state is _State.FINAL_CRLF:
                self._state = _State.DONE
            else:
                self._verify_chunk()
                self._state = _State.CHUNK_HEADER
        return position

    def _read_line(self, view: memoryview, position: int) -> tuple[bytes | None, int]:
        """Accumulate one CRLF-terminated line; return (line without CRLF or None, new position)."""
        window = bytes(view[position:position + MAX_LINE + 2 - len(self._line)])
        newline = window.find(b"\n")
        if newline < 0:
            self._line += window
            if len(self._line) > MAX_LINE + 1:
                raise InvalidRequest("Malformed aws-chunked body: line too long.")
            return None, position + len(window)
        self._line += window[:newline + 1]
        line = bytes(self._line)
        self._line.clear()
        if not line.endswith(b"\r\n"):
            raise InvalidRequest("Malformed aws-chunked body: line not terminated by CRLF.")
        return line[:-2], position + newline + 1

    def _on_chunk_header(self, line: bytes) -> None:
        match = _CHUNK_HEADER.fullmatch(line)
        if match is None or len(match.group(1)) > _MAX_SIZE_DIGITS:
            raise InvalidRequest("Malformed aws-chunked body: bad chunk header.")
        size = int(match.group(1), 16)
        if self._signed:
            signature = _SIGNATURE_EXTENSION.fullmatch(match.group(2))
            if signature is None:
                raise SignatureDoesNotMatch("The chunk header carries no valid chunk-signature.")
            self._chunk_signature = signature.group(1)
            self._chunk_hash = hashlib.sha256()
        if size > 0:
            self._remaining = size
            self._state = _State.CHUNK_DATA
            return
        if self._signed:
            self._verify_chunk()  # the 0-size chunk is signed too
        if self._has_trailer:
            self._state = _State.TRAILER
        else:
            self._state = _State.FINAL_CRLF
            self._crlf_seen = 0

    def _verify_chunk(self) -> None:
        if not self._signed:
            return
        assert self._auth is not None
        expected = chunk_signature(self._auth.signing_key, self._auth.amz_date, self._auth.scope,
                                   self._previous_signature, self._chunk_hash.hexdigest())
        provided = self._chunk_signature.decode("ascii")
        if not constant_time_equal(expected, provided):
            raise SignatureDoesNotMatch("A chunk signature of the aws-chunked body does not match.")
        self._previous_signature = expected

    def _on_trailer_line(self, line: bytes) -> None:
        if not line:
            self._end_trailers()
            return
        name_bytes, colon, value_bytes = line.partition(b":")
        if not colon:
            raise InvalidRequest("Malformed aws-chunked trailer line.")
        try:
            name = name_bytes.decode("ascii").strip().lower()
            value = value_bytes.decode("ascii").strip()
        except UnicodeDecodeError as error:
            raise InvalidRequest("Malformed aws-chunked trailer line.") from error
        if self._trailer_signature is not None:
            raise InvalidRequest("Trailer lines after x-amz-trailer-signature.")
        if name == _TRAILER_SIGNATURE:
            if not self._signed:
                raise InvalidRequest("x-amz-trailer-signature in an unsigned body.")
            self._trailer_signature = value
            return
        if name in self._trailers or len(self._trailers) >= MAX_TRAILERS:
            raise InvalidRequest(f"Repeated or too many trailers ({name!r}).")
        if name not in self._declared:
            raise InvalidRequest(f"The trailer {name!r} was not declared in x-amz-trailer.")
        self._trailers[name] = value

    def _end_trailers(self) -> None:
        missing = self._declared - self._trailers.keys()
        if missing:
            raise InvalidRequest(f"Declared trailers missing: {', '.join(sorted(missing))}.")
        if self._signed:
            assert self._auth is not None
            if self._trailer_signature is None:
                raise SignatureDoesNotMatch("The aws-chunked body carries no x-amz-trailer-signature.")
            canonical = "".join(f"{name}:{self._trailers[name]}\n" for name in sorted(self._trailers))
            expected = trailer_signature(self._auth.signing_key, self._auth.amz_date, self._auth.scope,
                                         self._previous_signature, canonical.encode("ascii"))
            if not constant_time_equal(expected, self._trailer_signature.lower()):
                raise SignatureDoesNotMatch("The trailer signature of the aws-chunked body does not match.")
        self._state = _State.DONE
