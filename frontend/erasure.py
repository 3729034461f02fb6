"""Reed-Solomon erasure coding of chunks, off the event loop.

A chunk encodes to a stripe of ``STRIPE_WIDTH`` (14) fragments: ``DATA_FRAGMENTS`` (10) data and
``PARITY_FRAGMENTS`` (4) parity, pyeclib ``isa_l_rs_vand`` (systematic Reed-Solomon over GF(2^8),
Vandermonde matrix, Intel ISA-L). Every pyeclib fragment is a fixed header (80 bytes, measured at
start-up through ``ECDriver.get_metadata``) followed by a payload of ``s = ceil(chunk_size / 10)``
bytes; data fragment ``i`` carries ``chunk[i*s:(i+1)*s]`` (the last ones zero-padded), so healthy
reads slice data fragments and never decode (``data_fragment_payload_range``). Those pure
helpers live in ``common.erasure_code`` (storage nodes rebuild fragments with them too); this
module re-exports the ones the frontend uses.

pyeclib holds the GIL while it codes, so ``ErasureCoder`` runs it in worker processes. Shipping a
4 MiB chunk to a worker and 14 fragments back through pickle over pipes cost ~18 ms per chunk on
this machine against ~0.6 ms for the encode itself, so chunks and fragments travel through
``multiprocessing.shared_memory`` slots instead and only offsets cross the pipe.

The slots are POSIX shared-memory segments named ``coffer-ec-<owner pid>-<random>``. A frontend
stopped normally unlinks them; one killed with its process group (SIGKILL takes Python's resource
tracker too) cannot, and its segments would hold their memory until reboot. So every new
``ErasureCoder`` first removes the segments whose owner process is gone
(``remove_orphaned_segments``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import multiprocessing
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory
from typing import Any

from common.erasure_code import (
    data_fragment_payload_range,
    decode_fragments,
    driver,
    fragment_bytes,
    fragment_header_bytes,
    fragment_payload_bytes,
    validate_fragments,
)
from common.layout import CHUNK_SIZE, STRIPE_WIDTH
from common.malloc import tune_malloc

logger = logging.getLogger(__name__)

#: Chunks up to this size are coded in the calling thread: a process hop (~0.2 ms) costs more
#: than coding them (a few microseconds), and holding the GIL that briefly does not stall the loop.
INLINE_MAX_BYTES = 64 * 1024

#: Name prefix of the coder's shared-memory segments; the owner's pid follows it.
SEGMENT_PREFIX = "coffer-ec-"
#: Where Linux shows POSIX shared-memory segments as files.
SHARED_MEMORY_DIRECTORY = "/dev/shm"
#: How often (seconds) a worker checks that the process that started it is still alive.
ORPHAN_CHECK_SECONDS = 0.5


# The pure coding helpers live in common.erasure_code (storage nodes rebuild fragments with them
# too); the names the frontend imported from here stay available.
_driver = driver
_decode_fragments = decode_fragments


# ---- worker side -------------------------------------------------------------------------------

_attached: dict[str, SharedMemory] = {}


def _buffer(shm: SharedMemory) -> memoryview:
    buf = shm.buf
    if buf is None:  # only after close()
        raise RuntimeError(f"shared memory {shm.name} is closed")
    return buf


def _worker_init(parent_pid: int) -> None:
    tune_malloc()
    _driver()
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), name="orphan-watch", daemon=True).start()


def _exit_when_orphaned(parent_pid: int) -> None:
    """End this worker once ``parent_pid`` (the frontend that started it) is gone.

    A frontend killed alone (SIGKILL, the OOM killer) cannot stop its pool, and an idle worker
    would wait on its task queue forever: each worker holds that queue's write end, so it never
    reads end-of-file. Once the workers are gone too, nothing holds the pipe to Python's resource
    tracker any more, and the tracker unlinks the semaphores and shared-memory segments the pool
    registered, then exits. ``os.getppid`` changes when the parent dies (the worker is re-parented);
    polled rather than ``PR_SET_PDEATHSIG``, which fires when the *thread* that started the worker
    ends, and the pool starts workers from whichever thread submits.
    """
    while os.getppid() == parent_pid:
        time.sleep(ORPHAN_CHECK_SECONDS)
    os._exit(0)


def _attach(segment: str) -> SharedMemory:
    shm = _attached.get(segment)
    if shm is None:
        # Workers share the parent's resource tracker (spawn passes its fd), so attaching only
        # re-adds the name to its set; the parent unregisters it when it unlinks.
        shm = SharedMemory(name=segment)
        _attached[segment] = shm
    return shm


def _encode_in_worker(segment: str, length: int, output_offset: int) -> int:
    """Encode ``segment[0:length]``; write the 14 fragments back to back at ``output_offset``.

    Returns the length of one fragment.
    """
    buf = _buffer(_attach(segment))
    fragments = _driver().encode(bytes(buf[:length]))
    fragment_length = len(fragments[0])
    position = output_offset
    for fragment in fragments:
        buf[position : position + fragment_length] = fragment
        position += fragment_length
    return fragment_length


def _decode_in_worker(
    segment: str, layout: list[tuple[int, int, int]], chunk_size: int, output_offset: int
) -> int:
    """Decode the fragments at ``layout`` ``[(index, offset, length)]``; write the chunk at ``output_offset``.

    Returns the chunk length.
    """
    buf = _buffer(_attach(segment))
    fragments = {index: bytes(buf[offset : offset + length]) for index, offset, length in layout}
    data = _decode_fragments(fragments, chunk_size)
    buf[output_offset : output_offset + len(data)] = data
    return len(data)


# ---- parent side -------------------------------------------------------------------------------


class ChunkBuffer:
    """A shared-memory slot a caller fills with one chunk, then encodes in place (``ErasureCoder.try_chunk_buffer``).

    ``view`` is a writable ``memoryview`` of ``max_chunk_size`` bytes. After ``ErasureCoder.encode_buffer``
    the 14 fragments it returns are views into the same slot: they, and ``view``, stay valid until
    ``release()``. Release exactly once (idempotent); the slot goes back to the coder.
    """

    def __init__(self, coder: ErasureCoder, slot: _Slot) -> None:
        self._coder: ErasureCoder | None = coder
        self.slot = slot
        self.view = _buffer(slot.memory)[: coder.max_chunk_size]

    def release(self) -> None:
        """Give the slot back; every view obtained from this buffer must no longer be used."""
        coder, self._coder = self._coder, None
        if coder is not None:
            coder._release_fill_slot(self.slot)


@dataclass
class _Slot:
    """One shared-memory buffer: an input area ``[0, area)`` and an output area ``[area, 2*area)``."""

    memory: SharedMemory
    area: int


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_orphaned_segments(directory: str = SHARED_MEMORY_DIRECTORY) -> int:
    """Unlink the coder segments (``SEGMENT_PREFIX`` + pid) in ``directory`` whose owner process no
    longer exists; return how many were removed. Segments of live processes are never touched (a
    pid reused by another process only delays the removal). Pids are read in this process's PID
    namespace, so ``directory`` must not be shared with another one (containers get their own
    ``/dev/shm``). Returns 0 where ``directory`` does not exist (no POSIX shared-memory filesystem)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    removed = 0
    for name in names:
        owner = name.removeprefix(SEGMENT_PREFIX).split("-", 1)[0]
        if not name.startswith(SEGMENT_PREFIX) or not owner.isdigit() or _process_exists(int(owner)):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
            removed += 1
    return removed


def _new_segment(size: int) -> SharedMemory:
    """A fresh segment of ``size`` bytes named ``SEGMENT_PREFIX<pid>-<random>``."""
    while True:
        name = f"{SEGMENT_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
        try:
            return SharedMemory(name=name, create=True, size=size)
        except FileExistsError:  # 64 random bits collided: pick another name
            continue


def _release_segments(segments: list[SharedMemory]) -> None:
    for shm in segments:
        # A view still referenced somewhere keeps the mapping until it goes; unlink regardless.
        with contextlib.suppress(BufferError):
            shm.close()
        with contextlib.suppress(FileNotFoundError):
            shm.unlink()


class ErasureCoder:
    """Encodes chunks into stripes and decodes them back, in ``workers`` worker processes.

    ``max_chunk_size`` (bytes, default ``CHUNK_SIZE``) bounds the chunks accepted; it sizes the
    ``2 * workers`` shared-memory slots (~12 MB each for 4 MiB chunks) through which chunks and
    fragments travel, plus ``chunk_buffers`` slots lent out by ``try_chunk_buffer`` so that a
    writer can assemble a chunk where the worker reads it and send fragments from where the worker
    wrote them (no copies in between). Workers are started with the ``spawn`` method (safe beside gRPC's threads)
    and run ``tune_malloc()`` first; the parent runs it too, before the pool starts, so the
    thresholds are also in the environment the workers inherit. A worker ends by itself within
    ``ORPHAN_CHECK_SECONDS`` of its parent's death. Use from one event loop at a time.
    Call ``close()`` to stop the workers and free the shared memory.
    """

    def __init__(self, workers: int = 2, *, max_chunk_size: int = CHUNK_SIZE, chunk_buffers: int = 8) -> None:
        if workers < 1 or chunk_buffers < 0:
            raise ValueError("workers must be at least 1 and chunk_buffers not negative")
        tune_malloc()
        removed = remove_orphaned_segments()
        if removed:
            logger.info("removed shared memory left by erasure coders that died",
                        extra={"fields": {"segments": removed}})
        self.max_chunk_size = max_chunk_size
        fragment_length = fragment_bytes(max_chunk_size)
        area = max(max_chunk_size, STRIPE_WIDTH * fragment_length)
        self._segments = [_new_segment(2 * area) for _ in range(2 * workers + chunk_buffers)]
        slots = [_Slot(shm, area) for shm in self._segments]
        self._free: list[_Slot] = slots[: 2 * workers]
        # Slots lent to callers that assemble a chunk in place (never waited for: see try_chunk_buffer).
        self._fill_free: list[_Slot] = slots[2 * workers :]
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._workers = workers
        self._executor = self._new_executor()
        self._closed = False
        self._finalizer = weakref.finalize(self, _release_segments, self._segments)

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(os.getpid(),),
        )

    def _replace_broken_pool(self, broken: ProcessPoolExecutor) -> None:
        """A dead worker breaks the whole pool: start a fresh one so later calls work again."""
        if self._executor is broken and not self._closed:
            logger.error("erasure-coding worker died; restarting the worker pool")
            self._executor = self._new_executor()
            broken.shutdown(wait=False, cancel_futures=True)

    async def encode(self, chunk: bytes | bytearray | memoryview) -> list[bytes]:
        """Encode one chunk (1..``max_chunk_size`` bytes) into its 14 fragments, index order.

        Every fragment is ``fragment_bytes(len(chunk))`` bytes: header then payload.

        Raises:
            ValueError: empty or oversized chunk. RuntimeError: the coder is closed.
            concurrent.futures.process.BrokenProcessPool: a worker died (the pool is restarted).
        """
        self._check_open()
        view = memoryview(chunk).cast("B")
        length = len(view)
        if not 0 < length <= self.max_chunk_size:
            raise ValueError(f"chunk must be 1..{self.max_chunk_size} bytes, got {length}")
        if length <= INLINE_MAX_BYTES:
            # pyeclib's encode accepts only bytes (perf-notes).
            return list(_driver().encode(bytes(view)))
        slot = await self._acquire()
        buf = _buffer(slot.memory)
        try:
            buf[:length] = view
        except BaseException:
            self._release(slot)
            raise
        fragment_length = await self._run(
            slot, _encode_in_worker, slot.memory.name, length, slot.area
        )  # releases the slot itself on failure
        try:
            base = slot.area
            return [
                bytes(buf[base + i * fragment_length : base + (i + 1) * fragment_length])
                for i in range(STRIPE_WIDTH)
            ]
        finally:
            self._release(slot)

    def try_chunk_buffer(self) -> ChunkBuffer | None:
        """Lend a shared-memory slot to fill with a chunk, or None when all are lent (no waiting).

        Never waits, so a slow client filling a buffer cannot hold up others: when none is free the
        caller assembles the chunk elsewhere and uses ``encode``. Raises RuntimeError when closed.
        """
        self._check_open()
        if not self._fill_free:
            return None
        return ChunkBuffer(self, self._fill_free.pop())

    def _release_fill_slot(self, slot: _Slot) -> None:
        if slot not in self._fill_free:
            self._fill_free.append(slot)

    async def encode_buffer(self, buffer: ChunkBuffer, length: int) -> list[memoryview]:
        """Encode the chunk in ``buffer.view[:length]`` (1..``max_chunk_size`` bytes) in place.

        Returns the 14 fragments (header then payload, ``fragment_bytes(length)`` bytes each) as
        read-only views into the buffer, valid until ``buffer.release()``. The chunk bytes are
        left unchanged. If the caller is cancelled while the worker runs, the buffer is released
        only when the worker is done (the caller must still call ``release()``; it is idempotent).

        Raises:
            ValueError: ``length`` out of range. RuntimeError: the coder is closed or the buffer
                was released. BrokenProcessPool: a worker died (the pool is restarted).
        """
        self._check_open()
        if buffer._coder is not self:
            raise RuntimeError("chunk buffer was released or belongs to another coder")
        if not 0 < length <= self.max_chunk_size:
            raise ValueError(f"chunk must be 1..{self.max_chunk_size} bytes, got {length}")
        slot = buffer.slot
        if length <= INLINE_MAX_BYTES:
            fragments = [memoryview(f) for f in _driver().encode(bytes(buffer.view[:length]))]
            return [f.toreadonly() for f in fragments]
        loop = asyncio.get_running_loop()
        executor = self._executor
        try:
            job = loop.run_in_executor(executor, _encode_in_worker, slot.memory.name, length, slot.area)
        except BrokenProcessPool:
            self._replace_broken_pool(executor)
            executor = self._executor
            job = loop.run_in_executor(executor, _encode_in_worker, slot.memory.name, length, slot.area)
        try:
            fragment_length = await asyncio.shield(job)
        except asyncio.CancelledError:
            # The worker may still write into the slot: keep it lent until the job ends.
            buffer._coder = None
            job.add_done_callback(lambda _job: self._release_fill_slot(slot))
            raise
        except BrokenProcessPool:
            self._replace_broken_pool(executor)
            raise
        output = _buffer(slot.memory).toreadonly()
        base = slot.area
        return [output[base + i * fragment_length : base + (i + 1) * fragment_length] for i in range(STRIPE_WIDTH)]

    async def decode(self, fragments: Mapping[int, bytes], chunk_size: int) -> bytes:
        """Rebuild a ``chunk_size``-byte chunk from at least 10 of its fragments.

        ``fragments`` maps fragment index (0..13) to the whole fragment (header + payload) as
        ``bytes``; all must have the same length. Any 10 suffice (data or parity).

        Raises:
            ValueError: fewer than 10 fragments, bad index, non-bytes, unequal or wrong lengths,
                a header that names another index, or a rebuilt size other than ``chunk_size``.
            pyeclib.ec_iface.ECDriverError: pyeclib refused the fragments.
            RuntimeError: the coder is closed.
        """
        self._check_open()
        self._validate_fragments(fragments, chunk_size)
        if chunk_size <= INLINE_MAX_BYTES:
            return _decode_fragments(fragments, chunk_size)
        slot = await self._acquire()
        buf = _buffer(slot.memory)
        layout: list[tuple[int, int, int]] = []
        position = 0
        try:
            for index, fragment in fragments.items():
                buf[position : position + len(fragment)] = fragment
                layout.append((index, position, len(fragment)))
                position += len(fragment)
        except BaseException:
            self._release(slot)
            raise
        length = await self._run(
            slot, _decode_in_worker, slot.memory.name, layout, chunk_size, slot.area
        )  # releases the slot itself on failure
        try:
            return bytes(buf[slot.area : slot.area + length])
        finally:
            self._release(slot)

    def _validate_fragments(self, fragments: Mapping[int, bytes], chunk_size: int) -> None:
        # pyeclib aborts the whole process on non-bytes input (perf-notes), so check everything.
        validate_fragments(fragments, chunk_size, self.max_chunk_size)

    async def _run(self, slot: _Slot, function: Callable[..., int], *args: Any) -> int:
        """Run ``function(*args)`` in a worker; the slot is released on failure (by ``_wait``)."""
        loop = asyncio.get_running_loop()
        executor = self._executor
        try:
            try:
                job = loop.run_in_executor(executor, function, *args)
            except BrokenProcessPool:
                # The pool broke earlier (a worker died while idle): this job never ran, so run it
                # on a fresh pool.
                self._replace_broken_pool(executor)
                executor = self._executor
                job = loop.run_in_executor(executor, function, *args)
        except BaseException:
            self._release(slot)
            raise
        return await self._wait(job, slot, executor)

    async def _wait(self, job: asyncio.Future[int], slot: _Slot, executor: ProcessPoolExecutor) -> int:
        """Await the worker; if the caller is cancelled, free ``slot`` only once the worker is done."""
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            job.add_done_callback(lambda _job: self._release(slot))
            raise
        except BrokenProcessPool:
            self._release(slot)
            self._replace_broken_pool(executor)
            raise
        except BaseException:
            self._release(slot)
            raise

    async def _acquire(self) -> _Slot:
        while not self._free:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # pass the wake-up on to the next waiter
                raise
        return self._free.pop()

    def _release(self, slot: _Slot) -> None:
        if slot not in self._free:
            self._free.append(slot)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("ErasureCoder is closed")

    def close(self) -> None:
        """Stop the worker processes (waiting for running jobs) and free the shared memory."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._finalizer()

    def __enter__(self) -> ErasureCoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = [
    "INLINE_MAX_BYTES",
    "SEGMENT_PREFIX",
    "ChunkBuffer",
    "ErasureCoder",
    "data_fragment_payload_range",
    "fragment_bytes",
    "fragment_header_bytes",
    "fragment_payload_bytes",
    "remove_orphaned_segments",
]
