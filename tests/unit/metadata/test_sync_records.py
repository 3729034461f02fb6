"""The pure helpers of metadata/sync_records.py: path rules, cursors, conflicted-copy names, errors."""

from __future__ import annotations

import base64

import pytest

from metadata import MetadataError
from metadata.sync_records import (
    InvalidSyncPath,
    InvalidSyncRequest,
    PathExists,
    SyncChunksMissing,
    SyncError,
    SyncForbidden,
    SyncNotFound,
    UploadClosed,
    conflicted_copy_name,
    decode_cursor,
    encode_cursor,
    validate_path,
)

DAY = 1_795_305_600.0  # 2026-11-22 00:00:00 UTC


@pytest.mark.parametrize(
    "path",
    ["a", "a/b/c.txt", "with space/ünïcode ✓", ".bashrc", "a/..b", "a/.../c", "x" * 4096, "é" * 2048],
)
def test_valid_paths(path: str) -> None:
    assert validate_path(path) == path


@pytest.mark.parametrize(
    "path",
    ["", "/a", "a/", "a//b", ".", "..", "a/./b", "a/../b", "a\x00b", "x" * 4097, "é" * 2049, "\udc80"],
)
def test_invalid_paths(path: str) -> None:
    with pytest.raises(InvalidSyncPath):
        validate_path(path)


def test_cursor_round_trip() -> None:
    for namespace_id, seq in [(1, 0), (7, 123456789), (2**40, 2**62)]:
        cursor = encode_cursor(namespace_id, seq)
        assert cursor.startswith("c1.") and "=" not in cursor
        assert decode_cursor(cursor) == (namespace_id, seq)
    assert encode_cursor(3, 17) == "c1." + base64.urlsafe_b64encode(b"3.17").rstrip(b"=").decode()


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    ["", "c1.", "c2." + _b64("1.2"), _b64("1.2"), "c1.!!!", "c1." + _b64("1"), "c1." + _b64("1.2.3"),
     "c1." + _b64("a.2"), "c1." + _b64("0.5"), "c1." + _b64("-1.5"), "c1." + _b64("01.5"), "c1." + _b64("1.-2"),
     "c1." + _b64("1.2") + "=", "c1.A"],
)  # fmt: skip
def test_decode_cursor_refuses_garbage(cursor: str) -> None:
    with pytest.raises(ValueError):
        decode_cursor(cursor)


def test_encode_cursor_refuses_bad_positions() -> None:
    with pytest.raises(ValueError):
        encode_cursor(0, 1)
    with pytest.raises(ValueError):
        encode_cursor(1, -1)


@pytest.mark.parametrize(
    ("path", "attempt", "expected"),
    [
        ("docs/report.pdf", 1, "docs/report (laptop's conflicted copy 2026-11-22).pdf"),
        ("docs/report.pdf", 2, "docs/report (laptop's conflicted copy 2026-11-22) (2).pdf"),
        ("Makefile", 1, "Makefile (laptop's conflicted copy 2026-11-22)"),
        ("Makefile", 3, "Makefile (laptop's conflicted copy 2026-11-22) (3)"),
        ("home/.bashrc", 1, "home/.bashrc (laptop's conflicted copy 2026-11-22)"),
        ("a.tar.gz", 1, "a.tar (laptop's conflicted copy 2026-11-22).gz"),
        ("v1.2/notes", 1, "v1.2/notes (laptop's conflicted copy 2026-11-22)"),
    ],
)
def test_conflicted_copy_name(path: str, attempt: int, expected: str) -> None:
    assert conflicted_copy_name(path, "laptop", DAY + 86399, attempt) == expected


def test_conflicted_copy_date_is_utc_and_attempt_positive() -> None:
    assert "2026-11-21" in conflicted_copy_name("f", "d", DAY - 1, 1)
    with pytest.raises(ValueError):
        conflicted_copy_name("f", "d", DAY, 0)


def test_errors_carry_api_codes() -> None:
    assert [(error.code, error.status) for error in (
        InvalidSyncPath, InvalidSyncRequest, SyncNotFound, SyncForbidden, PathExists, SyncChunksMissing, UploadClosed,
    )] == [
        ("InvalidSyncPath", 400), ("InvalidRequest", 400), ("NotFound", 404), ("Forbidden", 403),
        ("PathExists", 409), ("ChunksMissing", 409), ("UploadClosed", 409),
    ]  # fmt: skip
    error = SyncChunksMissing(["b", "a", "b"])
    assert error.missing == ["b", "a"] and isinstance(error, SyncError) and isinstance(error, MetadataError)
