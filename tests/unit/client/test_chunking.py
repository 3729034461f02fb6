"""client.chunking: FastCDC cuts over real files, SHA-256 names, shift resistance, torn-read guard."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
from fastcdc import fastcdc

from client.chunking import (
    ChunkerSettings,
    FileChunk,
    chunk_file,
    chunk_file_stable,
    chunk_sizes_valid,
    chunks_with_offsets,
    content_digest,
    read_chunk,
)

KIB = 1024
MIB = 1024 * KIB
# Small sizes keep the tests fast while exercising the same code paths as the 1/4/16 MiB defaults.
SMALL = ChunkerSettings(min_size=64 * KIB, avg_size=256 * KIB, max_size=1 * MIB)


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def check_covers(chunks: list[FileChunk], data: bytes, settings: ChunkerSettings) -> None:
    assert chunk_sizes_valid(chunks, settings)
    assert sum(chunk.size for chunk in chunks) == len(data)
    for chunk in chunks:
        assert chunk.hash == hashlib.sha256(data[chunk.offset:chunk.offset + chunk.size]).hexdigest()


def test_empty_file_has_no_chunks(tmp_path: Path) -> None:
    path = write(tmp_path / "empty", b"")
    assert chunk_file(path, SMALL) == []
    assert content_digest([]) == hashlib.sha256(b"").hexdigest()
    result = chunk_file_stable(path, SMALL)
    assert result is not None
    assert result[0] == []


def test_small_file_is_one_chunk(tmp_path: Path) -> None:
    data = b"hello, coffer"
    chunks = chunk_file(write(tmp_path / "small", data), SMALL)
    assert chunks == [FileChunk(hashlib.sha256(data).hexdigest(), 0, len(data))]


def test_deterministic_and_equal_to_whole_buffer_fastcdc(tmp_path: Path) -> None:
    data = random_bytes(9 * MIB + 12345, seed=1)
    path = write(tmp_path / "f", data)
    # A buffer of the minimum size forces many refills; the cuts must equal one pass over all bytes.
    streamed = chunk_file(path, SMALL, buffer_size=1)
    default = chunk_file(path, SMALL)
    whole = [(cut.offset, cut.length) for cut in fastcdc(data, min_size=SMALL.min_size,
                                                          avg_size=SMALL.avg_size, max_size=SMALL.max_size)]
    assert streamed == default
    assert [(chunk.offset, chunk.size) for chunk in streamed] == whole
    check_covers(streamed, data, SMALL)
    assert len(streamed) > 10


def test_sizes_within_bounds_for_zeros(tmp_path: Path) -> None:
    # Zeros never match the gear mask: every chunk is cut at max_size.
    data = bytes(5 * MIB + 7)
    chunks = chunk_file(write(tmp_path / "zeros", data), SMALL)
    check_covers(chunks, data, SMALL)
    assert [chunk.size for chunk in chunks[:-1]] == [SMALL.max_size] * (len(chunks) - 1)


def test_default_settings_on_40_mib_insert_and_flip(tmp_path: Path) -> None:
    settings = ChunkerSettings()
    data = random_bytes(40 * MIB, seed=2)
    original = chunk_file(write(tmp_path / "a", data), settings)
    check_covers(original, data, settings)
    assert len(original) >= 4
    original_hashes = {chunk.hash for chunk in original}

    inserted = chunk_file(write(tmp_path / "b", random_bytes(KIB, seed=3) + data), settings)
    changed = [chunk for chunk in inserted if chunk.hash not in original_hashes]
    assert len(changed) <= 2
    assert len({chunk.hash for chunk in inserted} & original_hashes) >= len(original) - 2

    flipped_data = bytearray(data)
    flipped_data[len(data) // 2] ^= 0xFF
    flipped = chunk_file(write(tmp_path / "c", bytes(flipped_data)), settings)
    changed = [chunk for chunk in flipped if chunk.hash not in original_hashes]
    assert 1 <= len(changed) <= 2
    assert content_digest(flipped) != content_digest(original)


def test_content_digest_equal_iff_same_chunk_list() -> None:
    a = chunks_with_offsets([("aa" * 32, 10), ("bb" * 32, 5)])
    assert a[1].offset == 10
    assert content_digest(a) == content_digest(chunks_with_offsets([("aa" * 32, 10), ("bb" * 32, 5)]))
    assert content_digest(a) != content_digest(chunks_with_offsets([("bb" * 32, 5), ("aa" * 32, 10)]))
    assert content_digest(a) != content_digest(chunks_with_offsets([("aa" * 32, 10)]))


def test_stable_returns_stat_of_unchanged_file(tmp_path: Path) -> None:
    data = random_bytes(3 * MIB, seed=4)
    path = write(tmp_path / "f", data)
    result = chunk_file_stable(path, SMALL)
    assert result is not None
    chunks, stat = result
    assert stat.st_size == len(data)
    assert stat.st_ino == os.stat(path).st_ino
    check_covers(chunks, data, SMALL)


def test_stable_detects_file_changed_while_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from client import chunking

    path = write(tmp_path / "f", random_bytes(2 * MIB, seed=5))
    real_chunk_file = chunking.chunk_file

    def chunk_then_append(target: str | os.PathLike[str], settings: ChunkerSettings) -> list[FileChunk]:
        chunks = real_chunk_file(target, settings)
        with open(target, "ab") as file:  # another writer appends while the daemon reads
            file.write(b"more")
        return chunks

    monkeypatch.setattr(chunking, "chunk_file", chunk_then_append)
    assert chunk_file_stable(path, SMALL) is None


def test_settings_validate() -> None:
    with pytest.raises(ValueError):
        ChunkerSettings(min_size=8 * MIB, avg_size=4 * MIB, max_size=16 * MIB)
    with pytest.raises(ValueError):
        ChunkerSettings(min_size=1, avg_size=4 * MIB, max_size=16 * MIB)


def test_read_chunk_verifies_bytes(tmp_path: Path) -> None:
    data = random_bytes(3 * MIB, seed=6)
    path = write(tmp_path / "f", data)
    chunks = chunk_file(path, SMALL)
    middle = chunks[len(chunks) // 2]
    assert read_chunk(path, middle.offset, middle.size, middle.hash) == data[middle.offset:middle.offset + middle.size]
    assert read_chunk(path, middle.offset + 1, middle.size, middle.hash) is None  # changed/shifted bytes
    assert read_chunk(path, len(data) - 10, 20, middle.hash) is None  # beyond the end
    assert read_chunk(tmp_path / "missing", 0, 1, middle.hash) is None
