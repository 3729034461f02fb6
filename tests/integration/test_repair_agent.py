"""RepairAgent against real storage nodes: 15 in-process nodes (real RocksDB engines, real gRPC
servers on 127.0.0.1), stripes written by the frontend's ChunkStore, fragments then deleted or
damaged on disk, and the agent of one node run scan by scan (``scan_once``).

Each test builds its own nodes in its own event loop; the cluster maps are built by hand with
``placement.rendezvous.compute_placement`` (no etcd, no placement service).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from awscrt.checksums import crc32c
from prometheus_client import REGISTRY

from common.layout import placement_group
from frontend.chunk_store import ChunkStore
from frontend.erasure import ErasureCoder
from placement.cluster_map import ClusterMap, FailureDomain, Node, NodeState
from placement.rendezvous import compute_placement
from storagenode.client import StorageNodePool
from storagenode.engine import FragmentEngine
from storagenode.errors import FragmentNotFound
from storagenode.repair import RepairAgent
from storagenode.repair_plan import primary_of
from storagenode.servicer import StorageNodeServicer, add_to_server

pytestmark = pytest.mark.integration

PG_COUNT = 4
NODE_COUNT = 15
RATE = 64 * 2**20


@pytest.fixture(scope="module")
def coder() -> Iterator[ErasureCoder]:
    with ErasureCoder(workers=1) as erasure_coder:
        yield erasure_coder


@dataclass
class LocalNode:
    node_id: str
    engine: FragmentEngine
    server: grpc.aio.Server
    address: str

    def fragment(self, chunk_hash: bytes, index: int, pg: int) -> bytes | None:
        try:
            return bytes(self.engine.get(chunk_hash, index, pg).data)
        except FragmentNotFound:
            return None


@dataclass
class Cluster:
    nodes: dict[str, LocalNode]
    executor: ThreadPoolExecutor
    pool: StorageNodePool
    cluster_map: ClusterMap

    def map_nodes(
        self, states: dict[str, NodeState] | None = None, members: list[str] | None = None
    ) -> dict[str, Node]:
        states = states or {}
        return {
            node.node_id: Node(node.node_id, node.address, FailureDomain("zone-a", "rack-a", f"host-{node.node_id}"),
                               2**30, states.get(node.node_id, NodeState.UP))
            for node in self.nodes.values() if members is None or node.node_id in members
        }

    def next_map(self, nodes: dict[str, Node]) -> ClusterMap:
        placement = compute_placement(PG_COUNT, nodes, previous=self.cluster_map)
        return ClusterMap(epoch=self.cluster_map.epoch + 1, pg_count=PG_COUNT, nodes=nodes,
                          acting_sets=placement.acting_sets, former_positions=placement.former_positions)

    def agent(self, node_id: str) -> RepairAgent:
        return RepairAgent(node_id, self.nodes[node_id].engine, self.executor, lambda: self.cluster_map, self.pool,
                           bytes_per_second=RATE, scan_interval=60)

    def store(self, coder: ErasureCoder) -> ChunkStore:
        return ChunkStore(lambda: self.cluster_map, self.pool, coder)

    def holder(self, chunk_hash: bytes, index: int) -> LocalNode:
        return self.nodes[self.cluster_map.acting_set(self.pg(chunk_hash))[index]]

    def pg(self, chunk_hash: bytes) -> int:
        return placement_group(chunk_hash, PG_COUNT)


@contextlib.asynccontextmanager
async def local_cluster(root: Path, members: int = NODE_COUNT) -> AsyncIterator[Cluster]:
    """``NODE_COUNT`` nodes serving; the first map names the first ``members`` of them, all UP."""
    executor = ThreadPoolExecutor(4)
    pool = StorageNodePool(timeout=5.0)
    nodes: dict[str, LocalNode] = {}
    try:
        for number in range(NODE_COUNT):
            node_id = f"node-{number:02d}"
            engine = FragmentEngine([str(root / node_id)])
            server = grpc.aio.server()
            add_to_server(StorageNodeServicer(node_id, engine, executor), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            nodes[node_id] = LocalNode(node_id, engine, server, f"127.0.0.1:{port}")
        cluster = Cluster(nodes, executor, pool, cluster_map=None)  # type: ignore[arg-type]
        first = cluster.map_nodes(members=sorted(nodes)[:members])
        placement = compute_placement(PG_COUNT, first)
        cluster.cluster_map = ClusterMap(epoch=1, pg_count=PG_COUNT, nodes=first, acting_sets=placement.acting_sets,
                                         former_positions=placement.former_positions)
        yield cluster
    finally:
        await pool.close()
        for node in nodes.values():
            await node.server.stop(None)
            node.engine.close()
        executor.shutdown()


def chunk_of(seed: int, size: int = 100_000) -> tuple[bytes, bytes]:
    data = random.Random(seed).randbytes(size)
    return hashlib.sha256(data).digest(), data


async def write_chunks(cluster: Cluster, coder: ErasureCoder, count: int) -> list[tuple[bytes, bytes]]:
    chunks = [chunk_of(seed, 90_000 + 1000 * seed) for seed in range(count)]
    store = cluster.store(coder)
    assert await asyncio.gather(*(store.write_chunk(h, d) for h, d in chunks)) == [14] * count
    return chunks


async def poll(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` holds (the caller bounds the wait with a timeout)."""
    # Polled: the conditions are metrics and on-disk state, which signal no event.
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_missing_and_stale_fragments_are_rebuilt_byte_identical(coder: ErasureCoder, tmp_path: Path) -> None:
    async def body() -> None:
        async with local_cluster(tmp_path, members=14) as cluster:
            chunks = await write_chunks(cluster, coder, 6)
            # The node under test: position 5 of the first chunk's PG.
            first_hash = chunks[0][0]
            node = cluster.holder(first_hash, 5)
            mine = []  # (chunk_hash, index, pg, original bytes) of every fragment node holds
            for chunk_hash, _ in chunks:
                pg = cluster.pg(chunk_hash)
                acting = cluster.cluster_map.acting_set(pg)
                if node.node_id in acting:
                    index = acting.index(node.node_id)
                    original = node.fragment(chunk_hash, index, pg)
                    assert original is not None
                    mine.append((chunk_hash, index, pg, original))
            assert len(mine) >= 2
            # Lose the first one (and one more fragment of that stripe elsewhere); damage the second
            # one into a stale record (a truncated fragment stored with its own valid CRC).
            lost_hash, lost_index, lost_pg, _ = mine[0]
            assert node.engine.delete(lost_hash, lost_index, lost_pg)
            other = cluster.holder(lost_hash, 0 if lost_index else 1)
            assert other.engine.delete(lost_hash, 0 if lost_index else 1, lost_pg)
            stale_hash, stale_index, stale_pg, stale_original = mine[1]
            truncated = stale_original[:-7]
            node.engine.put(stale_hash, stale_index, stale_pg, truncated, crc32c(truncated), len(chunks[1][1]))
            rebuilt_before = metric("coffer_repair_fragments_total", method="rebuild")

            report = await cluster.agent(node.node_id).scan_once()

            assert (report.tasks, report.rebuilt, report.copied, report.failed) == (2, 2, 0, 0)
            for chunk_hash, index, pg, original in mine:
                assert node.fragment(chunk_hash, index, pg) == original
            assert metric("coffer_repair_fragments_total", method="rebuild") - rebuilt_before == 2
            assert report.bytes_written == len(mine[0][3]) + len(stale_original)
            assert report.bytes_fetched >= 20 * len(stale_original) * 0.9
            # The other node's loss is its own to repair; the second scan has nothing for this node.
            again = await cluster.agent(node.node_id).scan_once()
            assert (again.tasks, again.rebuilt) == (0, 0)
            report_other = await cluster.agent(other.node_id).scan_once()
            assert report_other.rebuilt == 1
            assert metric("coffer_repair_pending_fragments") == 0

    asyncio.run(body())


def test_an_out_nodes_positions_are_rebuilt_on_their_new_holders(coder: ErasureCoder, tmp_path: Path) -> None:
    async def body() -> None:
        async with local_cluster(tmp_path) as cluster:
            chunks = await write_chunks(cluster, coder, 6)
            old_map = cluster.cluster_map
            gone = old_map.acting_set(cluster.pg(chunks[0][0]))[3]
            expected = {}  # (chunk_hash, pg) -> (index, fragment bytes the OUT node held)
            for chunk_hash, _ in chunks:
                pg = cluster.pg(chunk_hash)
                acting = old_map.acting_set(pg)
                if gone in acting:
                    index = acting.index(gone)
                    expected[chunk_hash, pg] = (index, cluster.nodes[gone].fragment(chunk_hash, index, pg))
            assert expected
            await cluster.nodes[gone].server.stop(None)  # the node died
            # DOWN first: nobody repairs around it, but the PG primaries count its stripes as degraded.
            cluster.cluster_map = cluster.cluster_map.with_changes(
                epoch=2, nodes=cluster.map_nodes(states={gone: NodeState.DOWN}))
            degraded = 0
            primaries = {primary_of(cluster.cluster_map, pg) for _, pg in expected}
            assert gone not in primaries
            for primary in sorted(p for p in primaries if p is not None):
                report = await cluster.agent(primary).scan_once()
                assert report.tasks == 0
                assert report.listed == 0  # the UP members' summaries agree: counted without listing
                degraded += report.degraded["1"]
            assert degraded == len(expected)
            cluster.cluster_map = cluster.next_map(cluster.map_nodes(states={gone: NodeState.OUT}))
            rebuilt = 0
            new_holders = {cluster.cluster_map.acting_set(pg)[index] for (_, pg), (index, _) in expected.items()}
            assert gone not in new_holders
            for holder_id in sorted(new_holders):
                rebuilt += (await cluster.agent(holder_id).scan_once()).rebuilt
            assert rebuilt == len(expected)
            for (chunk_hash, pg), (index, original) in expected.items():
                holder = cluster.nodes[cluster.cluster_map.acting_set(pg)[index]]
                assert holder.fragment(chunk_hash, index, pg) == original

    asyncio.run(body())


def test_moved_positions_are_copied_and_the_old_copy_deleted_only_after(coder: ErasureCoder, tmp_path: Path) -> None:
    async def body() -> None:
        async with local_cluster(tmp_path, members=14) as cluster:
            chunks = await write_chunks(cluster, coder, 8)
            # A 15th node joins: some positions move to it; their old holders become former holders.
            cluster.cluster_map = cluster.next_map(cluster.map_nodes())
            newcomer = "node-14"
            moved = []  # (chunk_hash, pg, index, former holder)
            for chunk_hash, _ in chunks:
                pg = cluster.pg(chunk_hash)
                acting = cluster.cluster_map.acting_set(pg)
                if newcomer in acting:
                    index = acting.index(newcomer)
                    formers = [n for n, p in cluster.cluster_map.former_positions[pg] if p == index]
                    moved.append((chunk_hash, pg, index, formers[0]))
            assert moved, "the new node got no position of a written chunk's PG"
            chunk_hash, pg, index, former = moved[0]
            original = cluster.nodes[former].fragment(chunk_hash, index, pg)
            assert original is not None

            # The old holder scans first: the new holder does not have it yet, so nothing is deleted.
            early = await cluster.agent(former).scan_once()
            assert early.misplaced >= 1 and early.misplaced_deleted == 0
            assert cluster.nodes[former].fragment(chunk_hash, index, pg) == original

            report = await cluster.agent(newcomer).scan_once()
            assert report.copied == len(moved) and report.rebuilt == 0 and report.failed == 0
            for moved_hash, moved_pg, moved_index, moved_from in moved:
                assert cluster.nodes[newcomer].fragment(moved_hash, moved_index, moved_pg) == \
                    cluster.nodes[moved_from].fragment(moved_hash, moved_index, moved_pg)

            late = await cluster.agent(former).scan_once()
            assert late.misplaced_deleted >= 1
            assert cluster.nodes[former].fragment(chunk_hash, index, pg) is None
            assert cluster.nodes[newcomer].fragment(chunk_hash, index, pg) == original
            assert (await cluster.agent(former).scan_once()).misplaced == 0

    asyncio.run(body())


def test_a_stripe_with_fewer_than_10_fragments_is_unrecoverable_and_nothing_is_written(
    coder: ErasureCoder, tmp_path: Path
) -> None:
    async def body() -> None:
        async with local_cluster(tmp_path, members=14) as cluster:
            [(chunk_hash, _)] = await write_chunks(cluster, coder, 1)
            pg = cluster.pg(chunk_hash)
            acting = cluster.cluster_map.acting_set(pg)
            for index in range(5):  # 9 left; position 0 (the PG's primary) among the lost
                assert cluster.nodes[acting[index]].engine.delete(chunk_hash, index, pg)
            report = await cluster.agent(acting[0]).scan_once()
            assert (report.tasks, report.rebuilt, report.copied, report.bytes_fetched) == (0, 0, 0, 0)
            assert report.unrecoverable == 1
            assert metric("coffer_repair_unrecoverable_stripes") == 1
            assert cluster.nodes[acting[0]].fragment(chunk_hash, 0, pg) is None

    asyncio.run(body())


def test_a_started_agent_scans_at_once_and_again_on_a_hint(coder: ErasureCoder, tmp_path: Path) -> None:
    async def body() -> None:
        async with local_cluster(tmp_path, members=14) as cluster:
            [(chunk_hash, _)] = await write_chunks(cluster, coder, 1)
            pg = cluster.pg(chunk_hash)
            node = cluster.holder(chunk_hash, 7)
            original = node.fragment(chunk_hash, 7, pg)
            agent = cluster.agent(node.node_id)
            scans = metric("coffer_repair_scans_total")
            await agent.start()
            try:
                async with asyncio.timeout(20):
                    await poll(lambda: metric("coffer_repair_scans_total") > scans)  # the scan at start
                    assert node.engine.delete(chunk_hash, 7, pg)
                    agent.hint(pg)  # long before the 60 s interval
                    await poll(lambda: node.fragment(chunk_hash, 7, pg) is not None)
            finally:
                await agent.stop()
            assert node.fragment(chunk_hash, 7, pg) == original

    asyncio.run(body())


def test_a_started_agent_scans_again_after_a_jittered_interval(
    coder: ErasureCoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between scans the agent waits ``jittered(scan_interval)``, not the bare interval: nodes that
    start together would otherwise scan (and ask each other for summaries) in lockstep."""
    asked: list[float] = []

    def short_wait(seconds: float) -> float:
        asked.append(seconds)
        return 0.1

    monkeypatch.setattr("storagenode.repair.jittered", short_wait)

    async def body() -> None:
        async with local_cluster(tmp_path, members=14) as cluster:
            agent = cluster.agent(sorted(cluster.cluster_map.nodes)[0])
            scans = metric("coffer_repair_scans_total")
            await agent.start()
            try:
                async with asyncio.timeout(20):  # no hint: only the jittered wait brings scan two
                    await poll(lambda: metric("coffer_repair_scans_total") >= scans + 2)
            finally:
                await agent.stop()

    asyncio.run(body())
    assert asked and set(asked) == {60}


def requests(operation: str) -> float:
    return metric("coffer_storagenode_requests_total", operation=operation, outcome="ok")


def test_a_clean_cluster_is_scanned_with_one_summary_call_per_peer_and_no_listing(
    coder: ErasureCoder, tmp_path: Path
) -> None:
    async def body() -> None:
        async with local_cluster(tmp_path, members=14) as cluster:
            chunks = await write_chunks(cluster, coder, 8)
            members = sorted(cluster.cluster_map.nodes)
            lists, summaries = requests("list"), requests("summarize")
            for node_id in members:
                report = await cluster.agent(node_id).scan_once()
                assert (report.placement_groups, report.listed, report.tasks, report.misplaced) == (PG_COUNT, 0, 0, 0)
                assert sum(report.degraded.values()) == 0 and report.unrecoverable == 0
            assert requests("list") == lists
            # Every node shares a PG with each of the 13 others (4 PGs over 14 nodes).
            assert requests("summarize") - summaries == len(members) * (len(members) - 1)

            # A lost fragment makes only its PG dirty; a hint makes a clean PG listed too.
            chunk_hash = chunks[0][0]
            pg = cluster.pg(chunk_hash)
            holder = cluster.holder(chunk_hash, 2)
            assert holder.engine.delete(chunk_hash, 2, pg)
            primary = primary_of(cluster.cluster_map, pg)
            assert primary is not None and primary != holder.node_id
            report = await cluster.agent(primary).scan_once()
            assert report.listed == 1 and report.degraded["1"] == 1 and report.tasks == 0
            lists = requests("list")
            report = await cluster.agent(holder.node_id).scan_once()
            assert (report.listed, report.rebuilt) == (1, 1)
            assert requests("list") - lists == 13  # the dirty PG on the 13 peers (its own listing is local)
            agent = cluster.agent(holder.node_id)
            agent.hint((pg + 1) % PG_COUNT)
            report = await agent.scan_once()
            assert (report.listed, report.tasks) == (1, 0)
            assert (await agent.scan_once()).listed == 0  # a hint is used once

    asyncio.run(body())


def test_an_unreachable_up_peer_makes_its_placement_groups_listed(coder: ErasureCoder, tmp_path: Path) -> None:
    async def body() -> None:
        async with local_cluster(tmp_path, members=14) as cluster:
            [(chunk_hash, _)] = await write_chunks(cluster, coder, 1)
            pg = cluster.pg(chunk_hash)
            silent = cluster.holder(chunk_hash, 4)
            await silent.server.stop(None)  # still UP in the map
            node = cluster.holder(chunk_hash, 0)
            report = await cluster.agent(node.node_id).scan_once()
            # Every PG shares the silent node: all are listed; its fragments count as missing.
            assert report.listed == PG_COUNT and report.tasks == 0
            assert primary_of(cluster.cluster_map, pg) == node.node_id
            assert report.degraded["1"] == 1

    asyncio.run(body())
