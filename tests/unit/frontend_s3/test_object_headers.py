"""Range parsing, preconditions and metadata headers of S3 objects."""

from __future__ import annotations

import email.utils

import pytest

from frontend.s3 import errors
from frontend.s3.handlers_bucket import decode_continuation_token, encode_continuation_token
from frontend.s3.object_headers import (
    ByteRange,
    NotModified,
    check_preconditions,
    parse_range,
    system_metadata,
    user_metadata,
)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-99", 1000, ByteRange(0, 100, 1000)),
        ("bytes=100-", 1000, ByteRange(100, 1000, 1000)),
        ("bytes=-100", 1000, ByteRange(900, 1000, 1000)),
        ("bytes=-5000", 1000, ByteRange(0, 1000, 1000)),
        ("bytes=990-5000", 1000, ByteRange(990, 1000, 1000)),
        ("bytes=999-999", 1000, ByteRange(999, 1000, 1000)),
        (None, 1000, None),
        ("bytes=0-1,5-6", 1000, None),  # several ranges: S3 serves the whole object
        ("items=0-1", 1000, None),
        ("bytes=9-3", 1000, None),
        ("bytes=abc", 1000, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=1000-", 1000), ("bytes=0-", 0), ("bytes=-0", 10)])
def test_unsatisfiable_range(header: str, size: int) -> None:
    with pytest.raises(errors.InvalidRange):
        parse_range(header, size)


def test_content_range_header() -> None:
    assert ByteRange(0, 100, 1000).content_range() == "bytes 0-99/1000"


ETAG = '"0123456789abcdef0123456789abcdef"'
MODIFIED = 1_700_000_000.5


def test_if_match() -> None:
    check_preconditions({"If-Match": ETAG}, ETAG, MODIFIED)
    check_preconditions({"If-Match": "*"}, ETAG, MODIFIED)
    with pytest.raises(errors.PreconditionFailed):
        check_preconditions({"If-Match": '"other"'}, ETAG, MODIFIED)


def test_if_none_match() -> None:
    with pytest.raises(NotModified):
        check_preconditions({"If-None-Match": ETAG.strip('"')}, ETAG, MODIFIED)
    check_preconditions({"If-None-Match": '"other"'}, ETAG, MODIFIED)


def test_modified_since() -> None:
    later = email.utils.formatdate(MODIFIED + 10, usegmt=True)
    earlier = email.utils.formatdate(MODIFIED - 10, usegmt=True)
    with pytest.raises(NotModified):
        check_preconditions({"If-Modified-Since": later}, ETAG, MODIFIED)
    check_preconditions({"If-Modified-Since": earlier}, ETAG, MODIFIED)
    with pytest.raises(errors.PreconditionFailed):
        check_preconditions({"If-Unmodified-Since": earlier}, ETAG, MODIFIED)
    check_preconditions({"If-Unmodified-Since": later}, ETAG, MODIFIED)


def test_user_metadata_is_lowercased_and_limited() -> None:
    assert user_metadata({"X-Amz-Meta-Color": "blue", "Content-Type": "x"}) == {"color": "blue"}
    with pytest.raises(errors.MetadataTooLarge):
        user_metadata({"x-amz-meta-big": "v" * 3000})


def test_aws_chunked_is_not_a_stored_content_encoding() -> None:
    assert system_metadata({"Content-Encoding": "aws-chunked"}) == {}
    assert system_metadata({"Content-Encoding": "aws-chunked,gzip", "Cache-Control": "no-cache"}) == {
        "Content-Encoding": "gzip", "Cache-Control": "no-cache"}


def test_continuation_token_round_trip() -> None:
    for key in ["", "a/b/c", "ünïcødé/../key with spaces"]:
        assert decode_continuation_token(encode_continuation_token(key)) == key
    with pytest.raises(errors.InvalidArgument):
        decode_continuation_token("not-a-token!!")
