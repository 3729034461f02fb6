"""Placement-group summaries (``FragmentEngine.summarize`` / ``summarize_by_index``) checked against
``list_pg`` as ground truth, after puts, rewrites, deletes, conditional deletes, quarantine and a
reopen, on real RocksDB databases (two volumes) in a temporary directory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from awscrt.checksums import crc32c

from storagenode.engine import SUMMARY_DIGEST_BYTES, FragmentEngine, FragmentWrite, fragment_key, summary_item
from storagenode.errors import InvalidFragment
from tests.unit.storagenode.test_engine_format3 import chunk_hash_for, flip_last_data_byte, fragment, volume_of

PGS = (0, 3, 7)


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


def ground_truth(engine: FragmentEngine, pgs: tuple[int, ...] = PGS) -> dict[int, dict[int, tuple[int, bytes]]]:
    """The summaries computed independently from ``list_pg``."""
    truth: dict[int, dict[int, tuple[int, bytes]]] = {}
    for pg in pgs:
        by_index: dict[int, list[int]] = {}
        for entry in engine.list_pg(pg):
            slot = by_index.setdefault(entry.index, [0, 0])
            slot[0] += 1
            slot[1] = (slot[1] + summary_item(entry.chunk_hash, entry.chunk_size, entry.length)) % 2**128
        if by_index:
            truth[pg] = {index: (count, digest.to_bytes(16, "big")) for index, (count, digest) in by_index.items()}
    return truth


def put(engine: FragmentEngine, seed: int, index: int, pg: int, size: int = 1024) -> bytes:
    chunk_hash = chunk_hash_for(seed)
    data = fragment(seed, size)
    engine.put(chunk_hash, index, pg, data, crc32c(data), size * 10)
    return chunk_hash


def test_summaries_follow_puts_rewrites_and_deletes(engine: FragmentEngine) -> None:
    assert engine.summarize_by_index() == {}
    hashes = [put(engine, seed, seed % 3, PGS[seed % len(PGS)]) for seed in range(30)]
    assert engine.summarize_by_index() == ground_truth(engine)
    assert engine.summarize_by_index([3]) == {3: ground_truth(engine)[3]}
    # A rewrite of the same key with another length: same count, another digest.
    before = engine.summarize_by_index([PGS[1]])[PGS[1]]
    put(engine, 1, 1, PGS[1], size=2048)
    after = engine.summarize_by_index([PGS[1]])[PGS[1]]
    assert after[1][0] == before[1][0] and after[1][1] != before[1][1]
    assert engine.summarize_by_index() == ground_truth(engine)
    # Deletes: unconditional, conditional kept (written later), conditional done.
    assert engine.delete(hashes[0], 0, PGS[0])
    assert not engine.delete(hashes[3], 0, PGS[0], written_before_ms=1)
    assert engine.delete(hashes[6], 0, PGS[0], written_before_ms=time.time_ns() // 1_000_000 + 10_000)
    assert not engine.delete(hashes[6], 0, PGS[0])  # already gone: nothing changes
    assert engine.summarize_by_index() == ground_truth(engine)
    # A placement group emptied entirely disappears.
    for seed, chunk_hash in enumerate(hashes):
        if PGS[seed % len(PGS)] == PGS[2]:
            engine.delete(chunk_hash, seed % 3, PGS[2])
    assert PGS[2] not in engine.summarize_by_index()
    assert engine.summarize_by_index() == ground_truth(engine)


def test_put_many_and_asked_for_groups_before_a_full_summary(engine: FragmentEngine) -> None:
    writes = []
    for seed in range(12):
        data = fragment(seed, 512)
        writes.append(FragmentWrite(chunk_hash_for(seed), 5, PGS[seed % 2], data, crc32c(data), 5120))
    assert engine.put_many(writes) == [None] * 12
    # Asked for single groups first (no full scan yet), then for everything.
    assert engine.summarize_by_index([PGS[0], 99]) == {PGS[0]: ground_truth(engine)[PGS[0]]}
    put(engine, 100, 2, PGS[0])
    assert engine.summarize_by_index() == ground_truth(engine)
    put(engine, 101, 4, PGS[1])
    assert engine.summarize_by_index() == ground_truth(engine)


def test_the_aggregate_summary_is_equal_on_every_complete_position(engine: FragmentEngine) -> None:
    # The same three chunks at indexes 0 and 9 (as two members of one PG would hold them).
    for seed in range(3):
        for index in (0, 9):
            put(engine, seed, index, 4)
    by_index = engine.summarize_by_index([4])[4]
    assert by_index[0] == by_index[9]
    assert by_index[0][0] == 3 and len(by_index[0][1]) == SUMMARY_DIGEST_BYTES
    count, digest = engine.summarize([4])[4]
    assert count == 6
    # The aggregate is the sum: the same item twice does not cancel out (as XOR would).
    assert int.from_bytes(digest, "big") == 2 * int.from_bytes(by_index[0][1], "big") % 2**128
    assert int.from_bytes(digest, "big") != 0


def test_quarantine_and_reopen(engine: FragmentEngine, volumes: list[str]) -> None:
    good = put(engine, 1, 2, 6)
    bad = put(engine, 2, 2, 6)
    engine.close()
    flip_last_data_byte(volume_of(volumes, bad), fragment_key(bad, 2, 6))
    reopened = FragmentEngine(volumes, min_free_bytes=0)
    try:
        assert reopened.summarize_by_index([6])[6][2][0] == 2  # computed from disk after the reopen
        assert reopened.quarantine(bad, 2, 6)
        assert reopened.summarize_by_index() == ground_truth(reopened, (6,))
        assert reopened.summarize([6])[6][0] == 1
        assert [entry.chunk_hash for entry in reopened.list_pg(6)] == [good]
    finally:
        reopened.close()


def test_bad_placement_group_is_rejected(engine: FragmentEngine) -> None:
    with pytest.raises(InvalidFragment):
        engine.summarize_by_index([2**32])
