"""FragmentEngine against real RocksDB databases in a temporary directory."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from awscrt.checksums import crc32c
from rocksdict import Options, Rdict

from storagenode.engine import (
    FORMAT_VERSION,
    HEADER,
    HEADERS_COLUMN_FAMILY,
    LEGACY_HEADER,
    FragmentEngine,
    FragmentWrite,
    fragment_key,
    supports_direct_io,
)
from storagenode.errors import FragmentCorrupt, FragmentNotFound, InvalidFragment, StorageError, StorageFull


def chunk_hash_for(seed: int) -> bytes:
    return hashlib.sha256(seed.to_bytes(8, "big")).digest()


def fragment(seed: int, size: int = 4096) -> bytes:
    return hashlib.sha256(b"data" + seed.to_bytes(8, "big")).digest() * (size // 32)


@pytest.fixture
def volumes(tmp_path: Path) -> list[str]:
    return [str(tmp_path / "vol0"), str(tmp_path / "vol1"), str(tmp_path / "vol2")]


@pytest.fixture
def engine(volumes: list[str]) -> Iterator[FragmentEngine]:
    engine = FragmentEngine(volumes, min_free_bytes=0)
    try:
        yield engine
    finally:
        engine.close()


def test_put_then_get_returns_data_checksum_and_chunk_size(engine: FragmentEngine) -> None:
    data = fragment(1, 420_000)
    engine.put(chunk_hash_for(1), 3, 17, memoryview(data), crc32c(data), 4_194_304)

    stored = engine.get(chunk_hash_for(1), 3, 17)

    assert stored.data == data
    assert stored.checksum == crc32c(data)
    assert stored.chunk_size == 4_194_304


def test_get_of_missing_fragment_raises_not_found(engine: FragmentEngine) -> None:
    engine.put(chunk_hash_for(1), 0, 5, b"abc", crc32c(b"abc"), 3)
    with pytest.raises(FragmentNotFound):
        engine.get(chunk_hash_for(1), 1, 5)
    with pytest.raises(FragmentNotFound):
        engine.get(chunk_hash_for(2), 0, 5)


def test_put_rejects_data_that_does_not_match_the_senders_checksum(engine: FragmentEngine) -> None:
    with pytest.raises(InvalidFragment):
        engine.put(chunk_hash_for(1), 0, 5, b"abc", crc32c(b"abd"), 3)
    with pytest.raises(FragmentNotFound):
        engine.get(chunk_hash_for(1), 0, 5)


@pytest.mark.parametrize(("chunk_hash", "index", "pg"), [
    (b"short", 0, 0), (bytes(32), 14, 0), (bytes(32), -1, 0), (bytes(32), 0, 2**32),
])
def test_put_rejects_malformed_addresses(
    engine: FragmentEngine, chunk_hash: bytes, index: int, pg: int
) -> None:
    with pytest.raises(InvalidFragment):
        engine.put(chunk_hash, index, pg, b"x", crc32c(b"x"), 1)


def test_put_replaces_an_existing_fragment(engine: FragmentEngine) -> None:
    engine.put(chunk_hash_for(1), 0, 5, b"old", crc32c(b"old"), 3)
    engine.put(chunk_hash_for(1), 0, 5, b"newer", crc32c(b"newer"), 5)
    assert engine.get(chunk_hash_for(1), 0, 5).data == b"newer"
    assert [entry.length for entry in engine.list_pg(5)] == [5]


def test_delete_reports_whether_the_fragment_existed(engine: FragmentEngine) -> None:
    engine.put(chunk_hash_for(1), 0, 5, b"abc", crc32c(b"abc"), 3)

    assert engine.delete(chunk_hash_for(1), 0, 5) is True
    assert engine.delete(chunk_hash_for(1), 0, 5) is False
    with pytest.raises(FragmentNotFound):
        engine.get(chunk_hash_for(1), 0, 5)
    assert list(engine.list_pg(5)) == []


def test_list_pg_returns_exactly_that_placement_groups_fragments(engine: FragmentEngine) -> None:
    expected = set()
    for seed in range(20):
        for index in (0, 13):
            data = fragment(seed, 64 * (index + 1))
            pg = seed % 3
            engine.put(chunk_hash_for(seed), index, pg, data, crc32c(data), 1000 + seed)
            if pg == 1:
                expected.add((chunk_hash_for(seed), index, len(data), crc32c(data), 1000 + seed))
    # Placement groups at the edges of the u32 key space.
    engine.put(chunk_hash_for(99), 0, 0xFFFFFFFF, b"edge", crc32c(b"edge"), 4)

    listed = {(e.chunk_hash, e.index, e.length, e.checksum, e.chunk_size) for e in engine.list_pg(1)}

    assert listed == expected
    assert [e.chunk_hash for e in engine.list_pg(0xFFFFFFFF)] == [chunk_hash_for(99)]
    assert list(engine.list_pg(7)) == []


def test_fragments_spread_over_volumes_by_hash_bytes_8_to_16(
    engine: FragmentEngine, volumes: list[str]
) -> None:
    for seed in range(60):
        engine.put(chunk_hash_for(seed), 0, 0, b"x", crc32c(b"x"), 1)
    expected_counts = [0, 0, 0]
    for seed in range(60):
        expected_counts[int.from_bytes(chunk_hash_for(seed)[8:16], "big") % 3] += 1

    stats = engine.stats()

    assert [s.path for s in stats] == volumes
    assert [s.fragments for s in stats] == expected_counts
    assert all(count > 0 for count in expected_counts)
    assert all(s.bytes_used > 0 and s.bytes_free > 0 for s in stats)


def test_fragments_survive_close_and_reopen(volumes: list[str]) -> None:
    engine = FragmentEngine(volumes, min_free_bytes=0)
    payloads = {seed: fragment(seed, 100_000) for seed in range(10)}
    for seed, data in payloads.items():
        engine.put(chunk_hash_for(seed), seed % 14, seed, data, crc32c(data), len(data) * 10)
    engine.close()

    reopened = FragmentEngine(volumes, min_free_bytes=0)
    try:
        for seed, data in payloads.items():
            assert reopened.get(chunk_hash_for(seed), seed % 14, seed).data == data
    finally:
        reopened.close()


def test_flipped_byte_on_disk_is_detected_as_corrupt(volumes: list[str]) -> None:
    engine = FragmentEngine(volumes, min_free_bytes=0)
    data = fragment(7, 200_000)
    chunk_hash = chunk_hash_for(7)
    engine.put(chunk_hash, 4, 9, data, crc32c(data), 2_000_000)
    before = engine.corrupt_fragments_detected
    engine.close()
    # Flip one data byte behind the engine's back, through RocksDB itself.
    volume = volumes[int.from_bytes(chunk_hash[8:16], "big") % len(volumes)]
    options = Options(raw_mode=True)
    raw = Rdict(volume, options, column_families={HEADERS_COLUMN_FAMILY: Options(raw_mode=True)})
    key = fragment_key(chunk_hash, 4, 9)
    value = bytearray(raw[key] or b"")
    value[HEADER.size + 1234] ^= 0x01
    raw[key] = bytes(value)
    raw.close()
    del raw

    engine = FragmentEngine(volumes, min_free_bytes=0)
    try:
        with pytest.raises(FragmentCorrupt):
            engine.get(chunk_hash, 4, 9)
        assert engine.corrupt_fragments_detected == before + 1
    finally:
        engine.close()


def test_put_many_stores_valid_fragments_and_reports_each_failure(engine: FragmentEngine) -> None:
    writes = [FragmentWrite(chunk_hash_for(seed), 1, 2, fragment(seed), crc32c(fragment(seed)), 9)
              for seed in range(30)]
    writes[5] = FragmentWrite(chunk_hash_for(5), 1, 2, b"bad", 12345, 9)

    results = engine.put_many(writes)

    assert isinstance(results[5], InvalidFragment)
    assert [r for i, r in enumerate(results) if i != 5] == [None] * 29
    assert len(list(engine.list_pg(2))) == 29
    assert engine.get(chunk_hash_for(29), 1, 2).data == fragment(29)


def test_put_refuses_when_the_disk_keeps_less_than_the_reserve(volumes: list[str]) -> None:
    engine = FragmentEngine(volumes, min_free_bytes=2**62)
    try:
        with pytest.raises(StorageFull):
            engine.put(chunk_hash_for(1), 0, 0, b"x", crc32c(b"x"), 1)
    finally:
        engine.close()


def test_deletes_succeed_on_a_full_volume(volumes: list[str]) -> None:
    data = fragment(3)
    engine = FragmentEngine(volumes, min_free_bytes=0)
    try:
        engine.put(chunk_hash_for(3), 4, 5, data, crc32c(data), 10**6)
        engine.put(chunk_hash_for(4), 4, 5, data, crc32c(data), 10**6)
    finally:
        engine.close()
    full = FragmentEngine(volumes, min_free_bytes=2**62)  # every volume now counts as full
    try:
        with pytest.raises(StorageFull):
            full.put(chunk_hash_for(5), 0, 0, b"x", crc32c(b"x"), 1)
        # Deleting is how space comes back: it is never refused for want of space.
        assert full.delete(chunk_hash_for(3), 4, 5) is True
        assert full.delete(chunk_hash_for(4), 4, 5, written_before_ms=2**62) is True
        assert list(full.list_pg(5)) == []
    finally:
        full.close()


def test_calls_after_close_raise_storage_error(volumes: list[str]) -> None:
    engine = FragmentEngine(volumes, min_free_bytes=0)
    engine.close()
    with pytest.raises(StorageError):
        engine.get(chunk_hash_for(1), 0, 0)
    with pytest.raises(StorageError):
        engine.put(chunk_hash_for(1), 0, 0, b"x", crc32c(b"x"), 1)


def test_second_engine_on_the_same_volume_is_refused(volumes: list[str]) -> None:
    engine = FragmentEngine(volumes, min_free_bytes=0)
    try:
        with pytest.raises(StorageError):
            FragmentEngine([volumes[0]])
    finally:
        engine.close()
    assert os.path.isdir(volumes[0])


def _open_raw(volume: str) -> Rdict:
    return Rdict(volume, Options(raw_mode=True), column_families={HEADERS_COLUMN_FAMILY: Options(raw_mode=True)})


def test_put_stores_bare_data_and_the_versioned_header_beside_it(volumes: list[str]) -> None:
    engine = FragmentEngine(volumes, min_free_bytes=0)
    data = fragment(11, 100_000)
    chunk_hash = chunk_hash_for(11)
    before_ms = time.time_ns() // 1_000_000
    engine.put(chunk_hash, 2, 8, data, crc32c(data), 1_000_000)
    after_ms = time.time_ns() // 1_000_000
    engine.close()
    raw = _open_raw(volumes[int.from_bytes(chunk_hash[8:16], "big") % len(volumes)])
    try:
        key = fragment_key(chunk_hash, 2, 8)
        headers = raw.get_column_family(HEADERS_COLUMN_FAMILY)
        assert raw[key] == data
        *fields, written_at_ms = HEADER.unpack(headers[key] or b"")
        assert fields == [FORMAT_VERSION, crc32c(data), len(data), 1_000_000]
        assert before_ms <= written_at_ms <= after_ms + 1
        del headers
    finally:
        raw.close()


def test_format_1_records_with_the_header_in_front_of_the_data_still_read(volumes: list[str]) -> None:
    data = fragment(12, 50_000)
    chunk_hash = chunk_hash_for(12)
    key = fragment_key(chunk_hash, 5, 3)
    header = LEGACY_HEADER.pack(1, crc32c(data), len(data), 500_000)
    FragmentEngine(volumes, min_free_bytes=0).close()  # creates the databases and column families
    raw = _open_raw(volumes[int.from_bytes(chunk_hash[8:16], "big") % len(volumes)])
    try:
        raw[key] = header + data
        headers = raw.get_column_family(HEADERS_COLUMN_FAMILY)
        headers[key] = header
        del headers
    finally:
        raw.close()
    engine = FragmentEngine(volumes, min_free_bytes=0)
    try:
        stored = engine.get(chunk_hash, 5, 3)
        assert (stored.data, stored.checksum, stored.chunk_size) == (data, crc32c(data), 500_000)
        assert [(entry.length, entry.written_at_ms) for entry in engine.list_pg(3)] == [(len(data), 0)]
        assert engine.verify(chunk_hash, 5, 3) is None
    finally:
        engine.close()


def test_header_without_data_is_reported_as_corrupt(volumes: list[str]) -> None:
    engine = FragmentEngine(volumes, min_free_bytes=0)
    data = fragment(13, 10_000)
    chunk_hash = chunk_hash_for(13)
    engine.put(chunk_hash, 1, 1, data, crc32c(data), 100_000)
    engine.close()
    raw = _open_raw(volumes[int.from_bytes(chunk_hash[8:16], "big") % len(volumes)])
    try:
        del raw[fragment_key(chunk_hash, 1, 1)]
    finally:
        raw.close()
    engine = FragmentEngine(volumes, min_free_bytes=0)
    try:
        with pytest.raises(FragmentCorrupt):
            engine.get(chunk_hash, 1, 1)
        assert engine.corrupt_fragments_detected == 1
    finally:
        engine.close()


def test_free_space_reserve_counts_bytes_written_since_the_last_disk_check(volumes: list[str]) -> None:
    engine = FragmentEngine(volumes[:1], min_free_bytes=0)
    try:
        engine.put(chunk_hash_for(1), 0, 0, b"x", crc32c(b"x"), 1)  # caches the free space
    finally:
        engine.close()
    free = shutil.disk_usage(volumes[0]).free
    data = fragment(14, 1_000_000)
    # A reserve just below today's free space: one 1 MB put fits, the next one (counted against the
    # cached free space, not yet re-read from the disk) does not.
    engine = FragmentEngine(volumes[:1], min_free_bytes=free - 1_600_000)
    try:
        engine.put(chunk_hash_for(2), 0, 0, data, crc32c(data), 1)
        with pytest.raises(StorageFull):
            engine.put(chunk_hash_for(3), 0, 0, data, crc32c(data), 1)
    finally:
        engine.close()


def _bytes_in_page_cache(volume: str, pattern: str) -> int:
    """Bytes of ``volume``'s files matching ``pattern`` resident in the page cache, as util-linux's
    fincore says."""
    files = [str(path) for path in Path(volume).glob(pattern)]
    assert files, f"RocksDB wrote no {pattern} file"
    output = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", *files],
                            check=True, capture_output=True, text=True).stdout
    return sum(int(line) for line in output.split())


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux's fincore")
@pytest.mark.parametrize("drop_every", [0, 1])
def test_synced_wal_pages_leave_the_page_cache_unless_dropping_is_off(tmp_path: Path, drop_every: int) -> None:
    volume = str(tmp_path / "volume")
    engine = FragmentEngine([volume], min_free_bytes=0, wal_cache_drop_bytes=drop_every)
    try:
        written = 0
        for seed in range(8):
            data = fragment(seed, 420_000)
            engine.put(chunk_hash_for(seed), 0, 1, data, crc32c(data), 4_194_304)
            written += len(data)
        resident = _bytes_in_page_cache(volume, "*.log")
        # The fragments are still readable: dropping cached pages never drops data.
        assert engine.get(chunk_hash_for(7), 0, 1).data == fragment(7, 420_000)
    finally:
        engine.close()
    if drop_every:
        assert resident < 64 * 1024
    else:
        assert resident >= written


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux's fincore")
def test_a_drop_after_a_wal_switch_also_drops_the_previous_wal_files_tail(tmp_path: Path) -> None:
    volume = str(tmp_path / "volume")
    engine = FragmentEngine([volume], min_free_bytes=0, wal_cache_drop_bytes=1_000_000)
    try:
        # Puts 0-2 reach the threshold (a drop); put 3 stays cached in the first WAL file, which
        # the flush then retires; puts 4-5 reach the threshold again in the second WAL file.
        for seed in range(6):
            if seed == 4:
                engine.flush()
            data = fragment(seed, 420_000)
            engine.put(chunk_hash_for(seed), 0, 1, data, crc32c(data), 4_194_304)
        wal_files = list(Path(volume).glob("*.log"))
        resident = _bytes_in_page_cache(volume, "*.log")
        assert engine.get(chunk_hash_for(3), 0, 1).data == fragment(3, 420_000)
    finally:
        engine.close()
    assert len(wal_files) >= 2
    assert resident < 64 * 1024


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux's fincore")
@pytest.mark.parametrize("direct_io", [True, False])
def test_flushed_and_read_fragment_data_stays_out_of_the_page_cache_with_direct_io(
    tmp_path: Path, direct_io: bool
) -> None:
    volume = str(tmp_path / "volume")
    if direct_io and not supports_direct_io(str(tmp_path)):
        pytest.skip("the temporary directory's filesystem has no O_DIRECT")
    engine = FragmentEngine([volume], min_free_bytes=0, direct_io=direct_io)
    try:
        data = fragment(1, 420_000)
        engine.put(chunk_hash_for(1), 0, 1, data, crc32c(data), 4_194_304)
        engine.flush()
        assert engine.get(chunk_hash_for(1), 0, 1).data == data  # read from the blob file now
        resident = _bytes_in_page_cache(volume, "*.blob")
    finally:
        engine.close()
    if direct_io:
        assert resident == 0
    else:
        assert resident >= len(data)


def _nice_of_threads_named(name: str) -> list[int]:
    """Nice values of this process's threads called ``name``: Linux gives each thread its own
    (``getpriority`` on a thread id, sched(7))."""
    nice_values = []
    for task in Path("/proc/self/task").iterdir():
        try:
            if (task / "comm").read_text().strip() == name:
                nice_values.append(os.getpriority(os.PRIO_PROCESS, int(task.name)))
        except (FileNotFoundError, ProcessLookupError):  # the thread ended while we listed
            continue
    return nice_values


def test_flushes_and_compactions_run_at_the_lowest_cpu_priority(engine: FragmentEngine) -> None:
    if os.getpriority(os.PRIO_PROCESS, 0) >= 19:
        pytest.skip("the test process already runs at nice 19: nothing can run lower")
    for seed in range(6):
        data = fragment(seed, 420_000)
        engine.put(chunk_hash_for(seed), 0, 1, memoryview(data), crc32c(data), 4_194_304)

    engine.flush()  # a job on RocksDB's high-priority pool
    engine.compact(engine.volume_index(chunk_hash_for(0)))  # one on its low-priority pool

    flush_threads = _nice_of_threads_named("rocksdb:high")
    compaction_threads = _nice_of_threads_named("rocksdb:low")
    assert flush_threads and compaction_threads
    assert set(flush_threads) == {19}
    # A low-pool thread lowers itself when it takes a job; one that has not run any keeps nice 0.
    assert 19 in compaction_threads
    assert os.getpriority(os.PRIO_PROCESS, 0) < 19  # requests' threads keep their priority
