"""Record format 3 (write time in the header), conditional delete, list_all, verify and quarantine,
against real RocksDB databases in a temporary directory."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from awscrt.checksums import crc32c
from rocksdict import Options, Rdict

from storagenode import engine as engine_module
from storagenode.engine import HEADERS_COLUMN_FAMILY, LEGACY_HEADER, FragmentEngine, fragment_key
from storagenode.errors import FragmentNotFound, InvalidFragment


def chunk_hash_for(seed: int) -> bytes:
    return hashlib.sha256(seed.to_bytes(8, "big")).digest()


def fragment(seed: int, size: int = 4096) -> bytes:
    return hashlib.sha256(b"data" + seed.to_bytes(8, "big")).digest() * (size // 32)


@pytest.fixture
def volumes(tmp_path: Path) -> list[str]:
    return [str(tmp_path / "vol0"), str(tmp_path / "vol1")]


@pytest.fixture
def engine(volumes: list[str]) -> Iterator[FragmentEngine]:
    engine = FragmentEngine(volumes, min_free_bytes=0)
    try:
        yield engine
    finally:
        engine.close()


def volume_of(volumes: list[str], chunk_hash: bytes) -> str:
    return volumes[int.from_bytes(chunk_hash[8:16], "big") % len(volumes)]


def edit_raw(volume: str, data: dict[bytes, bytes | None], headers: dict[bytes, bytes | None]) -> None:
    """Write (or delete, for None) records behind the engine's back, through RocksDB itself."""
    raw = Rdict(volume, Options(raw_mode=True), column_families={HEADERS_COLUMN_FAMILY: Options(raw_mode=True)})
    try:
        header_family = raw.get_column_family(HEADERS_COLUMN_FAMILY)
        for target, changes in ((raw, data), (header_family, headers)):
            for key, value in changes.items():
                if value is None:
                    del target[key]
                else:
                    target[key] = value
        del header_family
    finally:
        raw.close()


def flip_last_data_byte(volume: str, key: bytes) -> None:
    raw = Rdict(volume, Options(raw_mode=True), column_families={HEADERS_COLUMN_FAMILY: Options(raw_mode=True)})
    try:
        value = bytearray(raw[key] or b"")
    finally:
        raw.close()
    value[-1] ^= 0x01
    edit_raw(volume, {key: bytes(value)}, {})


def written_at(engine: FragmentEngine, chunk_hash: bytes, index: int, pg: int) -> int:
    [entry] = [entry for entry in engine.list_pg(pg) if (entry.chunk_hash, entry.index) == (chunk_hash, index)]
    return entry.written_at_ms


def test_every_write_gets_a_later_time_from_the_clock(engine: FragmentEngine) -> None:
    data = fragment(1)
    times = []
    before_ms = time.time_ns() // 1_000_000
    for _ in range(5):  # faster than one a millisecond: the engine still issues increasing times
        engine.put(chunk_hash_for(1), 0, 4, data, crc32c(data), 100)
        times.append(written_at(engine, chunk_hash_for(1), 0, 4))

    assert times == sorted(set(times))
    assert before_ms <= times[0] <= time.time_ns() // 1_000_000 + 5


def test_a_hand_written_format_2_record_reads_lists_and_counts_as_old(volumes: list[str]) -> None:
    data = fragment(2, 10_000)
    chunk_hash = chunk_hash_for(2)
    key = fragment_key(chunk_hash, 7, 9)
    FragmentEngine(volumes, min_free_bytes=0).close()  # creates the databases and column families
    edit_raw(volume_of(volumes, chunk_hash), {key: data}, {key: LEGACY_HEADER.pack(2, crc32c(data), len(data), 77)})
    engine = FragmentEngine(volumes, min_free_bytes=0)
    try:
        stored = engine.get(chunk_hash, 7, 9)
        assert (stored.data, stored.checksum, stored.chunk_size) == (data, crc32c(data), 77)
        [entry] = engine.list_pg(9)
        assert (entry.chunk_hash, entry.index, entry.length, entry.written_at_ms) == (chunk_hash, 7, len(data), 0)
        assert [(pg, item.written_at_ms) for pg, item in engine.list_all()] == [(9, 0)]
        assert engine.verify(chunk_hash, 7, 9) is None
        # No write time: older than any time, so a conditional delete removes it.
        assert engine.delete(chunk_hash, 7, 9, written_before_ms=1) is True
        with pytest.raises(FragmentNotFound):
            engine.get(chunk_hash, 7, 9)
    finally:
        engine.close()


def test_conditional_delete_keeps_a_record_written_at_or_after_the_time(engine: FragmentEngine) -> None:
    data = fragment(3)
    chunk_hash = chunk_hash_for(3)
    engine.put(chunk_hash, 1, 2, data, crc32c(data), 100)
    stamp = written_at(engine, chunk_hash, 1, 2)

    assert engine.delete(chunk_hash, 1, 2, written_before_ms=stamp) is False
    assert engine.get(chunk_hash, 1, 2).data == data
    assert engine.delete(chunk_hash, 1, 2, written_before_ms=stamp + 1) is True
    with pytest.raises(FragmentNotFound):
        engine.get(chunk_hash, 1, 2)
    assert engine.delete(chunk_hash, 1, 2, written_before_ms=stamp + 1) is False


def test_a_rewrite_after_the_delete_decision_survives_the_conditional_delete(engine: FragmentEngine) -> None:
    data = fragment(4)
    chunk_hash = chunk_hash_for(4)
    engine.put(chunk_hash, 0, 0, data, crc32c(data), 100)
    decided_at_ms = written_at(engine, chunk_hash, 0, 0) + 1
    engine.put(chunk_hash, 0, 0, data, crc32c(data), 100)  # written again: gets a time >= decided_at_ms

    assert engine.delete(chunk_hash, 0, 0, written_before_ms=decided_at_ms) is False
    assert engine.get(chunk_hash, 0, 0).data == data


def test_unconditional_delete_and_bad_arguments(engine: FragmentEngine) -> None:
    data = fragment(5)
    engine.put(chunk_hash_for(5), 0, 0, data, crc32c(data), 100)
    with pytest.raises(InvalidFragment):
        engine.delete(chunk_hash_for(5), 0, 0, written_before_ms=-1)
    assert engine.delete(chunk_hash_for(5), 0, 0) is True


def test_list_all_returns_every_fragment_with_its_placement_group_page_by_page(
    engine: FragmentEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "LIST_ALL_PAGE", 3)
    written = set()
    for seed in range(20):
        data = fragment(seed, 64 * (seed + 1))
        pg = (seed * 7919) % 5 if seed else 0xFFFFFFFF
        engine.put(chunk_hash_for(seed), seed % 14, pg, data, crc32c(data), 1000 + seed)
        written.add((pg, chunk_hash_for(seed), seed % 14, len(data), crc32c(data), 1000 + seed))

    listed = list(engine.list_all())

    assert {(pg, e.chunk_hash, e.index, e.length, e.checksum, e.chunk_size) for pg, e in listed} == written
    assert len(listed) == len(written)
    assert all(entry.written_at_ms > 0 for _pg, entry in listed)
    # Volume by volume, each in key order.
    keys = [fragment_key(entry.chunk_hash, entry.index, pg) for pg, entry in listed]
    by_volume = [[key for key in keys if engine.volume_index(key[4:-1]) == number] for number in range(2)]
    assert keys == by_volume[0] + by_volume[1]
    assert all(part == sorted(part) for part in by_volume)


def test_verify_reports_what_is_wrong_and_quarantine_removes_only_bad_records(
    engine: FragmentEngine, volumes: list[str]
) -> None:
    good, flipped, headless, short_header = (chunk_hash_for(seed) for seed in (10, 11, 12, 13))
    for chunk_hash in (good, flipped, headless, short_header):
        data = fragment(int.from_bytes(chunk_hash[:2], "big"), 8192)
        engine.put(chunk_hash, 2, 6, data, crc32c(data), 8192 * 10)
    engine.close()
    flip_last_data_byte(volume_of(volumes, flipped), fragment_key(flipped, 2, 6))
    edit_raw(volume_of(volumes, headless), {fragment_key(headless, 2, 6): None}, {})
    edit_raw(volume_of(volumes, short_header), {}, {fragment_key(short_header, 2, 6): b"\x03\x00"})
    engine = FragmentEngine(volumes, min_free_bytes=0)
    try:
        assert engine.verify(good, 2, 6) is None
        assert "CRC32C" in (engine.verify(flipped, 2, 6) or "")
        assert "data missing" in (engine.verify(headless, 2, 6) or "")
        assert "header record of 2 bytes" in (engine.verify(short_header, 2, 6) or "")
        assert engine.verify(chunk_hash_for(99), 2, 6) is None  # not on this node: nothing wrong
        assert engine.corrupt_fragments_detected == 0  # verify is not a client read
        # The malformed header is still listed by list_all, so a scrub finds it.
        assert {entry.chunk_hash for _pg, entry in engine.list_all()} == {good, flipped, headless, short_header}

        assert engine.quarantine(good, 2, 6) is False
        for bad in (flipped, headless, short_header):
            assert engine.quarantine(bad, 2, 6) is True
            assert engine.quarantine(bad, 2, 6) is False
            with pytest.raises(FragmentNotFound):
                engine.get(bad, 2, 6)
        assert [entry.chunk_hash for entry in engine.list_pg(6)] == [good]
        assert engine.get(good, 2, 6).chunk_size == 8192 * 10
    finally:
        engine.close()
