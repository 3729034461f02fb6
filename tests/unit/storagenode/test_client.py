"""The client and servicer over real in-process gRPC servers (no mocks), and the node pool."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from awscrt.checksums import crc32c
from prometheus_client import REGISTRY

from proto import storage_pb2, storage_pb2_grpc
from storagenode.client import StorageNodeClient, StorageNodePool
from storagenode.engine import FragmentEngine, FragmentWrite
from storagenode.errors import FragmentCorrupt, InvalidFragment, NodeUnavailable, StorageError
from storagenode.records import StoredFragment
from storagenode.servicer import GroupCommitter, StorageNodeServicer
from tests.fixtures.processes import free_port


def chunk_hash_for(seed: int) -> bytes:
    return hashlib.sha256(seed.to_bytes(8, "big")).digest()


class LyingServicer(storage_pb2_grpc.StorageNodeServicer):
    """Answers every get with bytes that do not match the checksum it sends."""

    async def Stream(
        self, request_iterator: AsyncIterator[storage_pb2.FragmentRequestBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[storage_pb2.FragmentResponseBatch]:
        async for batch in request_iterator:
            yield storage_pb2.FragmentResponseBatch(responses=[
                storage_pb2.FragmentResponse(
                    request_id=request.request_id,
                    get=storage_pb2.GetFragmentResponse(data=b"flipped", checksum=crc32c(b"original")),
                )
                for request in batch.requests
            ])


async def with_server(
    servicer: storage_pb2_grpc.StorageNodeServicer, body: Callable[[str], Awaitable[None]]
) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    storage_pb2_grpc.add_StorageNodeServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await body(f"127.0.0.1:{port}")
    finally:
        await server.stop(0)


def test_get_verifies_the_checksum_end_to_end() -> None:
    async def body(address: str) -> None:
        client = StorageNodeClient(address)
        try:
            with pytest.raises(FragmentCorrupt):
                await client.get_fragment(chunk_hash_for(1), 0, 0)
        finally:
            await client.close()

    asyncio.run(with_server(LyingServicer(), body))


def test_servicer_round_trip_and_unary_error_codes(tmp_path: Path) -> None:
    engine = FragmentEngine([str(tmp_path / "volume")], min_free_bytes=0)
    executor = ThreadPoolExecutor(2)

    async def body(address: str) -> None:
        client = StorageNodeClient(address)
        channel = grpc.aio.insecure_channel(address)
        try:
            await client.put_fragment(chunk_hash_for(1), 5, 6, b"payload", 70, 1)
            assert await client.get_fragment(chunk_hash_for(1), 5, 6) == b"payload"
            stub = storage_pb2_grpc.StorageNodeStub(channel)
            unary = await stub.GetFragment(storage_pb2.GetFragmentRequest(
                chunk_hash=chunk_hash_for(1), fragment_index=5, placement_group=6))
            assert (unary.data, unary.chunk_size) == (b"payload", 70)
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetFragment(storage_pb2.GetFragmentRequest(
                    chunk_hash=chunk_hash_for(2), fragment_index=5, placement_group=6))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as invalid:
                await stub.PutFragment(storage_pb2.PutFragmentRequest(
                    chunk_hash=chunk_hash_for(2), fragment_index=5, data=b"abc", checksum=1))
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(InvalidFragment):
                await client.put_fragment(b"", 0, 0, b"x", 1, 1)
        finally:
            await channel.close()
            await client.close()

    try:
        asyncio.run(with_server(StorageNodeServicer("node-x", engine, executor), body))
    finally:
        executor.shutdown()
        engine.close()


def test_puts_queued_together_are_committed_in_one_batch(tmp_path: Path) -> None:
    engine = FragmentEngine([str(tmp_path / "v0"), str(tmp_path / "v1")], min_free_bytes=0)
    executor = ThreadPoolExecutor(2)
    count_before = REGISTRY.get_sample_value("coffer_storagenode_put_batch_fragments_count") or 0.0
    sum_before = REGISTRY.get_sample_value("coffer_storagenode_put_batch_fragments_sum") or 0.0

    async def scenario() -> None:
        committer = GroupCommitter(engine, executor)
        # All ten are queued before the writer task first runs, so they form one batch.
        await asyncio.gather(*(
            committer.put(FragmentWrite(chunk_hash_for(seed), 0, 1, b"data", crc32c(b"data"), 4))
            for seed in range(10)
        ))

    try:
        asyncio.run(scenario())
        assert len(list(engine.list_pg(1))) == 10
        assert REGISTRY.get_sample_value("coffer_storagenode_put_batch_fragments_count") == count_before + 1
        assert REGISTRY.get_sample_value("coffer_storagenode_put_batch_fragments_sum") == sum_before + 10
    finally:
        executor.shutdown()
        engine.close()


class ThreadRecordingEngine(FragmentEngine):
    """A real engine that notes the name of the thread each ``put_many`` and ``get`` runs in."""

    def __init__(self, volume_paths: list[str]) -> None:
        super().__init__(volume_paths, min_free_bytes=0)
        self.put_threads: list[str] = []
        self.get_threads: list[str] = []

    def put_many(self, fragments: Sequence[FragmentWrite]) -> list[StorageError | None]:
        self.put_threads.append(threading.current_thread().name)
        return super().put_many(fragments)

    def get(self, chunk_hash: bytes, index: int, pg: int) -> StoredFragment:
        self.get_threads.append(threading.current_thread().name)
        return super().get(chunk_hash, index, pg)


def test_puts_run_in_the_write_executor_and_gets_in_the_shared_one(tmp_path: Path) -> None:
    engine = ThreadRecordingEngine([str(tmp_path / "volume")])
    executor = ThreadPoolExecutor(4, thread_name_prefix="engine")
    write_executor = ThreadPoolExecutor(1, thread_name_prefix="engine-write")

    async def body(address: str) -> None:
        client = StorageNodeClient(address)
        try:
            await asyncio.gather(*(client.put_fragment(chunk_hash_for(seed), 0, 3, b"data-%d" % seed, 60, 1)
                                   for seed in range(24)))
            fetched = await asyncio.gather(*(client.get_fragment(chunk_hash_for(seed), 0, 3) for seed in range(24)))
            assert fetched == [b"data-%d" % seed for seed in range(24)]
        finally:
            await client.close()

    try:
        asyncio.run(with_server(StorageNodeServicer("node-x", engine, executor, write_executor=write_executor), body))
        assert engine.put_threads and set(engine.put_threads) == {"engine-write_0"}
        assert engine.get_threads and not any(name.startswith("engine-write") for name in engine.get_threads)
    finally:
        write_executor.shutdown()
        executor.shutdown()
        engine.close()


def test_nothing_listening_raises_node_unavailable() -> None:
    async def scenario() -> None:
        client = StorageNodeClient(f"127.0.0.1:{free_port()}", timeout=30)
        try:
            with pytest.raises(NodeUnavailable):
                await client.get_fragment(chunk_hash_for(1), 0, 0)
            with pytest.raises(NodeUnavailable):
                await client.health()
            with pytest.raises(NodeUnavailable):
                await client.list_fragments(0)
        finally:
            await client.close()
        with pytest.raises(NodeUnavailable):
            await client.get_fragment(chunk_hash_for(1), 0, 0)

    asyncio.run(scenario())


def test_pool_caches_clients_and_replaces_one_whose_address_changed() -> None:
    async def scenario() -> None:
        pool = StorageNodePool(timeout=3)
        first = pool.client("node-1", "127.0.0.1:1001")
        assert pool.client("node-1", "127.0.0.1:1001") is first
        assert pool.client("node-2", "127.0.0.1:1002") is not first
        moved = pool.client("node-1", "127.0.0.1:2001")
        assert moved is not first
        assert moved.address == "127.0.0.1:2001"
        assert moved.timeout == 3
        await pool.close()
        with pytest.raises(NodeUnavailable):  # the replaced client was closed
            await first.get_fragment(chunk_hash_for(1), 0, 0)

    asyncio.run(scenario())


@pytest.mark.parametrize("cancel_after", [0.0, 0.0005, 0.001])
def test_cancelled_requests_never_break_the_shared_stream(tmp_path: Path, cancel_after: float) -> None:
    """Callers that give up (client disconnects, hedges, grace periods) while their 420 KB put is
    being sent must not take the node's stream, and every other request on it, down with them."""
    engine = FragmentEngine([str(tmp_path / "volume")], min_free_bytes=0)
    executor = ThreadPoolExecutor(2)
    fragment = bytes(range(256)) * 1639  # ~420 KB, the size of a 4 MiB chunk's fragment

    async def body(address: str) -> None:
        client = StorageNodeClient(address, timeout=10)
        try:
            for trial in range(10):
                victims = [asyncio.create_task(client.put_fragment(chunk_hash_for(1000 + trial), i, trial,
                                                                   fragment, 4 << 20, 1)) for i in range(3)]
                others = [asyncio.create_task(client.put_fragment(chunk_hash_for(trial), i, trial,
                                                                  fragment, 4 << 20, 1)) for i in range(3)]
                await asyncio.sleep(cancel_after)
                for task in victims:
                    task.cancel()
                await asyncio.gather(*others)  # raises if the stream broke under them
                await asyncio.gather(*victims, return_exceptions=True)
                for i in range(3):
                    assert await client.get_fragment(chunk_hash_for(trial), i, trial) == fragment
        finally:
            await client.close()

    try:
        asyncio.run(with_server(StorageNodeServicer("node-x", engine, executor), body))
    finally:
        executor.shutdown()
        engine.close()


class HoldingServicer(storage_pb2_grpc.StorageNodeServicer):
    """Records the requests of every batch it receives and answers each batch OK, holding back the
    answer to the first batch until ``release`` is set."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, str | None]]] = []
        self.first_received = asyncio.Event()
        self.release = asyncio.Event()

    async def Stream(
        self, request_iterator: AsyncIterator[storage_pb2.FragmentRequestBatch], context: grpc.aio.ServicerContext
    ) -> None:
        async def answer(batch: storage_pb2.FragmentRequestBatch, hold: bool) -> None:
            if hold:
                await self.release.wait()
            await context.write(storage_pb2.FragmentResponseBatch(responses=[
                storage_pb2.FragmentResponse(request_id=request.request_id,
                                             get={"data": b"d", "checksum": crc32c(b"d")})
                if request.WhichOneof("operation") == "get"
                else storage_pb2.FragmentResponse(request_id=request.request_id, put={})
                for request in batch.requests
            ]))

        answers = []
        async for batch in request_iterator:
            self.batches.append([(request.request_id, request.WhichOneof("operation")) for request in batch.requests])
            answers.append(asyncio.create_task(answer(batch, hold=len(self.batches) == 1)))
            self.first_received.set()
        await asyncio.gather(*answers)


def test_requests_queued_behind_an_unanswered_batch_go_as_one_batch_and_reads_do_not_wait() -> None:
    servicer = HoldingServicer()

    async def body(address: str) -> None:
        client = StorageNodeClient(address)
        try:
            first = asyncio.create_task(client.put_fragment(chunk_hash_for(0), 0, 1, b"zero", 4, 1))
            await servicer.first_received.wait()
            # The write lane waits for the node's answer to the first put: these queue up.
            later = [asyncio.create_task(client.put_fragment(chunk_hash_for(seed), 0, 1, b"data", 4, 1))
                     for seed in range(1, 6)]
            # The read lane is idle: a get goes out (and is answered) while the first put is held.
            assert await client.get_fragment(chunk_hash_for(9), 0, 1) == b"d"
            assert not first.done() and not any(task.done() for task in later)
            servicer.release.set()
            await asyncio.gather(first, *later)
        finally:
            await client.close()

    asyncio.run(with_server(servicer, body))
    puts = [batch for batch in servicer.batches if batch[0][1] == "put"]
    assert [len(batch) for batch in puts] == [1, 5]
    assert [operation for batch in servicer.batches for _id, operation in batch].count("get") == 1


def test_repair_hints_reach_the_nodes_repair_agent(tmp_path: Path) -> None:
    engine = FragmentEngine([str(tmp_path / "v0")], min_free_bytes=0)
    executor = ThreadPoolExecutor(2)
    hinted: list[int] = []
    servicer = StorageNodeServicer("node-x", engine, executor)

    async def body(address: str) -> None:
        client = StorageNodeClient(address)
        try:
            await client.hint_repair([7, 9])  # no agent yet: accepted, dropped
            servicer.set_repair_hints(hinted.append)
            await client.hint_repair([3, 5])
        finally:
            await client.close()

    try:
        asyncio.run(with_server(servicer, body))
    finally:
        executor.shutdown()
        engine.close()
    assert hinted == [3, 5]
