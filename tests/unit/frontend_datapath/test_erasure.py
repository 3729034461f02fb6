"""Unit tests of frontend.erasure: real pyeclib, real worker processes, real shared memory."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.layout import CHUNK_SIZE, DATA_FRAGMENTS, STRIPE_WIDTH
from frontend.erasure import (
    INLINE_MAX_BYTES,
    SEGMENT_PREFIX,
    SHARED_MEMORY_DIRECTORY,
    ErasureCoder,
    data_fragment_payload_range,
    fragment_bytes,
    fragment_header_bytes,
    fragment_payload_bytes,
    remove_orphaned_segments,
)


@pytest.fixture(scope="module")
def coder() -> Iterator[ErasureCoder]:
    with ErasureCoder(workers=2) as erasure_coder:
        yield erasure_coder


def test_header_is_measured_as_80_bytes() -> None:
    assert fragment_header_bytes() == 80


@pytest.mark.parametrize("size", [1, 9, 10, 11, 4096, INLINE_MAX_BYTES + 1, 1_000_003, CHUNK_SIZE])
def test_encode_is_systematic_and_round_trips(coder: ErasureCoder, size: int) -> None:
    chunk = os.urandom(size)
    fragments = asyncio.run(coder.encode(chunk))
    assert len(fragments) == STRIPE_WIDTH
    assert {len(fragment) for fragment in fragments} == {fragment_bytes(size)}
    header = fragment_header_bytes()
    payload = fragment_payload_bytes(size)
    rebuilt = b"".join(fragment[header:] for fragment in fragments[:DATA_FRAGMENTS])
    assert rebuilt[:size] == chunk
    assert rebuilt[size:] == bytes(len(rebuilt) - size)  # zero padding
    assert payload == -(-size // DATA_FRAGMENTS)
    decoded = asyncio.run(coder.decode(dict(enumerate(fragments)), size))
    assert decoded == chunk


@pytest.mark.parametrize("size", [37, CHUNK_SIZE - 1])
def test_decode_from_any_ten_of_fourteen(coder: ErasureCoder, size: int) -> None:
    chunk = os.urandom(size)
    fragments = asyncio.run(coder.encode(chunk))
    combinations = list(itertools.combinations(range(STRIPE_WIDTH), DATA_FRAGMENTS))
    assert len(combinations) == 1001
    # Every combination for the small chunk; a sample (always including data-free ones) for 4 MiB.
    chosen = combinations if size < 1000 else [*combinations[-3:], *random.sample(combinations, 12)]

    async def decode_all() -> list[bytes]:
        return await asyncio.gather(
            *(coder.decode({i: fragments[i] for i in combo}, size) for combo in chosen)
        )

    for decoded in asyncio.run(decode_all()):
        assert decoded == chunk


def test_encode_accepts_memoryview_and_bytearray(coder: ErasureCoder) -> None:
    chunk = bytearray(os.urandom(200_000))
    from_view = asyncio.run(coder.encode(memoryview(chunk)))
    from_bytes = asyncio.run(coder.encode(bytes(chunk)))
    assert from_view == from_bytes


def test_concurrent_encodes_more_than_slots(coder: ErasureCoder) -> None:
    chunks = [os.urandom(300_000 + i) for i in range(9)]

    async def run() -> list[list[bytes]]:
        return await asyncio.gather(*(coder.encode(chunk) for chunk in chunks))

    for chunk, fragments in zip(chunks, asyncio.run(run()), strict=True):
        assert asyncio.run(coder.decode(dict(enumerate(fragments[4:], start=4)), len(chunk))) == chunk


def test_cancelled_encode_does_not_leak_slots(coder: ErasureCoder) -> None:
    chunk = os.urandom(CHUNK_SIZE)

    async def run() -> bytes:
        tasks = [asyncio.create_task(coder.encode(chunk)) for _ in range(8)]
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # All slots come back: more encodes than slots still complete.
        results = await asyncio.gather(*(coder.encode(chunk) for _ in range(6)))
        return await coder.decode(dict(enumerate(results[-1])), len(chunk))

    assert asyncio.run(run()) == chunk


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda f: {i: f[i] for i in range(9)}, id="nine-fragments"),
        pytest.param(lambda f: {**{i: f[i] for i in range(10)}, 3: bytearray(f[3])}, id="bytearray"),
        pytest.param(lambda f: {**{i: f[i] for i in range(10)}, 3: memoryview(f[3])}, id="memoryview"),
        pytest.param(lambda f: {**{i: f[i] for i in range(10)}, 3: f[3][:-1]}, id="short"),
        pytest.param(lambda f: {**{i: f[i] for i in range(9)}, 14: f[9]}, id="index-14"),
        pytest.param(lambda f: {**{i: f[i] for i in range(9)}, 12: f[9]}, id="wrong-index"),
    ],
)
def test_decode_rejects_bad_input_without_crashing(coder: ErasureCoder, mutate: object) -> None:
    for size in (100, 500_000):
        fragments = asyncio.run(coder.encode(os.urandom(size)))
        with pytest.raises(ValueError):
            asyncio.run(coder.decode(mutate(fragments), size))  # type: ignore[operator]
    # The workers survived: a good decode still works.
    chunk = os.urandom(500_000)
    fragments = asyncio.run(coder.encode(chunk))
    assert asyncio.run(coder.decode(dict(enumerate(fragments)), len(chunk))) == chunk


def test_decode_rejects_wrong_chunk_size(coder: ErasureCoder) -> None:
    chunk = os.urandom(500_001)
    fragments = asyncio.run(coder.encode(chunk))
    with pytest.raises(ValueError):
        # Same fragment length (ceil division), different original size in the headers.
        asyncio.run(coder.decode(dict(enumerate(fragments)), 500_002))


def test_encode_rejects_empty_and_oversized(coder: ErasureCoder) -> None:
    with pytest.raises(ValueError):
        asyncio.run(coder.encode(b""))
    with pytest.raises(ValueError):
        asyncio.run(coder.encode(bytes(CHUNK_SIZE + 1)))


def test_closed_coder_refuses_work() -> None:
    erasure_coder = ErasureCoder(workers=1)
    erasure_coder.close()
    with pytest.raises(RuntimeError):
        asyncio.run(erasure_coder.encode(b"x" * 100))


def _slice_via_ranges(chunk: bytes, start: int, end: int) -> bytes:
    """Rebuild chunk[start:end] from the simulated data-fragment payloads, per the helper's answer."""
    payload = fragment_payload_bytes(len(chunk))
    padded = chunk + bytes(payload * DATA_FRAGMENTS - len(chunk))
    payloads = [padded[i * payload : (i + 1) * payload] for i in range(DATA_FRAGMENTS)]
    return b"".join(payloads[i][a:b] for i, a, b in data_fragment_payload_range(len(chunk), start, end))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), size=st.one_of(st.integers(1, 100), st.integers(1, CHUNK_SIZE), st.just(CHUNK_SIZE)))
def test_payload_range_matches_slicing(data: st.DataObject, size: int) -> None:
    start = data.draw(st.integers(0, size))
    end = data.draw(st.integers(start, size))
    ranges = data_fragment_payload_range(size, start, end)
    payload = fragment_payload_bytes(size)
    assert sum(b - a for _, a, b in ranges) == end - start
    for index, payload_start, payload_end in ranges:
        assert 0 <= index < DATA_FRAGMENTS
        assert 0 <= payload_start < payload_end <= payload
        assert index * payload + payload_end <= size  # never reads padding
    assert [i for i, _, _ in ranges] == list(range(ranges[0][0], ranges[-1][0] + 1)) if ranges else True
    if size <= 4096:
        chunk = hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1)
        assert _slice_via_ranges(chunk[:size], start, end) == chunk[start:end]


def test_payload_range_examples() -> None:
    assert data_fragment_payload_range(1, 0, 1) == [(0, 0, 1)]
    assert data_fragment_payload_range(1, 0, 0) == []
    size = CHUNK_SIZE
    payload = 419_431
    assert fragment_payload_bytes(size) == payload
    assert data_fragment_payload_range(size, 0, size)[-1] == (9, 0, size - 9 * payload)
    straddling = data_fragment_payload_range(size, payload - 1, payload + 1)
    assert straddling == [(0, payload - 1, payload), (1, 0, 1)]
    with pytest.raises(ValueError):
        data_fragment_payload_range(size, 5, 4)
    with pytest.raises(ValueError):
        data_fragment_payload_range(size, 0, size + 1)
    with pytest.raises(ValueError):
        data_fragment_payload_range(0, 0, 0)


def test_a_dead_worker_is_replaced() -> None:
    chunk = os.urandom(500_000)
    with ErasureCoder(workers=1) as erasure_coder:
        first = asyncio.run(erasure_coder.encode(chunk))
        worker_pids = list(erasure_coder._executor._processes)  # the pool this test started
        assert worker_pids
        for pid in worker_pids:
            os.kill(pid, signal.SIGKILL)
        # The broken pool is noticed (now or at the next call) and replaced; later calls work.
        for _ in range(3):
            try:
                assert asyncio.run(erasure_coder.encode(chunk)) == first
                break
            except BrokenProcessPool:
                continue
        else:
            pytest.fail("the coder never recovered from a dead worker")
        assert asyncio.run(erasure_coder.decode(dict(enumerate(first)), len(chunk))) == chunk


def _start_in_new_session(program: str) -> subprocess.Popen[str]:
    """Run the Python ``program`` in its own session (so a test can kill its whole process group);
    its stdout is piped, as text."""
    return subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)


def _segments_of(pid: int) -> set[str]:
    return {name for name in os.listdir(SHARED_MEMORY_DIRECTORY) if name.startswith(f"{SEGMENT_PREFIX}{pid}-")}


@pytest.mark.skipif(not os.path.isdir(SHARED_MEMORY_DIRECTORY), reason="no POSIX shared-memory directory")
def test_segments_of_a_killed_coder_are_removed_by_the_next_one(coder: ErasureCoder) -> None:
    # A frontend killed with its process group (its resource tracker dies too) cannot unlink its
    # segments; the next coder started on the machine removes them, and only them.
    program = (
        "import time\n"
        "from frontend.erasure import ErasureCoder\n"
        "coder = ErasureCoder(workers=1, chunk_buffers=1)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = _start_in_new_session(program)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        left_behind = _segments_of(process.pid)
        assert len(left_behind) == 3  # 2 slots per worker + 1 chunk buffer
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()  # reaped: its pid no longer names a process
    assert _segments_of(process.pid) == left_behind  # nothing unlinked them
    ours = _segments_of(os.getpid())
    assert ours  # the module's coder, alive
    with ErasureCoder(workers=1, chunk_buffers=0):
        assert _segments_of(process.pid) == set()
        assert _segments_of(os.getpid()) >= ours
    assert _segments_of(os.getpid()) == ours  # the closed coder unlinked its own
    # A second sweep leaves live owners' segments alone.
    remove_orphaned_segments()
    assert _segments_of(os.getpid()) == ours


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _semaphores() -> set[str]:
    return {name for name in os.listdir(SHARED_MEMORY_DIRECTORY) if name.startswith("sem.mp-")}


@pytest.mark.skipif(not os.path.isdir(SHARED_MEMORY_DIRECTORY), reason="no POSIX shared-memory directory")
def test_a_coder_killed_alone_leaves_no_process_semaphore_or_segment() -> None:
    # SIGKILL of the frontend only (not its process group), as the OOM killer does: its workers
    # notice and exit, then its resource tracker unlinks what the pool registered and exits too.
    semaphores_before = _semaphores()
    program = (
        "import asyncio, os, time\n"
        "from multiprocessing import resource_tracker\n"
        "from frontend.erasure import ErasureCoder\n"
        "coder = ErasureCoder(workers=2, chunk_buffers=1)\n"
        "async def both():\n"
        "    await asyncio.gather(*(coder.encode(os.urandom(500_000)) for _ in range(2)))\n"
        "asyncio.run(both())\n"
        "print(*coder._executor._processes, resource_tracker._resource_tracker._pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    process = _start_in_new_session(program)
    try:
        assert process.stdout is not None
        helpers = [int(pid) for pid in process.stdout.readline().split()]
        # The workers the pool started (one per waiting task, up to two) and the resource tracker.
        assert 2 <= len(helpers) <= 3
        assert _segments_of(process.pid)
        assert _semaphores() - semaphores_before  # the pool's queues and locks
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(_gone(pid) for pid in helpers):
            time.sleep(0.1)
        assert [pid for pid in helpers if not _gone(pid)] == []
        assert _segments_of(process.pid) == set()
        assert _semaphores() - semaphores_before == set()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
