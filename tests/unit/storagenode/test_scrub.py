"""The scrubber against a real engine (RocksDB in a temporary directory) with corruption made
behind the engine's back through RocksDB itself."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from awscrt.checksums import crc32c
from prometheus_client import REGISTRY
from rocksdict import Options, Rdict

from storagenode import scrub
from storagenode.engine import HEADERS_COLUMN_FAMILY, FragmentEngine, fragment_key
from storagenode.errors import FragmentNotFound
from storagenode.scrub import Scrubber, ScrubReport, target_rate

UNLIMITED = 1e15


def chunk_hash_for(seed: int) -> bytes:
    return hashlib.sha256(seed.to_bytes(8, "big")).digest()


def fragment(seed: int, size: int) -> bytes:
    return (hashlib.sha256(b"data" + seed.to_bytes(8, "big")).digest() * (size // 32 + 1))[:size]


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture
def volumes(tmp_path: Path) -> list[str]:
    return [str(tmp_path / "vol0"), str(tmp_path / "vol1")]


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(2)
    try:
        yield executor
    finally:
        executor.shutdown()


def fill(volumes: list[str], count: int) -> dict[int, bytes]:
    """``count`` fragments (seed -> data) in placement groups 0..4, sizes 1..~20 KB."""
    engine = FragmentEngine(volumes, min_free_bytes=0)
    stored = {}
    try:
        for seed in range(count):
            data = fragment(seed, 1000 + 997 * seed)
            engine.put(chunk_hash_for(seed), seed % 14, seed % 5, data, crc32c(data), len(data) * 10)
            stored[seed] = data
    finally:
        engine.close()
    return stored


def corrupt(volumes: list[str], seed: int, how: str) -> None:
    """Damage fragment ``seed`` on disk: flip a data byte, drop its data, or cut its header."""
    chunk_hash = chunk_hash_for(seed)
    volume = volumes[int.from_bytes(chunk_hash[8:16], "big") % len(volumes)]
    key = fragment_key(chunk_hash, seed % 14, seed % 5)
    raw = Rdict(volume, Options(raw_mode=True), column_families={HEADERS_COLUMN_FAMILY: Options(raw_mode=True)})
    try:
        headers = raw.get_column_family(HEADERS_COLUMN_FAMILY)
        if how == "flip":
            value = bytearray(raw[key] or b"")
            value[len(value) // 2] ^= 0x10
            raw[key] = bytes(value)
        elif how == "drop data":
            del raw[key]
        else:
            headers[key] = (headers[key] or b"")[:-3]
        del headers
    finally:
        raw.close()


def test_rate_spreads_a_pass_over_the_period_but_never_exceeds_the_cap() -> None:
    assert target_rate(1000, 10.0, 500.0) == 100.0
    assert target_rate(10_000, 10.0, 500.0) == 500.0
    assert target_rate(0, 10.0, 500.0) == 500.0
    assert target_rate(1000, 0.0, 500.0) == 500.0
    with pytest.raises(ValueError):
        Scrubber(None, None, period_seconds=1.0, max_bytes_per_second=0)  # type: ignore[arg-type]


def test_a_pass_finds_and_quarantines_exactly_the_corrupted_fragments(
    volumes: list[str], executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Small pages and groups, so a pass crosses several of each.
    monkeypatch.setattr(scrub, "LIST_PAGE_ENTRIES", 4)
    monkeypatch.setattr(scrub, "VERIFY_GROUP_BYTES", 30_000)
    stored = fill(volumes, 24)
    damaged = {3: "flip", 10: "drop data", 17: "cut header"}
    for seed, how in damaged.items():
        corrupt(volumes, seed, how)
    engine = FragmentEngine(volumes, min_free_bytes=0)
    scrubber = Scrubber(engine, executor, period_seconds=0, max_bytes_per_second=UNLIMITED)
    checked_before = metric("coffer_scrub_fragments_checked_total")
    corrupt_before = metric("coffer_scrub_corrupt_fragments_total")
    passes_before = metric("coffer_scrub_passes_total")
    try:
        with caplog.at_level(logging.WARNING, logger="storagenode.scrub"):
            first = asyncio.run(scrubber.run_pass())
        second = asyncio.run(scrubber.run_pass())

        # The cut header is listed with length 0; the dropped data's header still says its length.
        expected_bytes = sum(len(data) for seed, data in stored.items() if seed != 17)
        assert first == ScrubReport(fragments_checked=24, bytes_checked=expected_bytes, corrupt_found=3)
        assert second == ScrubReport(fragments_checked=21, corrupt_found=0, bytes_checked=sum(
            len(data) for seed, data in stored.items() if seed not in damaged))
        logged = {record.fields["chunk_hash"] for record in caplog.records  # type: ignore[attr-defined]
                  if record.name == "storagenode.scrub"}
        assert logged == {chunk_hash_for(seed).hex() for seed in damaged}
        for seed, data in stored.items():
            if seed in damaged:
                with pytest.raises(FragmentNotFound):
                    engine.get(chunk_hash_for(seed), seed % 14, seed % 5)
            else:
                assert engine.get(chunk_hash_for(seed), seed % 14, seed % 5).data == data
        assert engine.corrupt_fragments_detected == 0  # scrub reads are not client reads
        assert metric("coffer_scrub_fragments_checked_total") - checked_before == 45
        assert metric("coffer_scrub_corrupt_fragments_total") - corrupt_before == 3
        assert metric("coffer_scrub_passes_total") - passes_before == 2
        assert metric("coffer_scrub_pass_progress_ratio") == 1.0
    finally:
        engine.close()


def test_an_empty_node_scrubs_to_an_empty_report(volumes: list[str], executor: ThreadPoolExecutor) -> None:
    engine = FragmentEngine(volumes, min_free_bytes=0)
    try:
        report = asyncio.run(Scrubber(engine, executor, period_seconds=10, max_bytes_per_second=1).run_pass())
        assert report == ScrubReport(0, 0, 0)
    finally:
        engine.close()


async def wait_for(condition: object, what: str) -> None:
    for _ in range(1000):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_background_scrubbing_is_paced_and_finds_corruption(
    volumes: list[str], executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scrub, "VERIFY_GROUP_BYTES", 1)  # pace after every fragment
    fill(volumes, 12)  # ~80 KB
    corrupt(volumes, 11, "flip")
    engine = FragmentEngine(volumes, min_free_bytes=0)

    async def body() -> None:
        # Capped at 80 KB/s a pass takes about a second: its progress shows strictly between 0 and 1.
        slow = Scrubber(engine, executor, period_seconds=0.001, max_bytes_per_second=80_000)
        await slow.start()
        try:
            await wait_for(lambda: 0 < metric("coffer_scrub_pass_progress_ratio") < 1, "a pass in progress")
        finally:
            await slow.stop()
        passes = metric("coffer_scrub_passes_total")
        fast = Scrubber(engine, executor, period_seconds=0.05, max_bytes_per_second=UNLIMITED)
        await fast.start()
        await fast.start()  # idempotent
        try:
            await wait_for(lambda: metric("coffer_scrub_passes_total") >= passes + 2, "two passes")
        finally:
            await fast.stop()
            await fast.stop()

    try:
        asyncio.run(body())
        with pytest.raises(FragmentNotFound):
            engine.get(chunk_hash_for(11), 11, 1)
    finally:
        engine.close()
