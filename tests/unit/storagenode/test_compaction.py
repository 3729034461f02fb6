"""Compaction against a real engine (RocksDB blob files in a temporary directory): deleted
fragments' disk space comes back, live fragments survive the move intact."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest
from awscrt.checksums import crc32c
from prometheus_client import REGISTRY

from storagenode.compaction import Compactor, VolumeCompaction
from storagenode.engine import FragmentEngine

#: Above the 64 KiB minimum blob size: stored in blob files.
FRAGMENT_BYTES = 100_000
GENERATIONS = 8
PER_GENERATION = 12


def chunk_hash_for(seed: int) -> bytes:
    return hashlib.sha256(seed.to_bytes(8, "big")).digest()


def fragment(seed: int) -> bytes:
    return (hashlib.sha256(b"data" + seed.to_bytes(8, "big")).digest() * (FRAGMENT_BYTES // 32 + 1))[:FRAGMENT_BYTES]


def blob_files(volume: str) -> list[str]:
    return sorted(path.name for path in Path(volume).iterdir() if path.suffix == ".blob")


def write_generations(engine: FragmentEngine) -> dict[int, list[str]]:
    """Seeds 0..95 in placement groups 0..6, one flush (so one blob file) per generation of 12;
    returns generation -> the blob files that appeared with it."""
    files_of: dict[int, list[str]] = {}
    for generation in range(GENERATIONS):
        before = set(blob_files(engine.volume_paths[0]))
        for seed in range(generation * PER_GENERATION, (generation + 1) * PER_GENERATION):
            data = fragment(seed)
            engine.put(chunk_hash_for(seed), seed % 14, seed % 7, data, crc32c(data), len(data) * 10)
        engine.flush()
        files_of[generation] = sorted(set(blob_files(engine.volume_paths[0])) - before)
    return files_of


def delete(engine: FragmentEngine, seeds: list[int]) -> None:
    for seed in seeds:
        assert engine.delete(chunk_hash_for(seed), seed % 14, seed % 7)


def assert_reads(engine: FragmentEngine, seeds: list[int]) -> None:
    for seed in seeds:
        assert bytes(engine.get(chunk_hash_for(seed), seed % 14, seed % 7).data) == fragment(seed)


def default_column_family_option(volume: str, name: str) -> str:
    """``name``'s value in the ``default`` column family of the newest OPTIONS file (RocksDB
    rewrites it on every ``set_options``)."""
    newest = max(Path(volume).glob("OPTIONS-*"), key=lambda path: int(path.name.split("-")[1]))
    section = newest.read_text().split('[CFOptions "default"]')[1].split("\n[")[0]
    [value] = [line.split("=", 1)[1] for line in section.splitlines() if line.strip().startswith(name + "=")]
    return value


def run_pass(engine: FragmentEngine, garbage_ratio: float = 0.25) -> VolumeCompaction:
    async def one_pass() -> list[VolumeCompaction]:
        compactor = Compactor(engine, interval_seconds=3600, garbage_ratio=garbage_ratio)
        try:
            return await compactor.run_pass()
        finally:
            await compactor.stop()

    [result] = asyncio.run(one_pass())
    return result


@pytest.fixture
def engine(tmp_path: Path):
    engine = FragmentEngine([str(tmp_path / "volume")], min_free_bytes=0)
    try:
        yield engine
    finally:
        engine.close()


def test_deleted_fragments_give_their_blob_files_back_and_the_live_ones_read_intact(engine: FragmentEngine) -> None:
    volume = engine.volume_paths[0]
    files_of = write_generations(engine)
    assert all(len(files) == 1 for files in files_of.values())
    # Generation 4 goes entirely; every other generation loses 2 fragments in 3 (its file keeps some).
    dead = [seed for seed in range(96) if seed // PER_GENERATION == 4 or seed % 3]
    live = sorted(set(range(96)) - set(dead))
    delete(engine, dead)
    reclaimed_before = REGISTRY.get_sample_value("coffer_compaction_reclaimed_bytes_total") or 0.0

    result = run_pass(engine)

    assert result.dropped_deletes and result.relocated
    remaining = blob_files(volume)
    assert files_of[4][0] not in remaining  # nothing but garbage: gone with the deleted keys
    assert files_of[0][0] not in remaining  # the oldest file: its live third moved to a new file
    assert files_of[1][0] in remaining  # younger files wait for later passes
    assert result.after.total_bytes < result.before.total_bytes - (1 + 2 / 3) * PER_GENERATION * FRAGMENT_BYTES
    assert (REGISTRY.get_sample_value("coffer_compaction_reclaimed_bytes_total") or 0.0) - reclaimed_before == (
        result.reclaimed_bytes)
    assert_reads(engine, live)
    # Blob garbage collection is switched off again (always on, it rewrites live data endlessly).
    assert default_column_family_option(volume, "enable_blob_garbage_collection") == "false"


def test_later_passes_move_on_to_the_next_oldest_files(engine: FragmentEngine) -> None:
    volume = engine.volume_paths[0]
    files_of = write_generations(engine)
    dead = [seed for seed in range(96) if seed % 3]
    delete(engine, dead)
    for _ in range(3):
        run_pass(engine)
    remaining = blob_files(volume)
    assert not {files_of[generation][0] for generation in range(3)} & set(remaining)
    assert_reads(engine, [seed for seed in range(96) if seed % 3 == 0])


def test_without_deletes_only_the_first_pass_compacts(engine: FragmentEngine) -> None:
    files_of = write_generations(engine)

    async def two_passes() -> list[VolumeCompaction]:
        compactor = Compactor(engine, interval_seconds=3600, garbage_ratio=0.25)
        try:
            return [*await compactor.run_pass(), *await compactor.run_pass()]
        finally:
            await compactor.stop()

    first, second = asyncio.run(two_passes())
    # The first pass cannot know about deletes from before the start (next test): it compacts.
    assert (first.dropped_deletes, first.relocated, first.reclaimed_bytes) == (True, False, 0)
    assert (second.dropped_deletes, second.relocated, second.reclaimed_bytes) == (False, False, 0)
    assert blob_files(engine.volume_paths[0]) == sorted(name for files in files_of.values() for name in files)


def test_little_garbage_is_counted_but_not_worth_a_relocation(engine: FragmentEngine) -> None:
    files_of = write_generations(engine)
    delete(engine, [generation * PER_GENERATION for generation in range(GENERATIONS)])  # 1 in 12
    result = run_pass(engine)
    assert result.dropped_deletes and not result.relocated
    # Garbage counts whole blob records: the fragment and a little framing (key, header, CRC).
    assert GENERATIONS * FRAGMENT_BYTES <= result.after.garbage_bytes <= GENERATIONS * (FRAGMENT_BYTES + 200)
    assert blob_files(engine.volume_paths[0]) == sorted(name for files in files_of.values() for name in files)


def test_deletes_made_before_a_restart_are_dropped_by_the_first_pass(tmp_path: Path) -> None:
    path = str(tmp_path / "volume")
    writer = FragmentEngine([path], min_free_bytes=0)
    try:
        files_of = write_generations(writer)
        delete(writer, list(range(PER_GENERATION)))  # all of generation 0
    finally:
        writer.close()
    restarted = FragmentEngine([path], min_free_bytes=0)
    try:
        result = run_pass(restarted)
        assert result.dropped_deletes
        assert files_of[0][0] not in blob_files(path)
        assert_reads(restarted, list(range(PER_GENERATION, 96)))
    finally:
        restarted.close()


def test_a_volume_without_room_for_the_moved_fragments_keeps_its_garbage(tmp_path: Path) -> None:
    path = str(tmp_path / "volume")
    writer = FragmentEngine([path], min_free_bytes=0)
    try:
        files_of = write_generations(writer)
        delete(writer, [seed for seed in range(96) if seed % 3])
    finally:
        writer.close()
    # A reserve larger than any disk: a relocation would eat into it.
    full = FragmentEngine([path], min_free_bytes=2**62)
    try:
        skipped_before = REGISTRY.get_sample_value("coffer_compaction_skipped_relocations_total") or 0.0
        result = run_pass(full)
        assert result.dropped_deletes and not result.relocated
        assert result.after.garbage_ratio > 0.5
        assert files_of[0][0] in blob_files(path)
        assert REGISTRY.get_sample_value("coffer_compaction_skipped_relocations_total") == skipped_before + 1
        assert_reads(full, [seed for seed in range(96) if seed % 3 == 0])
    finally:
        full.close()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        Compactor(None, interval_seconds=0, garbage_ratio=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Compactor(None, interval_seconds=1, garbage_ratio=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Compactor(None, interval_seconds=1, garbage_ratio=1.5)  # type: ignore[arg-type]


def test_started_passes_wait_a_jittered_interval(engine: FragmentEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The background passes sleep ``jittered(interval)``, not the bare interval: the nodes of a
    cluster start together and would otherwise compact in lockstep."""
    write_generations(engine)
    asked: list[float] = []

    def short_wait(seconds: float) -> float:
        asked.append(seconds)
        return 0.05

    monkeypatch.setattr("storagenode.compaction.jittered", short_wait)

    async def started() -> list[VolumeCompaction]:
        compactor = Compactor(engine, interval_seconds=3600, garbage_ratio=0.25)
        passed: asyncio.Future[list[VolumeCompaction]] = asyncio.get_running_loop().create_future()
        run_pass = compactor.run_pass

        async def recorded_pass() -> list[VolumeCompaction]:
            result = await run_pass()
            if not passed.done():
                passed.set_result(result)
            return result

        monkeypatch.setattr(compactor, "run_pass", recorded_pass)
        await compactor.start()
        try:
            async with asyncio.timeout(20):  # an hour without the jitter function's answer
                return await passed
        finally:
            await compactor.stop()

    [result] = asyncio.run(started())
    assert result.dropped_deletes  # a real pass ran
    assert asked and set(asked) == {3600}


def test_a_background_write_limit_paces_flushes_and_compactions(tmp_path: Path) -> None:
    """RocksDB's rate limiter is wired to the volume: at 2 MiB/s, writing 4 MiB of fragments out
    of the memtable takes about 2 s (a few ms without it). Compactions share that limiter, served
    after flushes, so a relocation never takes more of the disk than the operator allows."""
    limited = FragmentEngine([str(tmp_path / "volume")], min_free_bytes=0,
                             background_write_max_bytes_per_second=2 * 1024 * 1024)
    try:
        data = os.urandom(512 * 1024)
        for seed in range(8):
            limited.put(chunk_hash_for(seed), seed % 14, 3, data, crc32c(data), len(data) * 10)
        started = time.monotonic()
        limited.flush()
        assert time.monotonic() - started >= 1.0  # 4 MiB at 2 MiB/s, less the first refill's burst
        for seed in range(8):
            assert bytes(limited.get(chunk_hash_for(seed), seed % 14, 3).data) == data
    finally:
        limited.close()
    with pytest.raises(ValueError, match="negative"):
        FragmentEngine([str(tmp_path / "other")], background_write_max_bytes_per_second=-1)
