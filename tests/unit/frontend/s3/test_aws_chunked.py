"""aws-chunked decoding: AWS's signed example, boto3's unsigned-trailer bodies, hostile framing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest

from frontend.s3 import checksums, errors, sigv4
from frontend.s3.aws_chunked import AwsChunkedDecoder, parse_trailer_header
from tests.unit.frontend.s3 import botocore_requests as boto

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AMZ_DATE = "20130524T000000Z"
SCOPE = "20130524/us-east-1/s3/aws4_request"
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
KEY = sigv4.signing_key(AWS_SECRET, "20130524", "us-east-1")
# "Transferring Payload in Multiple Chunks", Example: PUT Object: 66560 bytes of "a".
AWS_CHUNKS = [
    (65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
    (1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
    (0, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"),
]


def aws_context(mode: str = sigv4.STREAMING_SIGNED) -> sigv4.AuthContext:
    return sigv4.AuthContext(access_key_id="AKIAIOSFODNN7EXAMPLE", signature=SEED, signing_key=KEY,
                             scope=SCOPE, amz_date=AMZ_DATE, payload_hash=mode, presigned=False)


def aws_example_body() -> bytes:
    body = bytearray()
    for size, signature in AWS_CHUNKS:
        body += f"{size:x};chunk-signature={signature}\r\n".encode() + b"a" * size + b"\r\n"
    return bytes(body)


def signed_body(payload_chunks: Iterable[bytes], trailers: dict[str, str] | None = None) -> bytes:
    """A signed aws-chunked body built with the (AWS-vector-checked) chunk signer."""
    body = bytearray()
    previous = SEED
    for chunk in [*payload_chunks, b""]:
        previous = sigv4.chunk_signature(KEY, AMZ_DATE, SCOPE, previous, hashlib.sha256(chunk).hexdigest())
        body += f"{len(chunk):x};chunk-signature={previous}\r\n".encode() + chunk
        if chunk or trailers is None:
            body += b"\r\n"
    if trailers is not None:
        canonical = "".join(f"{name}:{trailers[name]}\n" for name in sorted(trailers))
        for name, value in trailers.items():
            body += f"{name}:{value}\r\n".encode()
        signature = sigv4.trailer_signature(KEY, AMZ_DATE, SCOPE, previous, canonical.encode())
        body += f"x-amz-trailer-signature:{signature}\r\n\r\n".encode()
    return bytes(body)


def decode(decoder: AwsChunkedDecoder, body: bytes, piece_size: int) -> tuple[bytes, dict[str, str]]:
    out = bytearray()
    for start in range(0, len(body), piece_size):
        for piece in decoder.feed(body[start:start + piece_size]):
            out += piece
    return bytes(out), decoder.finish()


@pytest.mark.parametrize("piece_size", [1, 7, 86, 4096, 65538, 1 << 20])
def test_aws_example_body_decodes_in_any_split(piece_size: int) -> None:
    decoder = AwsChunkedDecoder(sigv4.STREAMING_SIGNED, aws_context())
    payload, trailers = decode(decoder, aws_example_body(), piece_size)
    assert payload == b"a" * 66560
    assert trailers == {}
    assert decoder.decoded_length == 66560
    assert decoder.done


def test_aws_example_body_length_matches_content_length() -> None:
    assert len(aws_example_body()) == 66824  # the example's Content-Length


def test_payload_pieces_are_views_of_the_input() -> None:
    body = aws_example_body()
    pieces = AwsChunkedDecoder(sigv4.STREAMING_SIGNED, aws_context()).feed(body)
    assert all(isinstance(piece, memoryview) and piece.obj is body for piece in pieces)


def test_corrupted_payload_byte_fails_its_chunk() -> None:
    body = bytearray(aws_example_body())
    body[100] = ord("b")
    with pytest.raises(errors.SignatureDoesNotMatch):
        decode(AwsChunkedDecoder(sigv4.STREAMING_SIGNED, aws_context()), bytes(body), 4096)


def test_wrong_final_chunk_signature() -> None:
    body = aws_example_body().replace(AWS_CHUNKS[2][1].encode(), b"0" * 64)
    with pytest.raises(errors.SignatureDoesNotMatch):
        decode(AwsChunkedDecoder(sigv4.STREAMING_SIGNED, aws_context()), body, 4096)


def test_chunks_out_of_order_fail() -> None:
    first = b"x" * 10
    second = b"y" * 10
    body = signed_body([first, second])
    header_one = body[: body.index(b"\r\n") + 2]
    chunk_one = header_one + first + b"\r\n"
    rest = body[len(chunk_one):]
    chunk_two = rest[: rest.index(b"\r\n") + 2 + 10 + 2]
    swapped = chunk_two + chunk_one + rest[len(chunk_two):]
    with pytest.raises(errors.SignatureDoesNotMatch):
        decode(AwsChunkedDecoder(sigv4.STREAMING_SIGNED, aws_context()), swapped, 1000)


def test_missing_chunk_signature_is_refused() -> None:
    with pytest.raises(errors.SignatureDoesNotMatch):
        AwsChunkedDecoder(sigv4.STREAMING_SIGNED, aws_context()).feed(b"5\r\nhello\r\n")


@pytest.mark.parametrize("cut", [1, 100, 65600, 66824 - 90, 66824 - 5])
def test_truncated_body_is_incomplete(cut: int) -> None:
    decoder = AwsChunkedDecoder(sigv4.STREAMING_SIGNED, aws_context())
    with pytest.raises(errors.IncompleteBody):
        decode(decoder, aws_example_body()[:cut], 4096)


def test_missing_final_crlf_is_tolerated() -> None:
    decoder = AwsChunkedDecoder(sigv4.STREAMING_SIGNED, aws_context())
    payload, _ = decode(decoder, aws_example_body()[:-2], 4096)
    assert len(payload) == 66560


def test_data_after_the_end_is_refused() -> None:
    with pytest.raises(errors.InvalidRequest):
        decode(AwsChunkedDecoder(sigv4.STREAMING_SIGNED, aws_context()), aws_example_body() + b"0\r\n", 4096)


@pytest.mark.parametrize("body", [
    b"zz;chunk-signature=" + b"0" * 64 + b"\r\n",
    b"5;chunk-signature=" + b"0" * 64 + b"\n",
    b"1" * 5000,
    b"1" * 20 + b";chunk-signature=" + b"0" * 64 + b"\r\n",
])
def test_malformed_chunk_headers(body: bytes) -> None:
    with pytest.raises((errors.InvalidRequest, errors.SignatureDoesNotMatch)):
        decode(AwsChunkedDecoder(sigv4.STREAMING_SIGNED, aws_context()), body, 100)


def test_chunk_data_not_followed_by_crlf() -> None:
    decoder = AwsChunkedDecoder(sigv4.STREAMING_UNSIGNED_TRAILER, trailer_names=())
    with pytest.raises(errors.InvalidRequest):
        decoder.feed(b"3\r\nabcXY")


# ----------------------------------------------------------------------------- signed trailers


@pytest.mark.parametrize("piece_size", [1, 13, 100000])
def test_signed_trailer_body(piece_size: int) -> None:
    payload = b"0123456789" * 1000
    crc = checksums.new_hasher("CRC32C")
    crc.update(payload)
    body = signed_body([payload[:8192], payload[8192:]], {"x-amz-checksum-crc32c": crc.b64()})
    decoder = AwsChunkedDecoder(sigv4.STREAMING_SIGNED_TRAILER, aws_context(sigv4.STREAMING_SIGNED_TRAILER),
                                trailer_names=["x-amz-checksum-crc32c"])
    decoded, trailers = decode(decoder, body, piece_size)
    assert decoded == payload
    assert trailers == {"x-amz-checksum-crc32c": crc.b64()}


def test_signed_trailer_tampered_value() -> None:
    body = signed_body([b"data"], {"x-amz-checksum-crc32": "AAAAAA=="}).replace(b"AAAAAA==", b"AAAAAQ==")
    decoder = AwsChunkedDecoder(sigv4.STREAMING_SIGNED_TRAILER, aws_context(), ["x-amz-checksum-crc32"])
    with pytest.raises(errors.SignatureDoesNotMatch):
        decode(decoder, body, 64)


def test_signed_trailer_without_signature() -> None:
    body = signed_body([b"data"], {"x-amz-checksum-crc32": "AAAAAA=="})
    body = body[: body.index(b"x-amz-trailer-signature")] + b"\r\n"
    decoder = AwsChunkedDecoder(sigv4.STREAMING_SIGNED_TRAILER, aws_context(), ["x-amz-checksum-crc32"])
    with pytest.raises(errors.SignatureDoesNotMatch):
        decode(decoder, body, 64)


def test_signed_mode_needs_auth_context() -> None:
    with pytest.raises(errors.InvalidRequest):
        AwsChunkedDecoder(sigv4.STREAMING_SIGNED)
    with pytest.raises(errors.NotImplemented):
        AwsChunkedDecoder("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD")
    with pytest.raises(errors.InvalidArgument):
        AwsChunkedDecoder(sigv4.UNSIGNED_PAYLOAD)


# ----------------------------------------------------------------------------- boto3 unsigned trailers


@pytest.mark.parametrize("size", [0, 11, (1 << 20) + 5])
def test_boto3_unsigned_trailer_body(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    s3 = boto.client("https://127.0.0.1:9443")
    request = boto.capture(lambda: s3.put_object(Bucket="bkt", Key="k", Body=boto.stream(payload),
                                                 ChecksumAlgorithm="CRC32C"))
    auth = sigv4.verify_request(request.method, request.raw_path, request.query, request.headers,
                                {boto.ACCESS_KEY: boto.SECRET_KEY}.get, datetime.now(UTC))
    assert auth.payload_hash == sigv4.STREAMING_UNSIGNED_TRAILER
    names = parse_trailer_header(request.headers["x-amz-trailer"])
    assert names == ("x-amz-checksum-crc32c",)
    decoder = AwsChunkedDecoder(auth.payload_hash, auth, names)
    decoded, trailers = decode(decoder, request.body, 65536)
    assert decoded == payload
    assert decoder.decoded_length == int(request.headers["x-amz-decoded-content-length"])
    crc = checksums.new_hasher("CRC32C")
    crc.update(payload)
    assert trailers == {"x-amz-checksum-crc32c": crc.b64()}


def test_undeclared_or_missing_trailers() -> None:
    body = b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    with pytest.raises(errors.InvalidRequest):
        decode(AwsChunkedDecoder(sigv4.STREAMING_UNSIGNED_TRAILER, trailer_names=["x-amz-checksum-sha256"]),
               body, 100)
    with pytest.raises(errors.InvalidRequest):
        decode(AwsChunkedDecoder(sigv4.STREAMING_UNSIGNED_TRAILER, trailer_names=[]), body, 100)
    payload, trailers = decode(
        AwsChunkedDecoder(sigv4.STREAMING_UNSIGNED_TRAILER, trailer_names=["x-amz-checksum-crc32"]), body, 5)
    assert payload == b"abc" and trailers == {"x-amz-checksum-crc32": "AAAAAA=="}


def test_unsigned_trailer_body_truncated_in_trailers() -> None:
    body = b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAA"
    decoder = AwsChunkedDecoder(sigv4.STREAMING_UNSIGNED_TRAILER, trailer_names=["x-amz-checksum-crc32"])
    with pytest.raises(errors.IncompleteBody):
        decode(decoder, body, 100)
