"""Object bodies in and out: cut a streamed body into chunks and store them; stream a range back.

Write (design brief, "Write path" 1-5): the body is cut into fixed ``chunk_size`` chunks at stream
offsets (the last one shorter). Per chunk, SHA-256 is computed in a thread; the stream's MD5 and
each of the caller's checksum observers are fed every chunk in stream order, each in its own chain
of thread calls, and the body is read at most ``STREAM_HASH_AHEAD_CHUNKS`` ahead of them. Every chunk is
pinned in the metadata store under the request's pin id before anything is written
(``ChunkIndex.pin_chunks``, which also answers the dedup question); the pins of chunks hashed
meanwhile go in one transaction, like a group commit. LIVE chunks are not written again (dedup);
new ones are written as stripes, in batches of up to ``parallel_chunks // 2`` stripes sent together
(each node then takes its fragments of the batch in one message and one group commit). A chunk
that garbage collection is deleting makes the write wait (50 ms, doubling, at most 1 s between
tries) and pin again; after ``collection_wait_seconds`` it fails with ``ChunkBeingCollected``.
At most ``parallel_chunks`` chunks are in progress, so memory stays bounded by about
``(parallel_chunks + 1) * chunk_size``.
Nothing but pins is recorded in metadata here: the caller commits metadata with the pin id after
this returns ("blocks first, then metadata"), or calls ``release_pins`` on failure. The protocol
and why it is race-free: metadata/store.py.

Read: ``read_stream`` yields the bytes of an object range chunk by chunk while the next chunks are
already being fetched (up to ``READ_AHEAD_CHUNKS``), once a ``MemoryBudget`` has room for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from prometheus_client import Counter

from common.layout import CHUNK_SIZE
from frontend.chunk_store import ChunkStore, ChunkToWrite
from frontend.datapath_errors import ChunkBeingCollected, EntityTooLarge
from frontend.erasure import ChunkBuffer
from frontend.memory_budget import MemoryBudget
from metadata.records import ChunkRef, PinResult

log = logging.getLogger("frontend.object_io")

T = TypeVar("T")

#: How long a write waits, by default, for garbage collection to finish a chunk it needs (seconds).
COLLECTION_WAIT_SECONDS = 10.0
_FIRST_RETRY_SECONDS = 0.05
_MAX_RETRY_SECONDS = 1.0

PUT_WAITS = Counter("coffer_gc_put_waits_total",
                    "Chunk pins of writes that found the chunk being garbage collected and waited")

#: Chunks fetched ahead of the one being sent by ``read_stream`` (the one being sent included).
#: The window is refilled once half of it is consumed, with its fetches started together, so
#: each node gets the fragments of several chunks as one batch (one executor call, one message).
#: Much of the nodes' share of a large GET is paid per message (Python, gRPC, executor wake-ups),
#: so batch size pays: 256 MiB GETs on the 14-node dev cluster (means of 16, alternating runs)
#: cost the nodes 1.28-1.36 CPU-s per GB at 16 against 1.70-1.72 at 8, and ran 389-400 MB/s
#: against 362-370. 24 and 32 cut the nodes' CPU little more (1.23-1.33) but ran slower (348-368
#: MB/s; the client spent more). 8 had beaten 4 the same way. Memory is the price: up to 64 MiB
#: of fragments per GET, taken from the frontend's read budget (frontend/memory_budget.py).
READ_AHEAD_CHUNKS = 16

#: How many chunks a body may be read ahead of its stream hashers (MD5, the signed payload's
#: SHA-256, flexible checksums). A stream hasher is a serial chain, one chunk after the other, while
#: the chunk window refills in bursts (a finished batch of stripes frees many slots at once) that
#: are read at socket speed, ~1.5 GB/s against MD5's 0.6. Unbounded, the last burst of a 256 MiB
#: PUT left ~30 chunks of MD5 (~0.19 s) after its last stripe was durable, on one core while the
#: other idled. Bounded, the hashers finish with the body. On the dev cluster, 256 MiB PUTs (means
#: of 12): 140 and 149 MB/s unbounded against 146 and 161 bounded at 4, in alternating runs.
STREAM_HASH_AHEAD_CHUNKS = 4


class Hasher(Protocol):
    """A streaming checksum (``hashlib`` object or S3 checksum): fed the body in order."""

    def update(self, data: Any, /) -> Any:
        """Add the next bytes of the stream (a bytes-like object, e.g. ``memoryview``)."""
        ...


class ChunkIndex(Protocol):
    """What ``write_stream`` needs of the metadata store (blocking; called in a thread).
    ``metadata.MetadataStore`` implements it; see its docstrings for the full rules."""

    def pin_chunks(self, pin_id: str, chunks: Sequence[ChunkRef]) -> PinResult:
        """Pin ``chunks`` (hash and size) for the writer ``pin_id``; say which are LIVE (dedup),
        which to write, and which garbage collection is deleting (not pinned)."""
        ...

    def release_pins(self, pin_id: str) -> int:
        """Drop every pin of ``pin_id``; return how many there were."""
        ...


def new_pin_id() -> str:
    """A fresh pin id for one request's writes (32 hex characters, uuid4)."""
    return uuid.uuid4().hex


async def run_to_completion(function: Callable[..., T], *args: Any) -> T:
    """Run the blocking ``function(*args)`` in a thread; if the caller is cancelled meanwhile, wait
    until the thread has finished before re-raising, so a metadata transaction the caller started
    has committed or failed by the time its cleanup (``release_pins``) runs."""
    task = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


async def release_pins(metadata: ChunkIndex, pin_id: str) -> None:
    """Release a failed request's pins (its chunks become collectable after the grace period).
    Never raises but CancelledError: a pin that cannot be released expires after the pin TTL."""
    try:
        await run_to_completion(metadata.release_pins, pin_id)
    except Exception as exc:
        log.warning("could not release pins; they expire with the pin TTL",
                    extra={"fields": {"pin_id": pin_id, "error": repr(exc)}})


class _PinAnswer(enum.Enum):
    PRESENT = "present"
    TO_WRITE = "to_write"
    BEING_COLLECTED = "being_collected"


@dataclass(frozen=True)
class WrittenContent:
    """What ``write_stream`` stored: ``size`` bytes, the MD5 of the whole body (hex), the chunk list
    in body order (hex hash, size, offset within the body), how many distinct chunks were new
    (written as stripes) rather than deduplicated, and the ``pin_id`` that pins every chunk (commit
    with it, or release it)."""

    size: int
    md5_hex: str
    chunks: tuple[ChunkRef, ...]
    new_chunk_count: int
    pin_id: str


def _new_chunk_target(store: ChunkStore, chunk_size: int) -> tuple[ChunkBuffer | None, memoryview]:
    """Where to assemble the next chunk: an erasure-coder buffer if one is free, else a bytearray."""
    buffer = store.try_chunk_buffer()
    if buffer is not None:
        if len(buffer.view) >= chunk_size:
            return buffer, buffer.view[:chunk_size]
        buffer.release()
    return None, memoryview(bytearray(chunk_size))


async def _update_stream_hasher(previous: asyncio.Future[None] | None, hasher: Hasher, chunk: memoryview) -> None:
    """Feed ``chunk`` to ``hasher`` in a thread (hashlib releases the GIL) once ``previous``, its
    update with the chunk before (None for the first chunk), has finished."""
    if previous is not None:
        await previous
    await asyncio.to_thread(hasher.update, chunk)


class _ChunkWriter:
    """Hashes, dedups and writes the chunks of one stream; tracks the tasks doing it.

    New chunks gather in a batch that is written (``ChunkStore.write_chunks``) once it holds
    ``stripes_per_batch`` chunks, or once no chunk that could still join it is on its way: none is
    being hashed or checked for dedup, and the stream ended or waits for room that no batch being
    written will free. (Flushing whenever the stream waits for room would send most batches
    with one stripe: the stripes of a batch finish one by one, each making room for one chunk.)
    """

    def __init__(
        self, store: ChunkStore, metadata: ChunkIndex, hashers: Sequence[Hasher], parallel_chunks: int,
        pin_id: str, collection_wait_seconds: float,
    ) -> None:
        self.store = store
        self.metadata = metadata
        self.pin_id = pin_id
        self.collection_wait_seconds = collection_wait_seconds
        # Chunks waiting for their pin; one pin transaction takes all that queued meanwhile.
        self.pin_queue: list[tuple[ChunkRef, asyncio.Future[_PinAnswer]]] = []
        self.pinner: asyncio.Task[None] | None = None
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
        # Each stream hasher must see chunks in order: its update with a chunk waits for its update
        # with the previous one. The hashers are independent, so each has its own chain and they
        # run in parallel: chained as one (MD5, then SHA-256, then a CRC, per chunk), 256 MiB PUTs
        # made 132 and 143 MB/s against 143 and 154 (means of 12, dev cluster).
        self.last_stream_updates: list[asyncio.Future[None] | None] = [None] * len(hashers)
        # Per chunk not yet seen by every stream hasher, in body order: its hasher updates.
        self.unhashed_chunks: deque[list[asyncio.Future[None]]] = deque()
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
        while self.unhashed_chunks and all(update.done() for update in self.unhashed_chunks[0]):
            self.unhashed_chunks.popleft()
        if len(self.unhashed_chunks) >= STREAM_HASH_AHEAD_CHUNKS:
            # Waits for the stream hashers only (they depend on nothing else), so no batch is held.
            await asyncio.wait(self.unhashed_chunks.popleft())
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
        stream_updates: list[asyncio.Future[None]] = []
        for index, hasher in enumerate(self.hashers):
            update = asyncio.ensure_future(_update_stream_hasher(self.last_stream_updates[index], hasher, chunk))
            self.last_stream_updates[index] = update
            stream_updates.append(update)
        if stream_updates:
            self.unhashed_chunks.append(stream_updates)
        ref_task = asyncio.create_task(self._store_chunk(chunk, offset, buffer))
        self.results.append(ref_task)
        self.in_flight.add(asyncio.create_task(self._all_done(stream_updates, ref_task, buffer)))

    async def _all_done(
        self, stream_updates: list[asyncio.Future[None]], ref_task: asyncio.Task[ChunkRef],
        buffer: ChunkBuffer | None,
    ) -> None:
        await asyncio.gather(*stream_updates, ref_task)
        if buffer is not None:
            # Every reader of the chunk is done. (On failure ``cancel`` releases it once every
            # task that might still read it has stopped.)
            self.buffers.discard(buffer)
            buffer.release()

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
            answer = await self._pin_when_not_collected(ChunkRef(hash=hex_hash, size=len(chunk), offset=0))
        except BaseException:
            self._decided()
            raise
        if answer is _PinAnswer.PRESENT:
            self._decided()
            return False
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.batch.append((ChunkToWrite(chunk_hash=digest, size=len(chunk), data=chunk, buffer=buffer), written))
        self._decided()
        await written
        return True

    async def _pin_when_not_collected(self, ref: ChunkRef) -> _PinAnswer:
        """Pin ``ref``; while garbage collection is deleting it, wait with backoff and pin again.
        Raises ChunkBeingCollected after ``collection_wait_seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.collection_wait_seconds
        delay = _FIRST_RETRY_SECONDS
        while True:
            answer = await self._pin(ref)
            if answer is not _PinAnswer.BEING_COLLECTED:
                return answer
            if loop.time() + delay > deadline:
                raise ChunkBeingCollected(ref.hash, self.collection_wait_seconds)
            PUT_WAITS.inc()
            # While this chunk waits, it cannot join a batch: let the others go without it.
            self.undecided -= 1
            self._write_batch_if_due()
            try:
                await asyncio.sleep(delay)
            finally:
                self.undecided += 1
            delay = min(delay * 2, _MAX_RETRY_SECONDS)

    async def _pin(self, ref: ChunkRef) -> _PinAnswer:
        answer: asyncio.Future[_PinAnswer] = asyncio.get_running_loop().create_future()
        self.pin_queue.append((ref, answer))
        if self.pinner is None:
            self.pinner = asyncio.create_task(self._run_pins())
        return await answer

    async def _run_pins(self) -> None:
        """Pin what is queued, one transaction per round, until the queue is empty."""
        try:
            while self.pin_queue:
                queued, self.pin_queue = self.pin_queue, []
                try:
                    result = await run_to_completion(
                        self.metadata.pin_chunks, self.pin_id, [ref for ref, _answer in queued])
                except Exception as exc:
                    for _ref, answer in queued:
                        if not answer.done():
                            answer.set_exception(exc)
                    continue
                except BaseException:
                    for _ref, answer in queued:
                        answer.cancel()
                    raise
                for ref, answer in queued:
                    if answer.done():
                        continue
                    if ref.hash in result.present:
                        answer.set_result(_PinAnswer.PRESENT)
                    elif ref.hash in result.being_collected:
                        answer.set_result(_PinAnswer.BEING_COLLECTED)
                    else:
                        answer.set_result(_PinAnswer.TO_WRITE)
        finally:
            self.pinner = None
            for _ref, answer in self.pin_queue:
                answer.cancel()
            self.pin_queue = []

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
        if self.pinner is not None:
            # Awaited below: a pin transaction in flight finishes before the caller releases pins.
            tasks.append(self.pinner)
        for _chunk, written in self.batch:
            written.cancel()
        self.batch = []
        tasks.extend(update for update in self.last_stream_updates if update is not None)
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
    pin_id: str | None = None,
    collection_wait_seconds: float = COLLECTION_WAIT_SECONDS,
) -> WrittenContent:
    """Store a streamed body as chunks; return its size, MD5, chunk list, new-chunk count and pin id.

    ``body`` yields bytes-like pieces of any size. Chunks are cut at body offsets that are
    multiples of ``chunk_size`` (bytes); an empty body has no chunks. ``observers`` receive every
    byte of the body in order (``update`` is called from a worker thread, one chunk at a time);
    different observers are updated at the same time, so they must not share state.
    Every chunk is pinned under ``pin_id`` (``new_pin_id()`` when None) with
    ``metadata.pin_chunks``, called in a thread for the chunks hashed since the previous call;
    LIVE chunks are not written. At most ``parallel_chunks`` chunks are hashed or written at once.
    Only pins are recorded in metadata: commit with the returned ``pin_id``. On failure the
    caller releases the pins (``release_pins``) with the pin id it passed; so pass one.

    Raises:
        EntityTooLarge: the body exceeded ``max_size`` bytes (nothing more is read).
        InsufficientFragments: a stripe write missed its quorum (retryable).
        ChunkBeingCollected: garbage collection still deletes a chunk of the body after
            ``collection_wait_seconds`` (retryable).
        Any error of ``body`` or ``metadata``. On any error every in-flight write and pin
        transaction is cancelled and awaited before the error propagates.
    """
    if chunk_size <= 0 or parallel_chunks <= 0:
        raise ValueError("chunk_size and parallel_chunks must be positive")
    md5 = hashlib.md5(usedforsecurity=False)
    pin_id = pin_id if pin_id is not None else new_pin_id()
    writer = _ChunkWriter(store, metadata, [md5, *observers], parallel_chunks, pin_id, collection_wait_seconds)
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
    return WrittenContent(size=size, md5_hex=md5.hexdigest(), chunks=chunks, new_chunk_count=new_chunks,
                          pin_id=pin_id)


async def read_stream(
    store: ChunkStore, chunks: Sequence[ChunkRef], start: int, end: int, *, budget: MemoryBudget | None = None
) -> AsyncGenerator[bytes, None]:
    """Yield the bytes ``[start, end)`` of an object made of ``chunks`` (in offset order).

    One ``bytes`` piece per chunk the range touches (``read_stream_pieces`` joined per chunk: one
    copy); the next chunks are fetched while the current one is being consumed
    (up to ``READ_AHEAD_CHUNKS`` in flight). Before the first fetch, ``budget`` (when given) is asked
    for the read-ahead window (bytes: the sizes of up to ``READ_AHEAD_CHUNKS`` touched chunks),
    held until the iterator ends; waiting for it is the only delay a full budget causes. Closing
    the iterator early cancels the fetches and frees the window.

    Raises:
        ValueError: ``not 0 <= start <= end <= object size``.
        ChunkUnavailable, ChunkCorrupt: from ``ChunkStore.read_chunk`` (retryable).
    """
    async with contextlib.aclosing(_chunk_pieces(store, chunks, start, end, budget)) as per_chunk:
        async for pieces in per_chunk:
            yield bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)


async def read_stream_pieces(
    store: ChunkStore, chunks: Sequence[ChunkRef], start: int, end: int, *, budget: MemoryBudget | None = None
) -> AsyncGenerator[memoryview, None]:
    """``read_stream`` without the per-chunk join: yields non-empty read-only views that concatenate
    to bytes ``[start, end)`` (``ChunkStore.read_chunk_pieces``: about one per data fragment, views
    of the received messages, never copied). Same read-ahead, budget, cancellation and errors."""
    async with contextlib.aclosing(_chunk_pieces(store, chunks, start, end, budget)) as per_chunk:
        async for pieces in per_chunk:
            for piece in pieces:
                yield piece


async def _chunk_pieces(
    store: ChunkStore, chunks: Sequence[ChunkRef], start: int, end: int, budget: MemoryBudget | None
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
    if budget is None or not wanted:
        reservation: contextlib.AbstractAsyncContextManager[object] = contextlib.nullcontext()
    else:
        # The most chunk bytes in flight at once: a ranged read fetches whole data fragments, so a
        # chunk it touches counts whole.
        sizes = [chunk.size for chunk, _start, _end in wanted]
        reservation = budget.reserve(min(sum(sizes), READ_AHEAD_CHUNKS * max(sizes)))
    async with reservation:
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
