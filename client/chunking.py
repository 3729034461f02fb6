"""Content-defined chunking of synced files into sync chunks (FastCDC + SHA-256).

A sync chunk is one FastCDC chunk of a file, named by the SHA-256 hex of its bytes (contracts
section 0). FastCDC is Xia et al., "FastCDC: a Fast and Efficient Content-Defined Chunking Approach
for Data Deduplication" (USENIX ATC 2016), as implemented by the `fastcdc` package; its cut points
depend only on the bytes near them, so an insertion or a one-byte edit changes one or two chunks
and leaves the others (and their hashes) as they were.

Files are read with `readinto` into one reusable buffer rather than mmapped: a file truncated by
another process while it is mmapped kills the reader with SIGBUS, and a sync daemon reads files
that users are editing. The cut points are the same as over the whole file (see `chunk_file`).
Everything here is blocking: call it through `asyncio.to_thread` (hashlib releases the GIL).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from fastcdc import fastcdc

MIB = 1024 * 1024
# fastcdc reads a window of max(64 KiB, max_size) bytes from each chunk start to find its cut.
_FASTCDC_MIN_WINDOW = 64 * 1024


@dataclass(frozen=True)
class ChunkerSettings:
    """FastCDC sizes in bytes: every chunk but a file's last is in [min_size, max_size].

    Defaults (1 / 4 / 16 MiB) follow contracts section 0. fastcdc accepts min 64 B..64 MiB,
    avg 256 B..256 MiB, max 1 KiB..1 GiB; `__post_init__` raises ValueError outside those or
    unless min_size <= avg_size <= max_size.
    """

    min_size: int = 1 * MIB
    avg_size: int = 4 * MIB
    max_size: int = 16 * MIB

    def __post_init__(self) -> None:
        if not (64 <= self.min_size <= 64 * MIB and 256 <= self.avg_size <= 256 * MIB
                and 1024 <= self.max_size <= 1024 * MIB):
            raise ValueError(f"chunk sizes out of fastcdc's range: {self}")
        if not self.min_size <= self.avg_size <= self.max_size:
            raise ValueError(f"need min_size <= avg_size <= max_size: {self}")


@dataclass(frozen=True)
class FileChunk:
    """One sync chunk of a file: `hash` (64 lowercase hex SHA-256), `offset` and `size` in bytes."""

    hash: str
    offset: int
    size: int


class HashAndSize(Protocol):
    """Anything with a chunk `hash` (hex) and `size` (bytes): FileChunk or a remote chunk record."""

    @property
    def hash(self) -> str: ...

    @property
    def size(self) -> int: ...


def content_digest(chunks: Iterable[HashAndSize]) -> str:
    """SHA-256 hex over the concatenated `"<hash>:<size>\\n"` lines of `chunks` (contracts section 4).

    Two files have equal digests iff they have the same chunk list; an empty file's digest is the
    SHA-256 of nothing. The tree and the planner compare files by this value.
    """
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(f"{chunk.hash}:{chunk.size}\n".encode())
    return digest.hexdigest()


def chunks_with_offsets(pairs: Iterable[tuple[str, int]]) -> list[FileChunk]:
    """FileChunks for an ordered list of (hash, size) pairs (e.g. the API's chunk list), offsets summed."""
    chunks = []
    offset = 0
    for chunk_hash, size in pairs:
        chunks.append(FileChunk(chunk_hash, offset, size))
        offset += size
    return chunks


def chunk_file(path: str | os.PathLike[str], settings: ChunkerSettings = ChunkerSettings(),
               *, buffer_size: int | None = None) -> list[FileChunk]:
    """Cut the file at `path` into FastCDC chunks and hash each with SHA-256. Blocking.

    Returns the chunks in file order (offsets contiguous from 0); an empty file gives []. The file is
    read sequentially into a buffer of `buffer_size` bytes (default 4 x max_size; at least
    2 x max(64 KiB, max_size)). A cut is accepted only when fastcdc's whole look-ahead window for that
    chunk lies in the buffer (or the buffer ends at end of file), so the result equals chunking the
    whole file in one piece. Raises OSError if the file cannot be opened or read.
    """
    window = max(_FASTCDC_MIN_WINDOW, settings.max_size)
    size = buffer_size if buffer_size is not None else 4 * settings.max_size
    size = max(size, 2 * window)
    chunks: list[FileChunk] = []
    base = 0  # file offset of buffer[0]
    filled = 0
    at_eof = False
    with open(path, "rb", buffering=0) as file:
        # A small file gets a small buffer (one read, then EOF); it grows if the file grows meanwhile.
        capacity = min(size, os.fstat(file.fileno()).st_size + 1)
        buffer = bytearray(capacity)
        view = memoryview(buffer)
        while True:
            while not at_eof and filled < capacity:
                count = file.readinto(view[filled:])
                if not count:
                    at_eof = True
                else:
                    filled += count
            if not at_eof and capacity < size:
                view.release()
                buffer.extend(bytes(size - capacity))
                capacity = size
                view = memoryview(buffer)
                continue
            if filled == 0:
                break
            consumed = _cut(view[:filled], base, settings, window, at_eof, chunks)
            if at_eof and consumed == filled:
                break
            # Keep the bytes after the last accepted cut; memoryview assignment copies overlap safely.
            remaining = filled - consumed
            view[:remaining] = view[consumed:filled]
            base += consumed
            filled = remaining
        view.release()
    return chunks


def _cut(data: memoryview, base: int, settings: ChunkerSettings, window: int, at_eof: bool,
         out: list[FileChunk]) -> int:
    """Append the chunks of `data` whose cut is final to `out`; return the bytes they cover."""
    limit = len(data)
    consumed = 0
    cuts = fastcdc(data, min_size=settings.min_size, avg_size=settings.avg_size,
                   max_size=settings.max_size, fat=False)
    try:
        for cut in cuts:
            if not at_eof and cut.offset + window > limit:
                break  # fastcdc saw a truncated window: recut once more bytes are buffered
            piece = data[cut.offset:cut.offset + cut.length]
            out.append(FileChunk(hashlib.sha256(piece).hexdigest(), base + cut.offset, cut.length))
            piece.release()
            consumed = cut.offset + cut.length
    finally:
        cuts.close()  # drops the generator's views of the buffer so it can be reused
    return consumed


def same_file_state(before: os.stat_result, after: os.stat_result) -> bool:
    """True if two stats of one path show the same file with the same size, mtime and ctime."""
    return (before.st_ino == after.st_ino and before.st_dev == after.st_dev
            and before.st_size == after.st_size and before.st_mtime_ns == after.st_mtime_ns
            and before.st_ctime_ns == after.st_ctime_ns)


def chunk_file_stable(path: str | os.PathLike[str], settings: ChunkerSettings = ChunkerSettings()
                      ) -> tuple[list[FileChunk], os.stat_result] | None:
    """`chunk_file` guarded by a stat before and after: None if the file changed while being read.

    Returns (chunks, the stat taken before reading) when the size, mtime, ctime, inode and device
    are unchanged and the chunks cover exactly the stat's size, so the daemon never uploads a torn
    file. Limits: a write that keeps the size and lands within the file system's timestamp
    granularity of the first stat is not seen (like git's "racy clean" case). Raises OSError
    (FileNotFoundError if the file vanished before the first stat or while being opened).
    """
    before = os.stat(path, follow_symlinks=False)
    chunks = chunk_file(path, settings)
    try:
        after = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    covered = chunks[-1].offset + chunks[-1].size if chunks else 0
    if not same_file_state(before, after) or covered != before.st_size:
        return None
    return chunks, before


def chunk_sizes_valid(chunks: Sequence[FileChunk], settings: ChunkerSettings) -> bool:
    """True if offsets are contiguous from 0 and every chunk but the last is within [min, max]."""
    offset = 0
    for index, chunk in enumerate(chunks):
        if chunk.offset != offset or chunk.size <= 0 or chunk.size > settings.max_size:
            return False
        if index < len(chunks) - 1 and chunk.size < settings.min_size:
            return False
        offset += chunk.size
    return True


def read_chunk(path: str | os.PathLike[str], offset: int, size: int, expected_hash: str) -> bytearray | None:
    """The `size` bytes at `offset` of the file at `path` if their SHA-256 hex is `expected_hash`.

    For uploads (a chunk is re-read and re-checked just before it is sent, so a file changed since
    the scan is never sent torn) and chunk reuse (a download copies a chunk from a local file,
    `LocalIndex.find_chunk`, instead of fetching it). Returns None if the file is gone, shorter, or
    changed (hash differs). Blocking: call it in a thread.
    """
    buffer = bytearray(size)
    try:
        with open(path, "rb", buffering=0) as file:
            file.seek(offset)
            view = memoryview(buffer)
            filled = 0
            while filled < size:
                count = file.readinto(view[filled:])
                if not count:
                    return None
                filled += count
            view.release()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None
    if hashlib.sha256(buffer).hexdigest() != expected_hash:
        return None
    return buffer  # the buffer itself: a 16 MiB chunk is not copied again
