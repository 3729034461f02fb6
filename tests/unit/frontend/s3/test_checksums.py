"""Checksums agree with botocore's own implementations (what the SDK sends) and S3's rules."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib

import pytest
from botocore import httpchecksum

from frontend.s3 import checksums, errors

DATA = os.urandom(200_000)
BOTOCORE = {
    "CRC32": httpchecksum.CrtCrc32Checksum,
    "CRC32C": httpchecksum.CrtCrc32cChecksum,
    "CRC64NVME": httpchecksum.CrtCrc64NvmeChecksum,
    "SHA1": httpchecksum.Sha1Checksum,
    "SHA256": httpchecksum.Sha256Checksum,
}


@pytest.mark.parametrize("algorithm", sorted(BOTOCORE))
def test_incremental_hashers_match_botocore(algorithm: str) -> None:
    reference = BOTOCORE[algorithm]()
    reference.update(DATA)
    hasher = checksums.new_hasher(algorithm.lower())
    view = memoryview(DATA)
    for start in range(0, len(DATA), 65_537):
        hasher.update(view[start:start + 65_537])
    assert hasher.digest() == reference.digest()
    assert hasher.b64() == reference.b64digest()
    assert hasher.hexdigest() == reference.digest().hex()
    assert checksums.decode_checksum(algorithm, hasher.b64()) == hasher.digest()


def test_known_values_and_md5() -> None:
    crc = checksums.new_hasher("CRC32")
    crc.update(b"hello world")
    assert crc.b64() == "DUoRhQ=="  # what boto3 sends for b"hello world"
    md5 = checksums.new_hasher("MD5")
    md5.update(b"hello world")
    assert md5.digest() == hashlib.md5(b"hello world").digest()
    with pytest.raises(errors.InvalidRequest):
        checksums.new_hasher("CRC16")


def test_headers() -> None:
    assert checksums.HEADER_FOR["CRC64NVME"] == "x-amz-checksum-crc64nvme"
    assert checksums.ALGORITHM_FOR_HEADER["x-amz-checksum-sha256"] == "SHA256"
    assert checksums.normalize_algorithm(" crc32c ") == "CRC32C"
    with pytest.raises(errors.InvalidRequest):
        checksums.normalize_algorithm("md5")
    assert checksums.parse_checksum_headers({"x-amz-checksum-crc32": "DUoRhQ==", "host": "h"}) == {
        "CRC32": "DUoRhQ=="}
    assert checksums.parse_checksum_headers({}) == {}
    with pytest.raises(errors.InvalidDigest):
        checksums.parse_checksum_headers({"x-amz-checksum-crc32": "DUoRhQ"})
    with pytest.raises(errors.InvalidDigest):
        checksums.parse_checksum_headers({"x-amz-checksum-sha1": "DUoRhQ=="})
    with pytest.raises(errors.InvalidRequest):
        checksums.parse_checksum_headers({"x-amz-checksum-crc32": "DUoRhQ==",
                                          "x-amz-checksum-crc32c": "DUoRhQ=="})
    with pytest.raises(errors.InvalidRequest):
        checksums.parse_checksum_headers({"x-amz-checksum-crc32": "DUoRhQ==",
                                          "x-amz-sdk-checksum-algorithm": "SHA256"})


def test_composite_checksum_of_parts() -> None:
    parts = [DATA[:80_000], DATA[80_000:160_000], DATA[160_000:]]
    digests = [hashlib.sha256(part).digest() for part in parts]
    expected = base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode() + "-3"
    assert checksums.composite_checksum("SHA256", digests) == expected
    as_text = [base64.b64encode(digest).decode() for digest in digests]
    assert checksums.composite_checksum("SHA256", as_text) == expected


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME"])
def test_full_object_crc_from_parts(algorithm: str) -> None:
    parts = [DATA[:1], DATA[1:70_000], DATA[70_000:]]
    part_digests = []
    for part in parts:
        hasher = checksums.new_hasher(algorithm)
        hasher.update(part)
        part_digests.append((hasher.digest(), len(part)))
    whole = checksums.new_hasher(algorithm)
    whole.update(DATA)
    assert checksums.full_object_crc(algorithm, part_digests) == whole.digest()
    if algorithm == "CRC32":
        assert int.from_bytes(whole.digest(), "big") == zlib.crc32(DATA)
    with pytest.raises(errors.InvalidRequest):
        checksums.full_object_crc("SHA256", part_digests)
