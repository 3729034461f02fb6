"""Object bodies in and out: cut a streamed body into chunks and store them; stream a range back.

Write (design brief, "Write path" 1-5): the body is cut into fixed ``chunk_size`` chunks at stream
offsets (the last one shorter). Per chunk, SHA-256 is computed in a thread; the stream's MD5 and
the caller's checksum observers are fed every chunk in stream order, also in a thread. Chunks the
metadata store already holds are not written again (dedup); new ones are written as stripes, in
batches of up to ``parallel_chunks // 2`` stripes sent together (each node then takes its fragments
of the batch in one message and one group commit). At most ``parallel_chunks`` chunks are in
progress, so memory stays bounded by about ``(parallel_chunks + 1) * chunk_size``.
Nothing is recorded in metadata here: the caller commits metadata after this returns ("blocks
first, then metadata").

Read: ``read_stream`` yields the bytes of an object range chunk by chunk while the next chunk is
already being fetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from common.layout import CHUNK_SIZE
from frontend.chunk_store import ChunkStore, ChunkToWrite
from frontend.datapath_errors import EntityTooLarge
from frontend.erasure import ChunkBuffer
from metadata.records import ChunkRef

#: Chunks fetched ahead of the one being sent by ``read_stream`` (the one being sent included).
#: The window is refilled once half of it is consumed, with its fetches started together, so
#: each node gets the fragments of several chunks as one batch.
READ_AHEAD_CHUNKS = 4


class Hasher(Protocol):
    """A streaming checksum (``hashlib`` object or S3 checksum): fed the body in order."""

    def update(self, data: Any, /) -> Any:
        """Add the next bytes of the stream (a bytes-like object, e.g. ``memoryview``)."""
        ...


class ChunkIndex(Protocol):
    """What ``write_stream`` needs of the metadata store (blocking; called in a thread)."""

    def chunks_present(self, hashes: Iterable[str]) -> set[str]:
        """Return which of ``hashes`` (64-char lowercase hex SHA-256) are already stored."""
        ...


@dataclass(frozen=True)
class WrittenContent:
    """What ``write_stream`` stored: ``size`` bytes, the MD5 of the whole body (hex), the chunk list
    in body order (hex hash, size, offset within the body) and how many distinct chunks were new
    (written as stripes) rather than deduplicated."""

    size: int
    md5_hex: str
    chunks: tuple[ChunkRef, ...]
    new_chunk_count: int


def _new_chunk_target(store: ChunkStore, chunk_size: int) -> tuple[ChunkBuffer | None, memoryview]:
    """Where to assemble the next chunk: an erasure-coder buffer if one is free, else a bytearray."""
    buffer = store.try_chunk_buffer()
    if buffer is not None:
        if len(buffer.view) >= chunk_size:
            return buffer, buffer.view[:chunk_size]
        buffer.release()
    return None, memoryview(bytearray(chunk_size))


def _feed(hashers: Sequence[Hasher], data: memoryview) -> None:
    for hasher in hashers:
        hasher.update(data)


class _ChunkWriter:
    """Hashes, dedups and writes the chunks of one stream; tracks the tasks doing it.

    New chunks gather in a batch that is written (``ChunkStore.write_chunks``) once it holds
    ``stripes_per_batch`` chunks, or once no chunk that could still join it is on its way: none is
    being hashed or checked for dedup, and the stream ended or waits for room that no batch being
    written will free. (Flushing whenever the stream waits for room would send most batches
    with one stripe: the stripes of a batch finish one by one, each making room for one chunk.)
    """

    def __init__(
        self, store: ChunkStore, metadata: ChunkIndex, hashers: Sequence[Hasher], parallel_chunks: int
    ) -> None:
        self.store = store
        self.metadata = metadata
        self.hashers = hashers
        self.parallel_chunks = parallel_chunks
        self.stripes_per_batch = max(1, parallel_chunks // 2)
        self.batch: list[tuple[ChunkToWrite, asyncio.Future[None]]] = []
        self.batch_writes: set[asyncio.Task[None]] = set()
        # Chunks submitted whose dedup decision is not made yet (they may still join the batch).
        self.undecided = 0
        self.waiting_for_room = False
        self.ended = False
        self.in_flight: set[asyncio.Task[None]] = set()
        self.results: list[asyncio.Task[ChunkRef]] = []
        # Stream hashers must see chunks in order: each chunk's update waits for the previous one.
        self.previous_stream_update: asyncio.Future[None] | None = None
        # Identical chunks within one body are written once.
        self.writes: dict[str, asyncio.Task[bool]] = {}
        # Erasure-coder buffers owned by chunks still being hashed or written.
        self.buffers: set[ChunkBuffer] = set()

    async def submit(self, chunk: memoryview, offset: int, buffer: ChunkBuffer | None = None) -> None:
        """Queue ``chunk`` (kept unchanged by the caller) at body ``offset``; waits while too many run.

        ``buffer``: the erasure coder's buffer ``chunk`` was assembled in (``chunk`` is a view of
        it); the writer owns it from now on and releases it once the chunk is hashed and stored.
        """
        if buffer is not None:
            self.buffers.add(buffer)
        while len(self.in_flight) >= self.parallel_chunks:
            self.waiting_for_room = True
            self._write_batch_if_due()
            try:
                done, self.in_flight = await asyncio.wait(self.in_flight, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.waiting_for_room = False
            for task in done:
                task.result()  # re-raise the first failure
        self.undecided += 1
        previous = self.previous_stream_update
        stream_update = asyncio.ensure_future(self._update_stream_hashers(previous, chunk))
        self.previous_stream_update = stream_update
        ref_task = asyncio.create_task(self._store_chunk(chunk, offset, buffer))
        self.results.append(ref_task)
        self.in_flight.add(asyncio.create_task(self._both(stream_update, ref_task, buffer)))

    async def _both(
        self, stream_update: asyncio.Future[None], ref_task: asyncio.Task[ChunkRef], buffer: ChunkBuffer | None
    ) -> None:
        await asyncio.gather(stream_update, ref_task)
        if buffer is not None:
            # Both readers of the chunk are done. (On failure ``cancel`` releases it once every
            # task that might still read it has stopped.)
            self.buffers.discard(buffer)
            buffer.release()

    async def _update_stream_hashers(self, previous: asyncio.Future[None] | None, chunk: memoryview) -> None:
        if previous is not None:
            await previous
        await asyncio.to_thread(_feed, self.hashers, chunk)

    async def _store_chunk(self, chunk: memoryview, offset: int, buffer: ChunkBuffer | None) -> ChunkRef:
        try:
            digest = await asyncio.to_thread(lambda: hashlib.sha256(chunk).digest())
        except BaseException:
            self._decided()
            raise
        hex_hash = digest.hex()
        write = self.writes.get(hex_hash)
        if write is None:
            write = asyncio.create_task(self._write_if_absent(digest, hex_hash, chunk, buffer))
            self.writes[hex_hash] = write
        else:
            self._decided()
        await asyncio.shield(write)  # another chunk of this body may wait on the same write
        return ChunkRef(hash=hex_hash, size=len(chunk), offset=offset)

    async def _write_if_absent(
        self, digest: bytes, hex_hash: str, chunk: memoryview, buffer: ChunkBuffer | None
    ) -> bool:
        try:
            present = await asyncio.to_thread(self.metadata.chunks_present, [hex_hash])
        except BaseException:
            self._decided()
            raise
        if hex_hash in present:
            self._decided()
            return False
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.batch.append((ChunkToWrite(chunk_hash=digest, size=len(chunk), data=chunk, buffer=buffer), written))
        self._decided()
        await written
        return True

    def _decided(self) -> None:
        """One chunk's dedup decision is made (or failed): the batch may now be due."""
        self.undecided -= 1
        self._write_batch_if_due()

    def _write_batch_if_due(self) -> None:
        if not self.batch:
            return
        stuck = self.waiting_for_room and not self.batch_writes
        if len(self.batch) < self.stripes_per_batch and (self.undecided > 0 or not (self.ended or stuck)):
            return  # more chunks may still join
        batch, self.batch = self.batch, []
        self.batch_writes.add(asyncio.create_task(self._write_batch(batch)))

    async def _write_batch(self, batch: list[tuple[ChunkToWrite, asyncio.Future[None]]]) -> None:
        try:
            await self.store.write_chunks([chunk for chunk, _written in batch])
        except BaseException as exc:
            for _chunk, written in batch:
                if written.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    written.cancel()
                else:
                    written.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        finally:
            current = asyncio.current_task()
            if current is not None:
                self.batch_writes.discard(current)  # this batch frees no more room
            self._write_batch_if_due()
        for _chunk, written in batch:
            if not written.done():
                written.set_result(None)

    async def finish(self) -> tuple[tuple[ChunkRef, ...], int]:
        """Wait for every chunk; return the chunk list and how many distinct chunks were written."""
        self.ended = True
        self._write_batch_if_due()
        while self.in_flight:
            done, self.in_flight = await asyncio.wait(self.in_flight, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        refs = tuple(task.result() for task in self.results)
        return refs, sum(1 for write in self.writes.values() if write.result())

    async def cancel(self) -> None:
        """Cancel everything still running and wait for it to stop."""
        tasks: list[asyncio.Future[Any]] = [*self.in_flight, *self.results, *self.writes.values(),
                                            *self.batch_writes]
        for _chunk, written in self.batch:
            written.cancel()
        self.batch = []
        if self.previous_stream_update is not None:
            tasks.append(self.previous_stream_update)
        for task in tasks:
            task.cancel()
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            # Even when this wait is itself cancelled, the shared-memory slots go back to the pool.
            buffers, self.buffers = self.buffers, set()
            for buffer in buffers:
                buffer.release()


async def write_stream(
    body: AsyncIterator[bytes | bytearray | memoryview],
    store: ChunkStore,
    metadata: ChunkIndex,
    *,
    observers: Sequence[Hasher] = (),
    chunk_size: int = CHUNK_SIZE,
    max_size: int | None = None,
    parallel_chunks: int = 3,
) -> WrittenContent:
    """Store a streamed body as chunks; return its size, MD5, chunk list and new-chunk count.

    ``body`` yields bytes-like pieces of any size. Chunks are cut at body offsets that are
    multiples of ``chunk_size`` (bytes); an empty body has no chunks. ``observers`` receive every
    byte of the body in order (``update`` is called from a worker thread, one chunk at a time).
    ``metadata.chunks_present`` is called in a thread per chunk; chunks it reports are not
    written. At most ``parallel_chunks`` chunks are hashed or written at once. Nothing is
    recorded in metadata.

    Raises:
        EntityTooLarge: the body exceeded ``max_size`` bytes (nothing more is read).
        InsufficientFragments: a stripe write missed its quorum (retryable).
        Any error of ``body`` or ``metadata``. On any error every in-flight write is cancelled and
        awaited before the error propagates.
    """
    if chunk_size <= 0 or parallel_chunks <= 0:
        raise ValueError("chunk_size and parallel_chunks must be positive")
    md5 = hashlib.md5(usedforsecurity=False)
    writer = _ChunkWriter(store, metadata, [md5, *observers], parallel_chunks)
    size = 0
    chunk_offset = 0
    # The chunk being assembled: a view of ``coder_buffer`` (where the erasure worker reads it, so
    # it is never copied again) when one is free, else of a private bytearray.
    coder_buffer: ChunkBuffer | None = None
    target = memoryview(bytearray(0))
    filled = 0
    try:
        async for piece in body:
            view = memoryview(piece).cast("B")
            size += len(view)
            if max_size is not None and size > max_size:
                raise EntityTooLarge(max_size)
            while len(view):
                if filled == 0 and len(view) >= chunk_size and isinstance(piece, bytes):
                    # Immutable input: the chunk can be a view of it, no copy.
                    await writer.submit(view[:chunk_size], chunk_offset)
                    chunk_offset += chunk_size
                    view = view[chunk_size:]
                    continue
                if filled == 0:
                    coder_buffer, target = _new_chunk_target(store, chunk_size)
                take = min(chunk_size - filled, len(view))
                target[filled : filled + take] = view[:take]
                filled += take
                view = view[take:]
                if filled == chunk_size:
                    # The submitted chunk (and its buffer) now belongs to the writer.
                    submitted, coder_buffer, filled = coder_buffer, None, 0
                    await writer.submit(target, chunk_offset, submitted)
                    chunk_offset += chunk_size
        if filled:
            submitted, coder_buffer = coder_buffer, None
            await writer.submit(target[:filled], chunk_offset, submitted)
        chunks, new_chunks = await writer.finish()
    except BaseException:
        if coder_buffer is not None:
            coder_buffer.release()
        await writer.cancel()
        raise
    return WrittenContent(size=size, md5_hex=md5.hexdigest(), chunks=chunks, new_chunk_count=new_chunks)


async def read_stream(
    store: ChunkStore, chunks: Sequence[ChunkRef], start: int, end: int
) -> AsyncIterator[bytes]:
    """Yield the bytes ``[start, end)`` of an object made of ``chunks`` (in offset order).

    One ``bytes`` piece per chunk the range touches (``read_stream_pieces`` joined per chunk: one
    copy); the next chunks are fetched while the current one is being consumed
    (up to ``READ_AHEAD_CHUNKS`` in flight). Closing the iterator early cancels the fetches.

    Raises:
        ValueError: ``not 0 <= start <= end <= object size``.
        ChunkUnavailable, ChunkCorrupt: from ``ChunkStore.read_chunk`` (retryable).
    """
    async with contextlib.aclosing(_chunk_pieces(store, chunks, start, end)) as per_chunk:
        async for pieces in per_chunk:
            yield bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)


async def read_stream_pieces(
    store: ChunkStore, chunks: Sequence[ChunkRef], start: int, end: int
) -> AsyncIterator[memoryview]:
    """``read_stream`` without the per-chunk join: yields non-empty read-only views that concatenate
    to bytes ``[start, end)`` (``ChunkStore.read_chunk_pieces``: about one per data fragment, views
    of the received messages, never copied). Same read-ahead, cancellation and errors."""
    async with contextlib.aclosing(_chunk_pieces(store, chunks, start, end)) as per_chunk:
        async for pieces in per_chunk:
            for piece in pieces:
                yield piece


async def _chunk_pieces(
    store: ChunkStore, chunks: Sequence[ChunkRef], start: int, end: int
) -> AsyncGenerator[list[memoryview], None]:
    """The non-empty pieces of each chunk the range touches, in order, up to ``READ_AHEAD_CHUNKS`` in flight."""
    total = sum(chunk.size for chunk in chunks)
    if not 0 <= start <= end <= total:
        raise ValueError(f"range [{start}, {end}) is not within an object of {total} bytes")
    wanted = [
        (chunk, max(start, chunk.offset) - chunk.offset, min(end, chunk.offset + chunk.size) - chunk.offset)
        for chunk in chunks
        if chunk.offset < end and chunk.offset + chunk.size > start
    ]
    fetches: deque[asyncio.Task[list[memoryview]]] = deque()
    position = 0
    try:
        while position < len(wanted) or fetches:
            refill = len(fetches) <= READ_AHEAD_CHUNKS // 2
            while refill and position < len(wanted) and len(fetches) < READ_AHEAD_CHUNKS:
                chunk, chunk_start, chunk_end = wanted[position]
                fetches.append(
                    asyncio.create_task(
                        store.read_chunk_pieces(bytes.fromhex(chunk.hash), chunk.size, chunk_start, chunk_end)
                    )
                )
                position += 1
            pieces = await fetches[0]
            fetches.popleft()
            pieces = [piece for piece in pieces if piece]
            if pieces:
                yield pieces
    finally:
        for task in fetches:
            task.cancel()
        await asyncio.gather(*fetches, return_exceptions=True)
