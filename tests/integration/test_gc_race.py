"""Garbage collection against 14 real storage-node processes and a real SQLite metadata store.

The race test runs PUT (write_stream + put_object, as the S3 handler does) and ``collect_once``
concurrently on the same content, many times, with random delays at the pin, stripe-write, commit,
mark, finish and fragment-delete points; some of the collector's deletes are "late" (answered at
once, sent to the node only 50..200 milliseconds later, as a timed-out RPC still queued on a node).
Whatever the interleaving, every committed object must read back byte-exact with its chunks LIVE
and at least a write quorum of fragments on the nodes. Then: deleting everything and collecting
with grace 0 leaves the nodes empty; a DOWN node's leftovers go to the orphan sweep; the sweep
keeps fragments whose chunk is recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from common.layout import STRIPE_WIDTH, WRITE_QUORUM
from frontend.chunk_store import ChunkStore, ChunkToWrite
from frontend.datapath_errors import ChunkBeingCollected
from frontend.erasure import ErasureCoder
from frontend.garbage_collector import GarbageCollector
from frontend.object_io import new_pin_id, read_stream, release_pins, run_to_completion, write_stream
from metadata import (
    ChunkRef,
    ChunkState,
    ChunksUnavailable,
    NoSuchKey,
    ObjectRecord,
    PinResult,
    SqliteMetadataStore,
    WriteCondition,
)
from metadata.records import ZeroRefcountChunk
from placement.cluster_map import ClusterMap, FailureDomain, Node, NodeState
from placement.rendezvous import compute_acting_sets
from storagenode.client import StorageNodeClient, StorageNodePool
from tests.fixtures.processes import free_port
from tests.integration.test_chunk_store import PG_COUNT, StorageNodeProcess, _chunks, run_with_pool

pytestmark = pytest.mark.integration

CHUNK = 64 * 1024
ITERATIONS = 100
BUCKET = "bucket"


@dataclasses.dataclass
class Nodes:
    """14 storage nodes and a hand-built map naming them all UP."""

    processes: dict[str, StorageNodeProcess]
    cluster_map: ClusterMap
    coder: ErasureCoder


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    root = tmp_path_factory.mktemp("gc-race")
    processes = {
        f"node-{i:02d}": StorageNodeProcess(
            f"node-{i:02d}", free_port(), root / f"node-{i:02d}" / "volume-0", root / f"node-{i:02d}.log")
        for i in range(STRIPE_WIDTH)
    }
    coder = ErasureCoder(workers=2)
    try:
        for process in processes.values():
            process.start()
        for process in processes.values():
            process.wait_ready()
        map_nodes = {
            process.node_id: Node(node_id=process.node_id, address=process.address,
                                  failure_domain=FailureDomain("zone-a", "rack-a", f"host-{process.node_id}"),
                                  capacity_bytes=10 * 2**30, state=NodeState.UP)
            for process in processes.values()
        }
        cluster_map = ClusterMap(epoch=1, pg_count=PG_COUNT, nodes=map_nodes,
                                 acting_sets=compute_acting_sets(PG_COUNT, map_nodes))
        yield Nodes(processes, cluster_map, coder)
    finally:
        for process in processes.values():
            process.stop()
        coder.close()


class JitteryStore(SqliteMetadataStore):
    """The real store, with a random pause (0..4 ms, in the calling thread) before each step of the
    protocol, so pins, commits, marks and finishes interleave differently on every run."""

    rng = random.Random(1)

    def _pause(self) -> None:
        time.sleep(self.rng.random() * 0.004)

    def pin_chunks(self, pin_id: str, chunks: Sequence[ChunkRef]) -> PinResult:
        self._pause()
        return super().pin_chunks(pin_id, chunks)

    def put_object(
        self, record: ObjectRecord, condition: WriteCondition | None = None, pin_id: str | None = None
    ) -> ObjectRecord | None:
        self._pause()
        return super().put_object(record, condition, pin_id)

    def mark_chunks_for_collection(
        self, unreferenced_before: float, pins_expired_before: float, limit: int = 1000
    ) -> list[ZeroRefcountChunk]:
        self._pause()
        return super().mark_chunks_for_collection(unreferenced_before, pins_expired_before, limit)

    def finish_collection(self, hashes: Iterable[str]) -> int:
        self._pause()
        return super().finish_collection(hashes)


class JitteryChunkStore(ChunkStore):
    """A real ChunkStore that pauses 0..5 ms before sending each batch of stripes."""

    rng = random.Random(2)

    async def write_chunks(self, chunks: Sequence[ChunkToWrite]) -> list[int]:
        await asyncio.sleep(self.rng.random() * 0.005)
        return await super().write_chunks(chunks)


class LateDeleteClient(StorageNodeClient):
    """A real client whose deletes sometimes answer at once and reach the node 50..200 ms later: a
    delete still queued on the node after the collector finished the chunk (and a waiting writer
    re-wrote it)."""

    rng = random.Random(3)
    late: ClassVar[set[asyncio.Task[bool]]] = set()

    async def delete_fragment(self, chunk_hash: bytes, index: int, pg: int, written_before_ms: int = 0) -> bool:
        if self.rng.random() < 0.3:
            delay = self.rng.uniform(0.05, 0.2)  # beyond a waiting writer's first retry (50 ms)

            async def later() -> bool:
                await asyncio.sleep(delay)
                return await StorageNodeClient.delete_fragment(self, chunk_hash, index, pg, written_before_ms)

            task = asyncio.create_task(later())
            LateDeleteClient.late.add(task)
            return True
        await asyncio.sleep(self.rng.random() * 0.002)
        return await super().delete_fragment(chunk_hash, index, pg, written_before_ms)


class LateDeletePool(StorageNodePool):
    def client(self, node_id: str, address: str) -> StorageNodeClient:
        existing = self._clients.get(node_id)
        if existing is None or existing.address != address:
            self._clients[node_id] = LateDeleteClient(address, timeout=self._timeout)
        return self._clients[node_id]


def collector(metadata: SqliteMetadataStore, cluster_map: ClusterMap, pool: StorageNodePool, *,
              orphan_grace: float = 0.0) -> GarbageCollector:
    """A collector with grace 0: every unreferenced, unpinned chunk is collectable at once."""
    return GarbageCollector(metadata, lambda: cluster_map, pool, grace_seconds=0, interval_seconds=1,
                            orphan_grace_seconds=orphan_grace, orphan_sweep_interval_seconds=1)


async def put(store: ChunkStore, metadata: SqliteMetadataStore, key: str, data: bytes,
              rng: random.Random | None = None) -> ObjectRecord | None:
    """PutObject as the S3 handler does it; None when refused as retryable (503 SlowDown)."""
    pin_id = new_pin_id()
    try:
        written = await write_stream(_chunks([data]), store, metadata, chunk_size=CHUNK, parallel_chunks=4,
                                     pin_id=pin_id, collection_wait_seconds=5)
        if rng is not None:
            await asyncio.sleep(rng.random() * 0.005)
        record = ObjectRecord(bucket=BUCKET, key=key, size=written.size, etag=f'"{written.md5_hex}"',
                              last_modified=time.time(), content_type="application/octet-stream", user_metadata={},
                              system_metadata={}, checksums={}, chunks=written.chunks, part_count=None)
        await run_to_completion(metadata.put_object, record, None, pin_id)
        return record
    except (ChunkBeingCollected, ChunksUnavailable):
        await release_pins(metadata, pin_id)
        return None
    except BaseException:
        await release_pins(metadata, pin_id)
        raise


async def fragments_held(pool: StorageNodePool, cluster_map: ClusterMap, chunk_hash: bytes) -> int:
    pg = cluster_map.placement_group(chunk_hash)
    held = 0
    for index, node_id in enumerate(cluster_map.acting_set(pg)):
        node = cluster_map.nodes[node_id]
        entries = await pool.client(node_id, node.address).list_fragments(pg)
        held += any(entry.chunk_hash == chunk_hash and entry.index == index for entry in entries)
    return held


async def all_fragments(pool: StorageNodePool, cluster_map: ClusterMap) -> list[tuple[str, int, bytes, int]]:
    found = []
    for node_id, node in cluster_map.nodes.items():
        for pg in range(cluster_map.pg_count):
            for entry in await pool.client(node_id, node.address).list_fragments(pg):
                found.append((node_id, pg, entry.chunk_hash, entry.index))
    return found


async def read_back(store: ChunkStore, record: ObjectRecord) -> bytes:
    return b"".join([piece async for piece in read_stream(store, record.chunks, 0, record.size)])


def test_put_racing_collection_never_commits_a_collected_chunk(nodes: Nodes, tmp_path: Path) -> None:
    metadata = JitteryStore(tmp_path / "meta.sqlite")
    metadata.create_bucket(BUCKET, "owner")
    rng = random.Random(4)
    committed: dict[str, tuple[ObjectRecord, bytes]] = {}
    outcomes = {"committed": 0, "refused": 0, "collected_first": 0}

    async def body(pool: StorageNodePool) -> None:
        gc_pool = LateDeletePool(timeout=30.0)  # generous: the machine is shared
        store = JitteryChunkStore(lambda: nodes.cluster_map, pool, nodes.coder)
        gc = collector(metadata, nodes.cluster_map, gc_pool)
        try:
            for iteration in range(ITERATIONS):
                data = random.Random(1000 + iteration).randbytes(2 * CHUNK + rng.randrange(1, CHUNK))
                # The content is stored, then unreferenced: collectable at once (grace 0).
                assert await put(store, metadata, f"seed-{iteration}", data) is not None
                metadata.delete_object(BUCKET, f"seed-{iteration}")

                async def collect() -> int:
                    await asyncio.sleep(rng.random() * 0.02)
                    return (await gc.collect_once()).collected

                async def write(key: str, data: bytes) -> ObjectRecord | None:
                    await asyncio.sleep(rng.random() * 0.02)
                    return await put(store, metadata, key, data, rng)

                collected, record = await asyncio.gather(collect(), write(f"key-{iteration}", data))
                await asyncio.gather(*LateDeleteClient.late)  # every late delete has reached its node
                LateDeleteClient.late.clear()
                outcomes["collected_first"] += collected > 0
                if record is None:
                    outcomes["refused"] += 1
                    with pytest.raises(NoSuchKey):
                        metadata.get_object(BUCKET, f"key-{iteration}")
                    continue
                outcomes["committed"] += 1
                committed[record.key] = (record, data)
                for chunk in record.chunks:
                    assert metadata.chunk_state(chunk.hash) == ChunkState.LIVE
                assert await read_back(store, record) == data
                for chunk_hash in {bytes.fromhex(chunk.hash) for chunk in record.chunks}:
                    assert await fragments_held(pool, nodes.cluster_map, chunk_hash) >= WRITE_QUORUM
            # A last collection finds nothing of the committed objects to take.
            await gc.collect_once()
            for record, data in committed.values():
                assert await read_back(store, record) == data
                assert all(metadata.chunk_state(chunk.hash) == ChunkState.LIVE for chunk in record.chunks)
            # Everything deleted and collected (grace 0): the nodes hold no fragment.
            for key in committed:
                metadata.delete_object(BUCKET, key)
            report = await gc.collect_once()
            await asyncio.gather(*LateDeleteClient.late)
            LateDeleteClient.late.clear()
            distinct = {chunk.hash for record, _data in committed.values() for chunk in record.chunks}
            assert (report.collected, report.unfinished) == (len(distinct), 0)
            assert metadata.gc_counts().zero_refcount == 0
            assert await all_fragments(pool, nodes.cluster_map) == []
        finally:
            await gc_pool.close()

    try:
        run_with_pool(body, timeout=30.0)
        print(f"race outcomes over {ITERATIONS} iterations: {outcomes}")
        assert outcomes["committed"] > 0
        # The test exercised both orders: the collector took the content before the writer pinned.
        assert outcomes["collected_first"] > 0
    finally:
        metadata.close()


def test_everything_deleted_and_collected_leaves_no_fragment(nodes: Nodes, tmp_path: Path) -> None:
    metadata = SqliteMetadataStore(tmp_path / "meta.sqlite")
    metadata.create_bucket(BUCKET, "owner")

    async def body(pool: StorageNodePool) -> None:
        store = ChunkStore(lambda: nodes.cluster_map, pool, nodes.coder)
        gc = collector(metadata, nodes.cluster_map, pool)
        shared = random.Random(50).randbytes(CHUNK)
        for index in range(6):
            data = shared + random.Random(60 + index).randbytes(CHUNK)
            assert await put(store, metadata, f"k{index}", data) is not None
        # A failed PUT: pinned and written, never committed.
        pin_id = new_pin_id()
        await write_stream(_chunks([random.Random(70).randbytes(CHUNK)]), store, metadata, chunk_size=CHUNK,
                           pin_id=pin_id)
        await release_pins(metadata, pin_id)
        assert await all_fragments(pool, nodes.cluster_map) != []
        for index in range(6):
            metadata.delete_object(BUCKET, f"k{index}")
        report = await gc.collect_once()
        assert (report.collected, report.unfinished) == (8, 0)  # 1 shared + 6 own + the failed PUT's
        assert report.fragments_deleted >= 8 * WRITE_QUORUM
        assert metadata.gc_counts().zero_refcount == 0
        assert metadata.chunks_being_collected() == []
        assert await all_fragments(pool, nodes.cluster_map) == []

    try:
        run_with_pool(body, timeout=30.0)
    finally:
        metadata.close()


def test_down_node_leftovers_go_to_the_orphan_sweep(nodes: Nodes, tmp_path: Path) -> None:
    metadata = SqliteMetadataStore(tmp_path / "meta.sqlite")
    metadata.create_bucket(BUCKET, "owner")
    data = random.Random(80).randbytes(CHUNK)
    chunk_hash = hashlib.sha256(data).digest()
    pg = nodes.cluster_map.placement_group(chunk_hash)
    down_id = nodes.cluster_map.acting_set(pg)[3]
    down_map = nodes.cluster_map.with_changes(
        epoch=2, nodes={**nodes.cluster_map.nodes,
                        down_id: dataclasses.replace(nodes.cluster_map.nodes[down_id], state=NodeState.DOWN)})

    async def body(pool: StorageNodePool) -> None:
        store = ChunkStore(lambda: nodes.cluster_map, pool, nodes.coder)
        assert await put(store, metadata, "k", data) is not None
        metadata.delete_object(BUCKET, "k")
        # The map says the node is DOWN (it still runs): the collector skips it and finishes.
        report = await collector(metadata, down_map, pool).collect_once()
        assert (report.collected, report.fragments_deleted) == (1, STRIPE_WIDTH - 1)
        assert metadata.chunks_recorded([chunk_hash.hex()]) == set()
        left = await all_fragments(pool, nodes.cluster_map)
        assert left == [(down_id, pg, chunk_hash, 3)]
        # Back UP: its fragment has no chunk record; the sweep removes it once old enough.
        young = await collector(metadata, nodes.cluster_map, pool, orphan_grace=3600).sweep_orphans_once()
        assert young.orphans_deleted == 0
        swept = await collector(metadata, nodes.cluster_map, pool, orphan_grace=0).sweep_orphans_once()
        assert (swept.orphans_deleted, swept.listings_failed) == (1, 0)
        assert await all_fragments(pool, nodes.cluster_map) == []

    try:
        run_with_pool(body, timeout=30.0)
    finally:
        metadata.close()


def test_orphan_sweep_keeps_fragments_of_recorded_chunks(nodes: Nodes, tmp_path: Path) -> None:
    metadata = SqliteMetadataStore(tmp_path / "meta.sqlite")
    metadata.create_bucket(BUCKET, "owner")
    orphan = random.Random(90).randbytes(CHUNK)
    in_flight = random.Random(91).randbytes(CHUNK)
    kept = random.Random(92).randbytes(CHUNK)

    async def body(pool: StorageNodePool) -> None:
        store = ChunkStore(lambda: nodes.cluster_map, pool, nodes.coder)
        # Fragments written with no metadata at all (e.g. a pin lost in a power cut).
        await store.write_chunk(hashlib.sha256(orphan).digest(), orphan)
        # A write in progress: pinned, stripe written, not committed yet.
        pin_id = new_pin_id()
        written = await write_stream(_chunks([in_flight]), store, metadata, chunk_size=CHUNK, pin_id=pin_id)
        assert await put(store, metadata, "kept", kept) is not None
        report = await collector(metadata, nodes.cluster_map, pool, orphan_grace=0).sweep_orphans_once()
        assert report.orphans_deleted == STRIPE_WIDTH
        remaining = {chunk_hash for _node, _pg, chunk_hash, _index in await all_fragments(pool, nodes.cluster_map)}
        assert remaining == {hashlib.sha256(in_flight).digest(), hashlib.sha256(kept).digest()}
        # The in-flight write commits and reads back.
        record = ObjectRecord(bucket=BUCKET, key="late", size=written.size, etag=f'"{written.md5_hex}"',
                              last_modified=time.time(), content_type="application/octet-stream", user_metadata={},
                              system_metadata={}, checksums={}, chunks=written.chunks, part_count=None)
        metadata.put_object(record, pin_id=pin_id)
        assert await read_back(store, record) == in_flight
        # Clean up for the module's other tests.
        for key in ("kept", "late"):
            metadata.delete_object(BUCKET, key)
        assert (await collector(metadata, nodes.cluster_map, pool).collect_once()).collected == 2
        assert await all_fragments(pool, nodes.cluster_map) == []

    try:
        run_with_pool(body, timeout=30.0)
    finally:
        metadata.close()


def test_write_waits_for_a_chunk_being_collected_then_writes_it_afresh(nodes: Nodes, tmp_path: Path) -> None:
    metadata = SqliteMetadataStore(tmp_path / "meta.sqlite")
    metadata.create_bucket(BUCKET, "owner")
    data = random.Random(100).randbytes(CHUNK)
    chunk_hex = hashlib.sha256(data).hexdigest()

    async def body(pool: StorageNodePool) -> None:
        store = ChunkStore(lambda: nodes.cluster_map, pool, nodes.coder)
        # An earlier write of this content failed (pinned, released); the collector marked it.
        metadata.pin_chunks("failed", [ChunkRef(chunk_hex, CHUNK, 0)])
        metadata.release_pins("failed")
        assert [chunk.hash for chunk in metadata.mark_chunks_for_collection(time.time() + 1, 0)] == [chunk_hex]
        with pytest.raises(ChunkBeingCollected):
            await write_stream(_chunks([data]), store, metadata, chunk_size=CHUNK, pin_id=new_pin_id(),
                               collection_wait_seconds=0.2)
        assert metadata.gc_counts().pins == 0  # a chunk being collected is never pinned

        async def finish_while_the_writer_waits() -> None:
            await asyncio.sleep(0.1)
            await asyncio.to_thread(metadata.finish_collection, [chunk_hex])

        written, _ = await asyncio.gather(
            write_stream(_chunks([data]), store, metadata, chunk_size=CHUNK, pin_id=new_pin_id(),
                         collection_wait_seconds=30),
            finish_while_the_writer_waits())
        assert written.new_chunk_count == 1  # written afresh after the row was removed
        record = ObjectRecord(bucket=BUCKET, key="k", size=written.size, etag=f'"{written.md5_hex}"',
                              last_modified=time.time(), content_type="application/octet-stream", user_metadata={},
                              system_metadata={}, checksums={}, chunks=written.chunks, part_count=None)
        metadata.put_object(record, pin_id=written.pin_id)
        assert await read_back(store, record) == data
        metadata.delete_object(BUCKET, "k")
        assert (await collector(metadata, nodes.cluster_map, pool).collect_once()).collected == 1
        assert await all_fragments(pool, nodes.cluster_map) == []

    try:
        run_with_pool(body, timeout=30.0)
    finally:
        metadata.close()
