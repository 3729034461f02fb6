"""ChunkStore and object_io against 14 real storage-node processes (no etcd, no placement service).

The cluster map is built by hand (``placement.rendezvous.compute_acting_sets``). Tests run in file
order on one module-scoped cluster: healthy reads and writes first, then a paused node (hedging),
on-disk corruption, and finally killed nodes (4 -> still exact, 5 -> ``ChunkUnavailable``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from prometheus_client import REGISTRY

from common.layout import CHUNK_SIZE, STRIPE_WIDTH, placement_group
from frontend.chunk_store import ChunkStore, ChunkToWrite
from frontend.datapath_errors import ChunkCorrupt, ChunkUnavailable, EntityTooLarge, InsufficientFragments
from frontend.erasure import ErasureCoder, data_fragment_payload_range, fragment_payload_bytes
from frontend.memory_budget import MemoryBudget
from frontend.object_io import (
    READ_AHEAD_CHUNKS,
    STREAM_HASH_AHEAD_CHUNKS,
    read_stream,
    read_stream_pieces,
    write_stream,
)
from metadata.records import ObjectRecord
from metadata.sqlite_store import SqliteMetadataStore
from placement.cluster_map import ClusterMap, FailureDomain, Node, NodeState
from placement.rendezvous import compute_acting_sets
from storagenode.client import StorageNodePool
from tests.fixtures.processes import free_port, port_open, stop_process, wait_until

pytestmark = pytest.mark.integration

PG_COUNT = 16
REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@dataclass
class StorageNodeProcess:
    """One storage-node process this module started."""

    node_id: str
    port: int
    volume: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            sys.executable, "-m", "storagenode.server",
            "--node-id", self.node_id, "--listen", self.address, "--volume", str(self.volume),
            "--zone", "zone-a", "--rack", "rack-a", "--host", f"host-{self.node_id}",
            "--capacity-bytes", str(10 * 2**30), "--metrics-port", str(free_port()),
            # The read-path tests damage fragments on disk: a scrub would remove them first.
            "--no-scrub",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        wait_until(lambda: port_open(self.port) or not self.alive(), 30, f"{self.node_id} to listen")
        if not self.alive():
            raise RuntimeError(f"{self.node_id} exited: {self.log.read_text()[-2000:]}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL: the node vanishes mid-flight, as in a crash."""
        if self.alive():
            self.signal(signal.SIGKILL)
            assert self.process is not None
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            if self.alive():
                os.kill(self.process.pid, signal.SIGCONT)  # a paused node cannot handle SIGTERM
            stop_process(self.process)


@dataclass
class Cluster:
    """14 storage nodes and a hand-built cluster map naming them all UP."""

    nodes: dict[str, StorageNodeProcess]
    cluster_map: ClusterMap
    coder: ErasureCoder
    killed: list[str] = field(default_factory=list)

    def store(self, pool: StorageNodePool, **options: float) -> ChunkStore:
        return ChunkStore(lambda: self.cluster_map, pool, self.coder, **options)  # type: ignore[arg-type]

    def holder(self, chunk_hash: bytes, index: int) -> StorageNodeProcess:
        pg = placement_group(chunk_hash, self.cluster_map.pg_count)
        return self.nodes[self.cluster_map.acting_set(pg)[index]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("chunk-store")
    nodes = {
        f"node-{i:02d}": StorageNodeProcess(
            f"node-{i:02d}", free_port(), root / f"node-{i:02d}" / "volume-0", root / f"node-{i:02d}.log"
        )
        for i in range(STRIPE_WIDTH)
    }
    coder = ErasureCoder(workers=2)
    try:
        for node in nodes.values():
            node.start()
        for node in nodes.values():
            node.wait_ready()
        map_nodes = {
            node.node_id: Node(
                node_id=node.node_id,
                address=node.address,
                failure_domain=FailureDomain("zone-a", "rack-a", f"host-{node.node_id}"),
                capacity_bytes=10 * 2**30,
                state=NodeState.UP,
            )
            for node in nodes.values()
        }
        cluster_map = ClusterMap(
            epoch=1, pg_count=PG_COUNT, nodes=map_nodes, acting_sets=compute_acting_sets(PG_COUNT, map_nodes)
        )
        yield Cluster(nodes, cluster_map, coder)
    finally:
        for node in nodes.values():
            node.stop()
        coder.close()


def run_with_pool(body: Callable[[StorageNodePool], Awaitable[T]], timeout: float = 3.0) -> T:
    """Run ``body`` in a fresh event loop with a fresh client pool (clients are loop-bound)."""

    async def main() -> T:
        pool = StorageNodePool(timeout=timeout)
        try:
            return await body(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def chunk_of(size: int, seed: int) -> tuple[bytes, bytes]:
    data = random.Random(seed).randbytes(size)
    return hashlib.sha256(data).digest(), data


SIZES = [1, 10, 11, 4096, 65_537, 1_000_003, CHUNK_SIZE - 1, CHUNK_SIZE]
# Written healthy at the start; every later test reads them back.
STORED = [chunk_of(size, seed) for seed, size in enumerate(SIZES)]


def ranges_for(size: int, rng: random.Random) -> list[tuple[int, int]]:
    payload = fragment_payload_bytes(size)
    picks = [(0, size), (0, 1), (size - 1, size), (0, min(size, payload)), (size // 2, size)]
    if size > payload:
        picks.append((payload - 1, payload + 1))  # straddles two data fragments
    for _ in range(4):
        start = rng.randrange(size)
        picks.append((start, rng.randrange(start, size + 1)))
    return picks


async def read_all_checked(store: ChunkStore, rng: random.Random) -> None:
    for chunk_hash, data in STORED:
        assert await store.read_chunk(chunk_hash, len(data)) == data
        for start, end in ranges_for(len(data), rng):
            assert await store.read_chunk(chunk_hash, len(data), start, end) == data[start:end]


def test_write_then_read_chunks_and_ranges(cluster: Cluster) -> None:
    written_before = metric("coffer_frontend_chunk_bytes_written_total")
    degraded_before = metric("coffer_frontend_degraded_reads_total")

    async def body(pool: StorageNodePool) -> list[int]:
        store = cluster.store(pool)
        counts = list(await asyncio.gather(*(store.write_chunk(h, d) for h, d in STORED)))
        await read_all_checked(store, random.Random(1))
        return counts

    assert run_with_pool(body) == [STRIPE_WIDTH] * len(STORED)
    assert metric("coffer_frontend_chunk_bytes_written_total") - written_before == sum(SIZES)
    assert metric("coffer_frontend_degraded_reads_total") == degraded_before  # all healthy, no decode


def test_read_of_a_missing_chunk_is_unavailable(cluster: Cluster) -> None:
    chunk_hash, data = chunk_of(5000, seed=999)

    async def body(pool: StorageNodePool) -> None:
        with pytest.raises(ChunkUnavailable):
            await cluster.store(pool).read_chunk(chunk_hash, len(data))

    run_with_pool(body)


async def _chunks(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def test_write_stream_cuts_hashes_dedups_and_reads_back(cluster: Cluster, tmp_path: Path) -> None:
    chunk_size = 300_000
    body_bytes = random.Random(7).randbytes(5 * chunk_size + 12_345)
    rng = random.Random(8)
    pieces = []
    position = 0
    while position < len(body_bytes):  # pieces of uneven sizes, some larger than a chunk
        step = rng.choice([1, 100, 65_536, chunk_size, 2 * chunk_size + 3])
        pieces.append(body_bytes[position : position + step])
        position += step
    metadata = SqliteMetadataStore(tmp_path / "meta.sqlite")
    try:
        metadata.create_bucket("bucket", "owner")
        observer = hashlib.sha1(usedforsecurity=False)

        async def body(pool: StorageNodePool) -> None:
            store = cluster.store(pool)
            written = await write_stream(
                _chunks(pieces),
                store,
                metadata,
                observers=[observer],
                chunk_size=chunk_size,
                parallel_chunks=2,
            )
            assert written.size == len(body_bytes)
            assert written.md5_hex == hashlib.md5(body_bytes, usedforsecurity=False).hexdigest()
            assert observer.hexdigest() == hashlib.sha1(body_bytes, usedforsecurity=False).hexdigest()
            assert [(c.offset, c.size) for c in written.chunks] == [
                (offset, min(chunk_size, len(body_bytes) - offset))
                for offset in range(0, len(body_bytes), chunk_size)
            ]
            for ref in written.chunks:
                expected = body_bytes[ref.offset : ref.offset + ref.size]
                assert ref.hash == hashlib.sha256(expected).hexdigest()
            assert written.new_chunk_count == len(written.chunks)
            # Commit, as the frontend does after the blocks: the same body then writes nothing.
            metadata.put_object(
                ObjectRecord(
                    bucket="bucket", key="k", size=written.size, etag=f'"{written.md5_hex}"',
                    last_modified=time.time(), content_type="application/octet-stream",
                    user_metadata={}, system_metadata={}, checksums={}, chunks=written.chunks,
                    part_count=None,
                ),
                pin_id=written.pin_id,
            )  # fmt: skip
            again = await write_stream(_chunks([body_bytes]), store, metadata, chunk_size=chunk_size)
            assert again.chunks == written.chunks
            assert again.new_chunk_count == 0
            for start, end in [
                (0, len(body_bytes)),
                (0, 0),
                (chunk_size - 1, chunk_size + 1),
                (123, 2 * chunk_size),
            ]:
                pieces_out = [p async for p in read_stream(store, written.chunks, start, end)]
                assert b"".join(pieces_out) == body_bytes[start:end]
                views = [p async for p in read_stream_pieces(store, written.chunks, start, end)]
                assert all(isinstance(view, memoryview) and len(view) > 0 for view in views)
                assert b"".join(views) == body_bytes[start:end]
            # Stopping a read early cancels its prefetch cleanly.
            stream = read_stream(store, written.chunks, 0, len(body_bytes))
            assert await anext(stream) == body_bytes[:chunk_size]
            await stream.aclose()

        run_with_pool(body)
    finally:
        metadata.close()


def test_reads_hold_their_read_ahead_window_in_the_budget(cluster: Cluster, tmp_path: Path) -> None:
    # A read reserves its read-ahead window before its first fetch and gives it back when it ends
    # or is closed; a read that does not fit waits (without failing) until one ends.
    metadata = SqliteMetadataStore(tmp_path / "meta.sqlite")
    chunk_size = 100_000
    long_bytes = random.Random(27).randbytes((READ_AHEAD_CHUNKS + 4) * chunk_size + 1)
    short_bytes = random.Random(28).randbytes(3 * chunk_size)
    window = READ_AHEAD_CHUNKS * chunk_size

    async def body(pool: StorageNodePool) -> None:
        store = cluster.store(pool)
        long = await write_stream(_chunks([long_bytes]), store, metadata, chunk_size=chunk_size)
        short = await write_stream(_chunks([short_bytes]), store, metadata, chunk_size=chunk_size)
        budget = MemoryBudget(window + 3 * chunk_size, name="test-read")
        first = read_stream(store, long.chunks, 0, long.size, budget=budget)
        assert await anext(first) == long_bytes[:chunk_size]
        assert budget.available == 3 * chunk_size
        # Whole chunks count, even for a range of a few bytes; a short object holds only its own.
        ranged = read_stream_pieces(store, long.chunks, chunk_size - 5, chunk_size + 5, budget=budget)
        assert bytes(await anext(ranged)) == long_bytes[chunk_size - 5 : chunk_size]
        assert budget.available == chunk_size
        await ranged.aclose()
        assert budget.available == 3 * chunk_size
        assert b"".join([piece async for piece in read_stream(store, short.chunks, 0, short.size,
                                                               budget=budget)]) == short_bytes
        # A second long read does not fit beside the first: it waits until the first has ended.
        second = read_stream(store, long.chunks, 0, long.size, budget=budget)
        waiting = asyncio.ensure_future(anext(second))
        await asyncio.sleep(0.5)
        assert not waiting.done() and budget.available == 3 * chunk_size
        rest = b"".join([piece async for piece in first])
        assert long_bytes[:chunk_size] + rest == long_bytes
        assert await asyncio.wait_for(waiting, timeout=30) == long_bytes[:chunk_size]
        assert budget.available == 3 * chunk_size
        await second.aclose()
        assert budget.available == window + 3 * chunk_size

    try:
        run_with_pool(body)
    finally:
        metadata.close()


class BatchRecordingStore(ChunkStore):
    """A real ChunkStore that also records how many stripes each ``write_chunks`` call carried."""

    batches: list[int]

    async def write_chunks(self, chunks: Sequence[ChunkToWrite]) -> list[int]:
        self.batches.append(len(chunks))
        return await super().write_chunks(chunks)


def recording_store(cluster: Cluster, pool: StorageNodePool) -> BatchRecordingStore:
    store = BatchRecordingStore(lambda: cluster.cluster_map, pool, cluster.coder)
    store.batches = []
    return store


def test_write_stream_sends_new_stripes_in_batches(cluster: Cluster, tmp_path: Path) -> None:
    metadata = SqliteMetadataStore(tmp_path / "meta.sqlite")
    chunk_size = 100_000
    body_bytes = random.Random(21).randbytes(10 * chunk_size)

    async def body(pool: StorageNodePool) -> None:
        store = recording_store(cluster, pool)
        written = await write_stream(_chunks([body_bytes]), store, metadata, chunk_size=chunk_size,
                                     parallel_chunks=8)
        assert written.new_chunk_count == 10
        assert sum(store.batches) == 10 and max(store.batches) == 4  # parallel_chunks // 2 per batch
        assert [b"".join([p async for p in read_stream(store, written.chunks, 0, written.size)])] == [body_bytes]
        # Chunks that trickle in wait for each other: the body's end sends them as one batch.
        store.batches.clear()
        other = random.Random(22).randbytes(10 * chunk_size)
        slow = await write_stream(_slow(other, chunk_size, 3), store, metadata, chunk_size=chunk_size,
                                  parallel_chunks=8)
        assert (slow.new_chunk_count, store.batches) == (3, [3])

    try:
        run_with_pool(body)
    finally:
        metadata.close()


async def _slow(data: bytes, chunk_size: int, chunks: int) -> AsyncIterator[bytes]:
    for start in range(0, chunks * chunk_size, chunk_size):
        yield data[start : start + chunk_size]
        await asyncio.sleep(0.2)


def test_write_stream_never_stalls_on_a_partial_batch(cluster: Cluster, tmp_path: Path) -> None:
    # Copies of one chunk wait on its write while holding every slot: the batch holding the one
    # new chunk must be sent although it is not full, or the stream would wait forever.
    metadata = SqliteMetadataStore(tmp_path / "meta.sqlite")
    block = random.Random(23).randbytes(50_000)
    tail = random.Random(24).randbytes(30_000)

    async def body(pool: StorageNodePool) -> None:
        store = recording_store(cluster, pool)
        written = await asyncio.wait_for(
            write_stream(_chunks([block * 6 + tail]), store, metadata, chunk_size=len(block), parallel_chunks=4),
            timeout=60,
        )
        assert (len(written.chunks), written.new_chunk_count) == (7, 2)
        assert store.batches == [1, 1]

    try:
        run_with_pool(body)
    finally:
        metadata.close()


class _GatedHasher:
    """A stream hasher (SHA-1 inside) whose first ``update`` blocks until ``release`` is set, or 10 s;
    ``released_in_time`` says which."""

    def __init__(self, release: threading.Event) -> None:
        self.inner = hashlib.sha1(usedforsecurity=False)
        self.release = release
        self.released_in_time: bool | None = None

    def update(self, data: bytes) -> None:
        if self.released_in_time is None:
            self.released_in_time = self.release.wait(timeout=10)
        self.inner.update(data)


class _CountingHasher:
    """A stream hasher (SHA-256 inside) that sets ``seen_three`` once it has been fed three times."""

    def __init__(self) -> None:
        self.inner = hashlib.sha256()
        self.updates = 0
        self.seen_three = threading.Event()

    def update(self, data: bytes) -> None:
        self.inner.update(data)
        self.updates += 1
        if self.updates == 3:
            self.seen_three.set()


def test_stream_hashers_run_apart_and_hold_the_body_back(cluster: Cluster, tmp_path: Path) -> None:
    # One stream hasher stalls on the body's first chunk until another has seen three chunks: the
    # other must not wait behind it. And while one stalls, the body is read no more than
    # STREAM_HASH_AHEAD_CHUNKS chunks ahead of it (plus the chunk that waits to be submitted),
    # although the chunk window would allow all of it.
    metadata = SqliteMetadataStore(tmp_path / "meta.sqlite")
    chunk_size = 100_000
    chunk_count = 12
    body_bytes = random.Random(25).randbytes(chunk_count * chunk_size)
    second_body_bytes = random.Random(26).randbytes(chunk_count * chunk_size)
    counting = _CountingHasher()
    gated = _GatedHasher(counting.seen_three)
    release_reader = threading.Event()
    reader_gated = _GatedHasher(release_reader)
    yielded = 0

    async def counted_body() -> AsyncIterator[bytes]:
        nonlocal yielded
        for start in range(0, len(second_body_bytes), chunk_size):
            yielded += 1
            yield second_body_bytes[start : start + chunk_size]

    async def body(pool: StorageNodePool) -> None:
        store = cluster.store(pool)
        written = await asyncio.wait_for(
            write_stream(_chunks([body_bytes]), store, metadata, observers=[gated, counting],
                         chunk_size=chunk_size, parallel_chunks=2 * chunk_count),
            timeout=60,
        )
        assert gated.released_in_time is True
        assert gated.inner.digest() == hashlib.sha1(body_bytes, usedforsecurity=False).digest()
        assert counting.inner.digest() == hashlib.sha256(body_bytes).digest()
        assert written.md5_hex == hashlib.md5(body_bytes, usedforsecurity=False).hexdigest()

        writing = asyncio.ensure_future(
            write_stream(counted_body(), store, metadata, observers=[reader_gated], chunk_size=chunk_size,
                         parallel_chunks=2 * chunk_count))
        try:
            await asyncio.sleep(1.0)
            assert yielded == STREAM_HASH_AHEAD_CHUNKS + 1
        finally:
            release_reader.set()
        await asyncio.wait_for(writing, timeout=60)
        assert yielded == chunk_count
        assert reader_gated.inner.digest() == hashlib.sha1(second_body_bytes, usedforsecurity=False).digest()

    try:
        run_with_pool(body)
    finally:
        metadata.close()


def test_write_stream_repeated_chunks_in_one_body_and_empty_body(cluster: Cluster, tmp_path: Path) -> None:
    metadata = SqliteMetadataStore(tmp_path / "meta.sqlite")
    block = random.Random(11).randbytes(50_000)

    async def body(pool: StorageNodePool) -> None:
        store = cluster.store(pool)
        written = await write_stream(_chunks([block * 3]), store, metadata, chunk_size=len(block))
        assert len({c.hash for c in written.chunks}) == 1
        assert len(written.chunks) == 3
        assert written.new_chunk_count == 1
        empty = await write_stream(_chunks([]), store, metadata)
        assert (empty.size, empty.chunks, empty.new_chunk_count) == (0, (), 0)
        assert empty.md5_hex == hashlib.md5(b"", usedforsecurity=False).hexdigest()
        with pytest.raises(EntityTooLarge):
            await write_stream(_chunks([block, block]), store, metadata, max_size=len(block) + 1)

    try:
        run_with_pool(body)
    finally:
        metadata.close()


def test_paused_node_is_hedged_around(cluster: Cluster) -> None:
    chunk_hash, data = STORED[-1]
    slow = cluster.holder(chunk_hash, 0)
    degraded_before = metric("coffer_frontend_degraded_reads_total")
    slow.signal(signal.SIGSTOP)
    try:

        async def body(pool: StorageNodePool) -> None:
            store = cluster.store(pool, hedge_after=0.2)
            assert await store.read_chunk(chunk_hash, len(data), 0, 1000) == data[:1000]
            assert await store.read_chunk(chunk_hash, len(data)) == data

        run_with_pool(body, timeout=2.0)
    finally:
        slow.signal(signal.SIGCONT)
    assert metric("coffer_frontend_degraded_reads_total") - degraded_before == 2


def test_reads_skip_a_node_the_map_calls_down(cluster: Cluster) -> None:
    """A DOWN node that black-holes requests must not stall reads: with a two-minute hedge, asking it
    first would blow the 30 s bound below."""
    chunk_hash, data = STORED[-1]
    silent = cluster.holder(chunk_hash, 0)
    nodes = dict(cluster.cluster_map.nodes)
    nodes[silent.node_id] = dataclasses.replace(nodes[silent.node_id], state=NodeState.DOWN)
    down_map = cluster.cluster_map.with_changes(nodes=nodes)
    silent.signal(signal.SIGSTOP)
    try:

        async def body(pool: StorageNodePool) -> None:
            store = ChunkStore(lambda: down_map, pool, cluster.coder, hedge_after=120.0)
            whole = await asyncio.wait_for(store.read_chunk(chunk_hash, len(data)), 30)
            assert whole == data
            part = await asyncio.wait_for(store.read_chunk(chunk_hash, len(data), 10, 5000), 30)
            assert part == data[10:5000]

        run_with_pool(body, timeout=120.0)
    finally:
        silent.signal(signal.SIGCONT)


def _flip_a_byte_on_disk(volume: Path, chunk_hash: bytes, index: int) -> None:
    """Flip one fragment byte in the node's RocksDB record (the node must be stopped)."""
    from rocksdict import Rdict

    from storagenode.engine import HEADERS_COLUMN_FAMILY, _headers_options, _volume_options, fragment_key

    pg = placement_group(chunk_hash, PG_COUNT)
    db = Rdict(str(volume), _volume_options(direct_io=False),
               column_families={HEADERS_COLUMN_FAMILY: _headers_options()})
    try:
        key = fragment_key(chunk_hash, index, pg)
        stored = db.get(key)
        assert isinstance(stored, bytes), f"fragment {index} not on this node"
        value = bytearray(stored)
        value[len(value) // 2] ^= 0x40  # inside the fragment data, past the record header
        db[key] = bytes(value)
        db.flush()
    finally:
        db.close()


def test_corrupt_fragment_on_disk_is_detected_and_read_around(cluster: Cluster) -> None:
    # A chunk of its own: nothing repairs the fragment, so later tests must not count on it.
    chunk_hash, data = chunk_of(CHUNK_SIZE, seed=55)
    assert run_with_pool(lambda pool: cluster.store(pool).write_chunk(chunk_hash, data)) == STRIPE_WIDTH
    node = cluster.holder(chunk_hash, 0)
    node.stop()
    _flip_a_byte_on_disk(node.volume, chunk_hash, 0)
    node.start()
    node.wait_ready()
    corrupt_before = metric("coffer_frontend_corrupt_fragments_total")

    async def body(pool: StorageNodePool) -> None:
        store = cluster.store(pool)
        assert await store.read_chunk(chunk_hash, len(data)) == data
        assert await store.read_chunk(chunk_hash, len(data), 5, 50_000) == data[5:50_000]

    run_with_pool(body)
    assert metric("coffer_frontend_corrupt_fragments_total") - corrupt_before == 2


async def _replace_with_wrong_bytes(
    cluster: Cluster, pool: StorageNodePool, chunk_hash: bytes, chunk_size: int, indexes: list[int]
) -> None:
    """Overwrite fragments with damaged payloads under a valid CRC32C: corruption only the chunk's
    SHA-256 can catch (as from a faulty encoder or memory error upstream of the checksum)."""
    pg = placement_group(chunk_hash, PG_COUNT)
    for index in indexes:
        node = cluster.holder(chunk_hash, index)
        client = pool.client(node.node_id, node.address)
        fragment = bytearray(await client.get_fragment(chunk_hash, index, pg))
        fragment[-1 - len(fragment) // 3] ^= 0x01  # in the payload, past the 80-byte header
        await client.put_fragment(chunk_hash, index, pg, bytes(fragment), chunk_size, 1)


def test_wrong_bytes_under_a_valid_checksum_are_caught_by_the_chunk_hash(cluster: Cluster) -> None:
    chunk_hash, data = chunk_of(CHUNK_SIZE - 3, seed=66)
    mismatches_before = metric("coffer_frontend_chunk_hash_mismatches_total")

    async def body(pool: StorageNodePool) -> None:
        store = cluster.store(pool)
        await store.write_chunk(chunk_hash, data)
        await _replace_with_wrong_bytes(cluster, pool, chunk_hash, len(data), [2])
        # Whole-chunk reads are hash-checked: the bad data fragment is found and decoded around.
        assert await store.read_chunk(chunk_hash, len(data)) == data
        assert await store.read_chunk(chunk_hash, len(data)) == data

    run_with_pool(body)
    assert metric("coffer_frontend_chunk_hash_mismatches_total") > mismatches_before


def test_too_many_wrong_fragments_raise_chunk_corrupt(cluster: Cluster) -> None:
    chunk_hash, data = chunk_of(200_000, seed=67)

    async def body(pool: StorageNodePool) -> None:
        store = cluster.store(pool)
        await store.write_chunk(chunk_hash, data)
        # Five bad fragments: every set of 10 includes one, so no decode reproduces the hash.
        await _replace_with_wrong_bytes(cluster, pool, chunk_hash, len(data), [0, 4, 7, 11, 13])
        with pytest.raises(ChunkCorrupt):
            await store.read_chunk(chunk_hash, len(data))

    run_with_pool(body)


def test_two_dead_nodes_degraded_write_and_exact_reads(cluster: Cluster) -> None:
    for node_id in ("node-03", "node-09"):
        cluster.nodes[node_id].kill()
        cluster.killed.append(node_id)
    stripes_before = metric("coffer_frontend_stripes_written_degraded_total")
    chunk_hash, data = chunk_of(CHUNK_SIZE, seed=77)

    async def body(pool: StorageNodePool) -> None:
        store = cluster.store(pool)
        assert await store.write_chunk(chunk_hash, data) == STRIPE_WIDTH - 2
        assert await store.read_chunk(chunk_hash, len(data)) == data
        await read_all_checked(store, random.Random(2))

    hints_before = metric("coffer_frontend_repair_hints_total")
    run_with_pool(body)
    assert metric("coffer_frontend_stripes_written_degraded_total") - stripes_before == 1
    # The map still calls both nodes UP: each is asked to repair its position at once.
    assert metric("coffer_frontend_repair_hints_total") - hints_before == 2
    STORED.append((chunk_hash, data))


def test_four_dead_nodes_reads_exact_writes_refused(cluster: Cluster) -> None:
    for node_id in ("node-00", "node-13"):
        cluster.nodes[node_id].kill()
        cluster.killed.append(node_id)
    chunk_hash, data = chunk_of(100_000, seed=78)

    async def body(pool: StorageNodePool) -> None:
        store = cluster.store(pool)
        await read_all_checked(store, random.Random(3))
        with pytest.raises(InsufficientFragments):
            await store.write_chunk(chunk_hash, data)

    run_with_pool(body)


def test_five_dead_nodes_make_chunks_unavailable(cluster: Cluster) -> None:
    cluster.nodes["node-06"].kill()
    cluster.killed.append("node-06")

    async def body(pool: StorageNodePool) -> int:
        store = cluster.store(pool)
        unavailable = 0
        for chunk_hash, data in STORED:
            covering = [index for index, _, _ in data_fragment_payload_range(len(data), 0, len(data))]
            if all(cluster.holder(chunk_hash, index).alive() for index in covering):
                # A tiny chunk lives in a few data fragments: with those alive it is still readable.
                assert await store.read_chunk(chunk_hash, len(data)) == data
            else:
                with pytest.raises(ChunkUnavailable):
                    await store.read_chunk(chunk_hash, len(data))
                unavailable += 1
        return unavailable

    # Five dead nodes out of 14 hold at least one data fragment of every stripe, so every chunk
    # spread over all 10 data fragments is unavailable.
    large = sum(1 for _, data in STORED if len(data_fragment_payload_range(len(data), 0, len(data))) == 10)
    assert run_with_pool(body) >= large
