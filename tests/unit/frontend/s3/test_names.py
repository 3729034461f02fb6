"""Bucket naming rules and key limits."""

from __future__ import annotations

import pytest

from frontend.s3 import errors
from frontend.s3.names import validate_bucket_name, validate_key

VALID = ["abc", "my-bucket", "my.bucket.name", "a" * 63, "1bucket", "bucket1", "a-b.c-d", "192.168.5.4x"]
INVALID = [
    "", "ab", "a" * 64, "MyBucket", "my_bucket", "-bucket", "bucket-", ".bucket", "bucket.", "my..bucket",
    "192.168.5.4", "xn--bucket", "sthree-bucket", "amzn-s3-demo-bucket", "bucket-s3alias", "bucket--ol-s3",
    "bucket.mrap", "bucket--x-s3", "bucket--table-s3", "bück", "my bucket", "a/b",
]


@pytest.mark.parametrize("name", VALID)
def test_valid_bucket_names(name: str) -> None:
    validate_bucket_name(name)


@pytest.mark.parametrize("name", INVALID)
def test_invalid_bucket_names(name: str) -> None:
    with pytest.raises(errors.InvalidBucketName) as failure:
        validate_bucket_name(name)
    assert failure.value.status == 400 and failure.value.bucket == name


def test_keys() -> None:
    for key in ["k", "../../etc/passwd", "//a//", "sp ace", "100%", "é" * 512, "x" * 1024]:
        validate_key(key)
    with pytest.raises(errors.KeyTooLongError):
        validate_key("x" * 1025)
    with pytest.raises(errors.KeyTooLongError):
        validate_key("é" * 513)  # 1026 bytes of UTF-8
    with pytest.raises(errors.InvalidArgument):
        validate_key("")
    with pytest.raises(errors.InvalidArgument):
        validate_key("\udcff")
