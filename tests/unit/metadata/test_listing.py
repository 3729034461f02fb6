"""list_objects: S3 ListObjectsV2 semantics (prefix, delimiter, start_after, max_keys, pagination)
in UTF-8 binary order, checked by hand and against an in-memory model with hypothesis."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metadata import ListResult, SqliteMetadataStore
from tests.unit.metadata.builders import PinningStore, chunks, object_record

# --- The model -------------------------------------------------------------------------------


def model_entries(keys: set[str], prefix: str, delimiter: str, start_after: str) -> list[tuple[str, bool]]:
    """Every entry of the listing after `start_after`, in order: (key, False) for an object,
    (common prefix, True) for a rolled-up prefix. Python compares str by code point, which is
    UTF-8 byte order."""
    entries: set[tuple[str, bool]] = set()
    for key in keys:
        if not key.startswith(prefix) or key <= start_after:
            continue
        rest = key[len(prefix) :]
        if delimiter and delimiter in rest:
            common_prefix = prefix + rest[: rest.index(delimiter) + len(delimiter)]
            if common_prefix > start_after:
                entries.add((common_prefix, True))
        else:
            entries.add((key, False))
    return sorted(entries)


def entries_of(result: ListResult) -> list[tuple[str, bool]]:
    return sorted(
        [(summary.key, False) for summary in result.objects]
        + [(common_prefix, True) for common_prefix in result.common_prefixes]
    )


def list_all(
    store: SqliteMetadataStore, bucket: str, *, prefix: str, delimiter: str, start_after: str, page_size: int
) -> list[tuple[str, bool]]:
    """Follow next_start_after page by page to the end."""
    entries: list[tuple[str, bool]] = []
    for _ in range(10_000):
        page = store.list_objects(bucket, prefix, delimiter, start_after, page_size)
        page_entries = entries_of(page)
        assert len(page_entries) <= page_size
        entries.extend(page_entries)
        if not page.is_truncated:
            return entries
        assert page.next_start_after == page_entries[-1][0]
        start_after = page.next_start_after
    raise AssertionError("listing never ended")


def put_keys(store: SqliteMetadataStore, bucket: str, keys: list[str]) -> None:
    for key in keys:
        store.put_object(object_record(bucket, key, chunks(key)))


@pytest.fixture
def bucket(store: SqliteMetadataStore) -> str:
    store.create_bucket("b", "alice")
    return "b"


# --- By hand ---------------------------------------------------------------------------------


def test_empty_bucket(store: SqliteMetadataStore, bucket: str) -> None:
    assert store.list_objects(bucket) == ListResult([], [], False, None)


def test_prefix_and_delimiter(store: SqliteMetadataStore, bucket: str) -> None:
    put_keys(store, bucket, ["a.txt", "photos/2023/x.jpg", "photos/2024/y.jpg", "photos/top.jpg", "zz"])
    result = store.list_objects(bucket, delimiter="/")
    assert [summary.key for summary in result.objects] == ["a.txt", "zz"]
    assert result.common_prefixes == ["photos/"]
    assert result.is_truncated is False
    assert result.next_start_after == "zz"

    result = store.list_objects(bucket, prefix="photos/", delimiter="/")
    assert [summary.key for summary in result.objects] == ["photos/top.jpg"]
    assert result.common_prefixes == ["photos/2023/", "photos/2024/"]

    result = store.list_objects(bucket, prefix="photos/")
    assert [summary.key for summary in result.objects] == [
        "photos/2023/x.jpg",
        "photos/2024/y.jpg",
        "photos/top.jpg",
    ]
    summary = result.objects[0]
    assert (summary.size, summary.etag, summary.last_modified) == (
        4 << 20,
        '"d41d8cd98f00b204e9800998ecf8427e"',
        1_700_000_000.5,
    )
    # A prefix that is a whole key, and a prefix matching nothing.
    assert [s.key for s in store.list_objects(bucket, prefix="zz").objects] == ["zz"]
    assert store.list_objects(bucket, prefix="nothing").objects == []


def test_common_prefix_counts_once_toward_max_keys(store: SqliteMetadataStore, bucket: str) -> None:
    put_keys(store, bucket, ["a/1", "a/2", "a/3", "b", "c/1", "d"])
    page = store.list_objects(bucket, delimiter="/", max_keys=2)
    assert (page.common_prefixes, [s.key for s in page.objects]) == (["a/"], ["b"])
    assert page.is_truncated is True
    assert page.next_start_after == "b"
    page = store.list_objects(bucket, delimiter="/", start_after="b", max_keys=2)
    assert (page.common_prefixes, [s.key for s in page.objects]) == (["c/"], ["d"])
    assert page.is_truncated is False
    assert page.next_start_after == "d"


def test_continuation_after_a_common_prefix_skips_it(store: SqliteMetadataStore, bucket: str) -> None:
    put_keys(store, bucket, ["a/1", "a/2", "b/1", "c"])
    page = store.list_objects(bucket, delimiter="/", max_keys=1)
    assert (page.common_prefixes, page.is_truncated, page.next_start_after) == (["a/"], True, "a/")
    page = store.list_objects(bucket, delimiter="/", start_after="a/", max_keys=1)
    assert (page.common_prefixes, page.is_truncated, page.next_start_after) == (["b/"], True, "b/")
    page = store.list_objects(bucket, delimiter="/", start_after="b/", max_keys=1)
    assert ([s.key for s in page.objects], page.is_truncated) == (["c"], False)


def test_max_keys_zero_and_exact_fit(store: SqliteMetadataStore, bucket: str) -> None:
    put_keys(store, bucket, ["a", "b"])
    assert store.list_objects(bucket, max_keys=0) == ListResult([], [], False, None)
    page = store.list_objects(bucket, max_keys=2)
    assert ([s.key for s in page.objects], page.is_truncated) == (["a", "b"], False)
    with pytest.raises(ValueError):
        store.list_objects(bucket, max_keys=-1)


def test_start_after_past_everything_and_multi_character_delimiter(
    store: SqliteMetadataStore, bucket: str
) -> None:
    put_keys(store, bucket, ["x--1", "x--2", "x-y", "y"])
    assert store.list_objects(bucket, start_after="z").objects == []
    page = store.list_objects(bucket, delimiter="--")
    assert (page.common_prefixes, [s.key for s in page.objects]) == (["x--"], ["x-y", "y"])


def test_unicode_keys_list_in_utf8_binary_order(store: SqliteMetadataStore, bucket: str) -> None:
    # U+FF5E sorts before U+1F600 in UTF-8 (and code points) but after it in UTF-16.
    keys = ["\U0001f600", "\uff5e", "é", "Z", "a", "日本", "\x7f", "a\x00b", "a b", "a\nb"]
    put_keys(store, bucket, keys)
    listed = [s.key for s in store.list_objects(bucket).objects]
    assert listed == sorted(keys, key=lambda key: key.encode("utf-8"))
    assert listed.index("\uff5e") < listed.index("\U0001f600")
    page = store.list_objects(bucket, delimiter="本")
    assert "日本" in page.common_prefixes


def test_pagination_over_more_than_1000_keys(store: SqliteMetadataStore, bucket: str) -> None:
    keys = [f"logs/{day:02}/{n:04}" for day in range(3) for n in range(800)] + ["top"]
    put_keys(store, bucket, keys)
    first = store.list_objects(bucket)
    assert len(first.objects) == 1000
    assert first.is_truncated is True
    assert first.next_start_after == keys[999]
    assert [
        entry for entry, _ in list_all(store, bucket, prefix="", delimiter="", start_after="", page_size=1000)
    ] == sorted(keys)
    assert [
        entry
        for entry, _ in list_all(
            store, bucket, prefix="logs/01/", delimiter="", start_after="", page_size=333
        )
    ] == keys[800:1600]
    assert list_all(store, bucket, prefix="logs/", delimiter="/", start_after="", page_size=2) == [
        ("logs/00/", True),
        ("logs/01/", True),
        ("logs/02/", True),
    ]


def test_common_prefix_is_skipped_with_a_seek_not_a_scan(store: SqliteMetadataStore, bucket: str) -> None:
    """Listing with a delimiter must not read every key under a common prefix: the work (counted
    in SQLite virtual machine steps) for 3000 keys under one prefix stays close to that for 3."""
    put_keys(store, bucket, ["a", *(f"small/{n:05}" for n in range(3)), "z"])
    store.create_bucket("big", "alice")
    put_keys(store, "big", ["a", *(f"small/{n:05}" for n in range(3000)), "z"])

    def steps(bucket_name: str) -> int:
        counted = [0]

        def count() -> int:
            counted[0] += 1
            return 0

        connection = store._connection()
        connection.set_progress_handler(count, 10)
        try:
            result = store.list_objects(bucket_name, delimiter="/")
        finally:
            connection.set_progress_handler(None, 0)
        assert [s.key for s in result.objects] == ["a", "z"]
        assert result.common_prefixes == ["small/"]
        return counted[0]

    small, big = steps(bucket), steps("big")
    # A scan would take ~1000x the steps; a seek takes about the same.
    assert big < small * 3 + 50


# --- Against the model -----------------------------------------------------------------------

_ALPHABET = ["a", "b", "/", "-", "é", "\U0001f600", "\x00"]
_texts = st.lists(st.sampled_from(_ALPHABET), max_size=4).map("".join)


def test_listing_matches_the_model(tmp_path: Path) -> None:
    store = PinningStore(tmp_path / "model.sqlite3")
    bucket_numbers = itertools.count()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        keys=st.sets(_texts.filter(bool), max_size=14),
        prefix=st.lists(st.sampled_from(_ALPHABET), max_size=2).map("".join),
        delimiter=st.sampled_from(["", "/", "-", "a/", "é", "\U0001f600"]),
        start_after=_texts,
        max_keys=st.integers(min_value=0, max_value=5),
    )
    def check(keys: set[str], prefix: str, delimiter: str, start_after: str, max_keys: int) -> None:
        bucket = f"bucket-{next(bucket_numbers)}"
        store.create_bucket(bucket, "alice")
        put_keys(store, bucket, sorted(keys))

        expected = model_entries(keys, prefix, delimiter, start_after)
        page = store.list_objects(bucket, prefix, delimiter, start_after, max_keys)
        assert entries_of(page) == expected[:max_keys]
        assert page.is_truncated == (max_keys > 0 and len(expected) > max_keys)
        returned = expected[:max_keys]
        assert page.next_start_after == (returned[-1][0] if returned else None)
        if max_keys > 0:
            assert (
                list_all(
                    store,
                    bucket,
                    prefix=prefix,
                    delimiter=delimiter,
                    start_after=start_after,
                    page_size=max_keys,
                )
                == expected
            )

    try:
        check()
    finally:
        store.close()
