"""``SummarizePlacementGroups`` over a real in-process gRPC server (registered with
``add_to_server``) and a real engine: the client's answer equals the engine's summaries."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from awscrt.checksums import crc32c
from prometheus_client import REGISTRY

from storagenode.client import StorageNodeClient
from storagenode.engine import FragmentEngine, FragmentWrite
from storagenode.errors import NodeUnavailable
from storagenode.servicer import StorageNodeServicer, add_to_server
from tests.unit.storagenode.test_engine_format3 import chunk_hash_for, fragment


def test_summaries_over_grpc_match_the_engine(tmp_path: Path) -> None:
    engine = FragmentEngine([str(tmp_path / "volume")], min_free_bytes=0)
    executor = ThreadPoolExecutor(2)
    writes = []
    for seed in range(10):
        data = fragment(seed, 256)
        writes.append(FragmentWrite(chunk_hash_for(seed), seed % 2, 10 + seed % 3, data, crc32c(data), 2560))
    assert engine.put_many(writes) == [None] * 10

    async def body() -> None:
        server = grpc.aio.server()
        add_to_server(StorageNodeServicer("node-x", engine, executor), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        client = StorageNodeClient(f"127.0.0.1:{port}", timeout=5.0)
        try:
            calls = REGISTRY.get_sample_value(
                "coffer_storagenode_requests_total", {"operation": "summarize", "outcome": "ok"}) or 0.0
            everything = await client.summarize_placement_groups()
            assert everything == engine.summarize_by_index()
            assert set(everything) == {10, 11, 12}
            assert sum(count for by_index in everything.values() for count, _ in by_index.values()) == 10
            some = await client.summarize_placement_groups([11, 40])
            assert some == {11: everything[11]}
            assert REGISTRY.get_sample_value(
                "coffer_storagenode_requests_total", {"operation": "summarize", "outcome": "ok"}) == calls + 2
            # A change shows in the next answer.
            await client.delete_fragment(chunk_hash_for(1), 1, 11)
            assert (await client.summarize_placement_groups([11]))[11] != everything[11]
            assert await client.summarize_placement_groups([2**32 - 1]) == {}  # the last u32 PG: empty
        finally:
            await client.close()
            await server.stop(0)
        with pytest.raises(NodeUnavailable):
            await StorageNodeClient(f"127.0.0.1:{port}", timeout=2.0).summarize_placement_groups([1])

    try:
        asyncio.run(body())
    finally:
        executor.shutdown()
        engine.close()
