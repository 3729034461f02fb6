"""The servicer's hand-coded ``Stream`` codec against protobuf and the real client, and the fast
``Stream`` path over a real in-process gRPC server with a real engine (no mocks)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from awscrt.checksums import crc32c
from rocksdict import Options, Rdict

from proto import storage_pb2, storage_pb2_grpc
from storagenode.client import StorageNodeClient, _parse_response, _serialize_batch, _serialize_put
from storagenode.engine import HEADERS_COLUMN_FAMILY, FragmentEngine, fragment_key
from storagenode.errors import FragmentCorrupt, FragmentNotFound
from storagenode.records import StoredFragment
from storagenode.servicer import (
    StorageNodeServicer,
    add_to_server,
    get_response_parts,
    parse_stream_batch,
    parse_stream_request,
    serialize_delete_response,
    serialize_error_response,
    serialize_get_response,
    serialize_put_response,
    serialize_response_batch,
)

STREAM_METHOD = "/coffer.storage.v1.StorageNode/Stream"
BIG_U64 = (1 << 64) - 1


def chunk_hash_for(seed: int) -> bytes:
    return hashlib.sha256(seed.to_bytes(8, "big")).digest()


# -- requests -------------------------------------------------------------------------------------


def test_parses_a_protobuf_put_with_every_field_and_views_its_data() -> None:
    data = bytes(range(256)) * 1000
    serialized = storage_pb2.FragmentRequest(request_id=BIG_U64, put=storage_pb2.PutFragmentRequest(
        chunk_hash=chunk_hash_for(1), fragment_index=13, placement_group=(1 << 32) - 1, data=data,
        checksum=crc32c(data), chunk_size=BIG_U64 - 5, epoch=300,
    )).SerializeToString()

    request = parse_stream_request(serialized)

    assert request.problem is None
    assert (request.request_id, request.operation) == (BIG_U64, "put")
    assert request.chunk_hash == chunk_hash_for(1)
    assert (request.fragment_index, request.placement_group) == (13, (1 << 32) - 1)
    assert (request.checksum, request.chunk_size, request.epoch) == (crc32c(data), BIG_U64 - 5, 300)
    assert isinstance(request.data, memoryview) and request.data == data


def test_parses_the_clients_hand_coded_put() -> None:
    data = b"fragment bytes" * 50
    put = storage_pb2.PutFragmentRequest(chunk_hash=chunk_hash_for(2), fragment_index=4, placement_group=9,
                                         checksum=crc32c(data), chunk_size=4 << 20, epoch=7)

    request = parse_stream_request(b"".join(_serialize_put(200, put, memoryview(data))))

    assert (request.request_id, request.operation, request.fragment_index, request.placement_group) == (
        200, "put", 4, 9)
    assert (bytes(request.data), request.checksum, request.chunk_size, request.epoch) == (
        data, crc32c(data), 4 << 20, 7)


@pytest.mark.parametrize("operation", ["get", "delete"])
def test_parses_gets_and_deletes(operation: str) -> None:
    message = {"chunk_hash": chunk_hash_for(3), "fragment_index": 2, "placement_group": 70000}
    serialized = storage_pb2.FragmentRequest(request_id=5, **{operation: message}).SerializeToString()

    request = parse_stream_request(serialized)

    assert (request.request_id, request.operation, request.problem) == (5, operation, None)
    assert (request.chunk_hash, request.fragment_index, request.placement_group) == (chunk_hash_for(3), 2, 70000)


def test_parses_a_conditional_deletes_time_and_a_puts_data_under_the_same_field_number() -> None:
    serialized = storage_pb2.FragmentRequest(request_id=6, delete=storage_pb2.DeleteFragmentRequest(
        chunk_hash=chunk_hash_for(3), fragment_index=1, placement_group=2, written_before_unix_ms=BIG_U64,
    )).SerializeToString()

    request = parse_stream_request(serialized)

    assert (request.operation, request.problem, request.written_before_ms) == ("delete", None, BIG_U64)
    assert parse_stream_request(storage_pb2.FragmentRequest(delete=storage_pb2.DeleteFragmentRequest(
        fragment_index=1)).SerializeToString()).written_before_ms == 0


def test_skips_unknown_fields_of_every_wire_type() -> None:
    known = storage_pb2.FragmentRequest(request_id=9, get=storage_pb2.GetFragmentRequest(
        fragment_index=1)).SerializeToString()
    # field 20 varint, field 21 fixed64, field 22 length-delimited, field 23 fixed32
    unknown = b"\xa0\x01\x96\x01" + b"\xa9\x01" + bytes(8) + b"\xb2\x01\x03abc" + b"\xbd\x01" + bytes(4)

    request = parse_stream_request(unknown + known)

    assert (request.problem, request.request_id, request.operation, request.fragment_index) == (None, 9, "get", 1)


def test_an_empty_request_has_no_operation() -> None:
    request = parse_stream_request(b"")
    assert (request.operation, request.problem) == ("none", None)


@pytest.mark.parametrize("serialized", [
    b"\x08\x07\x12\x05\x0a\x20",  # put of 5 bytes whose chunk hash claims 32
    b"\x08\x07\x12\x10abc",  # put longer than the message
    b"\x08\x07\xff",  # key varint cut short
    b"\x08\x07\x0b",  # wire type 3 (groups) is not supported
    b"\x08\x07" + b"\x18" + b"\xff" * 11,  # varint longer than 10 bytes
])
def test_a_malformed_request_keeps_its_id_and_says_why(serialized: bytes) -> None:
    request = parse_stream_request(serialized)
    assert request.request_id == 7
    assert request.operation == "none"
    assert request.problem is not None and "malformed" in request.problem


def test_parses_a_protobuf_batch_in_order_with_views_of_its_data() -> None:
    data = b"\x01\x02" * 5000
    batch = storage_pb2.FragmentRequestBatch(requests=[
        storage_pb2.FragmentRequest(request_id=1, put={"chunk_hash": chunk_hash_for(1), "data": data, "checksum": 3}),
        storage_pb2.FragmentRequest(request_id=2, get={"chunk_hash": chunk_hash_for(2), "fragment_index": 13}),
        storage_pb2.FragmentRequest(request_id=3, delete={"chunk_hash": chunk_hash_for(3), "placement_group": 7}),
    ]).SerializeToString()
    requests = parse_stream_batch(batch)
    assert [(r.request_id, r.operation, r.problem) for r in requests] == [
        (1, "put", None), (2, "get", None), (3, "delete", None)]
    assert isinstance(requests[0].data, memoryview) and bytes(requests[0].data) == data
    assert (requests[1].chunk_hash, requests[1].fragment_index) == (chunk_hash_for(2), 13)
    assert requests[2].placement_group == 7
    assert parse_stream_batch(b"") == []


def test_a_broken_batch_keeps_the_requests_before_the_damage() -> None:
    first = storage_pb2.FragmentRequest(request_id=5, get={"chunk_hash": chunk_hash_for(1)}).SerializeToString()
    serialized = _serialize_batch([(first,)]) + b"\x0a\x40\x08"  # a second request cut short
    requests = parse_stream_batch(serialized)
    assert [(r.request_id, r.operation) for r in requests] == [(5, "get"), (0, "none")]
    assert requests[1].problem is not None and "malformed FragmentRequestBatch" in requests[1].problem


# -- responses ------------------------------------------------------------------------------------


def test_serialized_responses_equal_protobufs_own() -> None:
    data = b"\x00\xff" * 3000
    stored = StoredFragment(data=data, checksum=(1 << 32) - 2, chunk_size=BIG_U64)
    cases = [
        (serialize_put_response(BIG_U64), storage_pb2.FragmentResponse(request_id=BIG_U64, put={})),
        (serialize_get_response(300, stored), storage_pb2.FragmentResponse(
            request_id=300, get={"data": data, "checksum": (1 << 32) - 2, "chunk_size": BIG_U64})),
        (serialize_delete_response(1, True), storage_pb2.FragmentResponse(request_id=1, delete={"existed": True})),
        (serialize_delete_response(0, False), storage_pb2.FragmentResponse(request_id=0, delete={})),
        (serialize_error_response(4, storage_pb2.STATUS_CORRUPT, "bad \u00e9"), storage_pb2.FragmentResponse(
            request_id=4, status=storage_pb2.STATUS_CORRUPT, message="bad \u00e9")),
    ]
    for serialized, expected in cases:
        parsed = storage_pb2.FragmentResponse.FromString(serialized)
        assert parsed == expected
        assert parsed.WhichOneof("result") == expected.WhichOneof("result")


def test_a_serialized_response_batch_equals_protobufs_own() -> None:
    data = b"\x07" * 20_000
    stored = StoredFragment(data=data, checksum=11, chunk_size=4 << 20)
    serialized = serialize_response_batch([
        get_response_parts(1, stored),
        (serialize_put_response(2),),
        (serialize_error_response(3, storage_pb2.STATUS_NOT_FOUND, "gone"),),
    ])
    assert storage_pb2.FragmentResponseBatch.FromString(serialized) == storage_pb2.FragmentResponseBatch(responses=[
        storage_pb2.FragmentResponse(request_id=1, get={"data": data, "checksum": 11, "chunk_size": 4 << 20}),
        storage_pb2.FragmentResponse(request_id=2, put={}),
        storage_pb2.FragmentResponse(request_id=3, status=storage_pb2.STATUS_NOT_FOUND, message="gone"),
    ])


def test_the_client_reads_a_serialized_get() -> None:
    data = b"abc" * 1000
    response = _parse_response(serialize_get_response(77, StoredFragment(data=data, checksum=crc32c(data),
                                                                          chunk_size=12)))
    assert (response.request_id, response.status, response.checksum) == (77, 0, crc32c(data))
    assert response.data is not None and bytes(response.data) == data


# -- the fast Stream over gRPC ----------------------------------------------------------------------


def run_with_node(tmp_path: Path, body: Callable[[str, FragmentEngine], Awaitable[None]]) -> None:
    engine = FragmentEngine([str(tmp_path / "volume")])
    executor = ThreadPoolExecutor(4)

    async def serve() -> None:
        server = grpc.aio.server()
        add_to_server(StorageNodeServicer("node-x", engine, executor), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            await body(f"127.0.0.1:{port}", engine)
        finally:
            await server.stop(0)

    try:
        asyncio.run(serve())
    finally:
        executor.shutdown()
        engine.close()


def test_concurrent_puts_gets_and_deletes_on_the_fast_stream(tmp_path: Path) -> None:
    fragments = {seed: hashlib.sha512(seed.to_bytes(4, "big")).digest() * (seed + 1) for seed in range(40)}

    async def body(address: str, _engine: FragmentEngine) -> None:
        client = StorageNodeClient(address)
        try:
            await asyncio.gather(*(client.put_fragment(chunk_hash_for(seed), seed % 14, seed, data, 1000, 1)
                                   for seed, data in fragments.items()))
            # Gets batched together: each answer is its own fragment, a missing one fails alone.
            results = await asyncio.gather(
                *(client.get_fragment(chunk_hash_for(seed), seed % 14, seed) for seed in fragments),
                client.get_fragment(chunk_hash_for(999), 0, 0), return_exceptions=True)
            assert [bytes(result) for result in results[:-1]] == list(fragments.values())  # type: ignore[arg-type]
            assert isinstance(results[-1], FragmentNotFound)
            assert await client.delete_fragment(chunk_hash_for(0), 0, 0) is True
            assert await client.delete_fragment(chunk_hash_for(0), 0, 0) is False
            with pytest.raises(FragmentNotFound):
                await client.get_fragment(chunk_hash_for(0), 0, 0)
        finally:
            await client.close()

    run_with_node(tmp_path, body)


def test_a_malformed_request_fails_alone_and_the_stream_keeps_serving(tmp_path: Path) -> None:
    data = b"kept" * 100

    async def body(address: str, engine: FragmentEngine) -> None:
        await asyncio.to_thread(engine.put, chunk_hash_for(1), 3, 8, data, crc32c(data), 400)
        async with grpc.aio.insecure_channel(address) as channel:
            call = channel.stream_stream(STREAM_METHOD, request_serializer=lambda raw: raw,
                                         response_deserializer=storage_pb2.FragmentResponseBatch.FromString)()
            # One batch: request 11 is a put longer than its message, request 13 a put whose data
            # does not match its checksum, request 12 a good get.
            await call.write(_serialize_batch([
                (b"\x08\x0b\x12\x10abc",),
                _serialize_put(13, storage_pb2.PutFragmentRequest(
                    chunk_hash=chunk_hash_for(2), checksum=crc32c(b"other"), chunk_size=4), memoryview(b"data")),
                (storage_pb2.FragmentRequest(request_id=12, get={
                    "chunk_hash": chunk_hash_for(1), "fragment_index": 3, "placement_group": 8}).SerializeToString(),),
            ]))
            answer = await call.read()
            # A batch whose own framing is broken: answered, and the stream still serves.
            await call.write(b"\x0a\x7f\x08\x01")
            broken = await call.read()
            await call.write(_serialize_batch([(storage_pb2.FragmentRequest(request_id=14, get={
                "chunk_hash": chunk_hash_for(1), "fragment_index": 3, "placement_group": 8}).SerializeToString(),)]))
            after = await call.read()
            await call.done_writing()
        bad, wrong_checksum, good = answer.responses
        assert (bad.request_id, bad.status) == (11, storage_pb2.STATUS_INVALID)
        assert "malformed" in bad.message
        assert (wrong_checksum.request_id, wrong_checksum.status) == (13, storage_pb2.STATUS_INVALID)
        assert (good.request_id, good.status, good.get.data, good.get.checksum, good.get.chunk_size) == (
            12, storage_pb2.STATUS_OK, data, crc32c(data), 400)
        assert [(r.status, "malformed FragmentRequestBatch" in r.message) for r in broken.responses] == [
            (storage_pb2.STATUS_INVALID, True)]
        assert (after.responses[0].request_id, after.responses[0].get.data) == (14, data)

    run_with_node(tmp_path, body)


def test_corruption_found_on_a_batched_get_is_reported(tmp_path: Path) -> None:
    data = b"x" * 5000
    chunk_hash = chunk_hash_for(5)
    engine = FragmentEngine([str(tmp_path / "volume")])
    engine.put(chunk_hash, 0, 1, data, crc32c(data), 5000)
    engine.close()
    # Flip the last data byte behind the engine's back, through RocksDB itself.
    raw = Rdict(str(tmp_path / "volume"), Options(raw_mode=True),
                column_families={HEADERS_COLUMN_FAMILY: Options(raw_mode=True)})
    key = fragment_key(chunk_hash, 0, 1)
    value = bytearray(raw[key] or b"")
    value[-1] ^= 0x01
    raw[key] = bytes(value)
    raw.close()
    del raw

    async def body(address: str, engine: FragmentEngine) -> None:
        client = StorageNodeClient(address)
        try:
            with pytest.raises(FragmentCorrupt):
                await client.get_fragment(chunk_hash, 0, 1)
        finally:
            await client.close()
        assert engine.corrupt_fragments_detected == 1

    run_with_node(tmp_path, body)


def test_conditional_deletes_on_the_stream_and_unary_and_listed_write_times(tmp_path: Path) -> None:
    data = b"generation" * 50

    async def body(address: str, _engine: FragmentEngine) -> None:
        client = StorageNodeClient(address)
        channel = grpc.aio.insecure_channel(address)
        try:
            for index in (0, 1):
                await client.put_fragment(chunk_hash_for(8), index, 3, data, 5000, 1)
            listed = await client.list_fragments(3)
            assert [entry.index for entry in listed] == [0, 1]
            assert all(entry.written_at_ms > 0 for entry in listed)
            stub = storage_pb2_grpc.StorageNodeStub(channel)
            [unary_batch] = [batch async for batch in stub.ListFragments(
                storage_pb2.ListFragmentsRequest(placement_group=3))]
            assert [entry.written_at_unix_ms for entry in unary_batch.fragments] == [
                entry.written_at_ms for entry in listed]
            for entry in listed:
                # Written at (not before) the time: kept, on the stream and on the unary call.
                assert await client.delete_fragment(chunk_hash_for(8), entry.index, 3,
                                                    written_before_ms=entry.written_at_ms) is False
                kept = await stub.DeleteFragment(storage_pb2.DeleteFragmentRequest(
                    chunk_hash=chunk_hash_for(8), fragment_index=entry.index, placement_group=3,
                    written_before_unix_ms=entry.written_at_ms))
                assert kept.existed is False
            assert len(await client.list_fragments(3)) == 2
            assert await client.delete_fragment(chunk_hash_for(8), 0, 3,
                                                written_before_ms=listed[0].written_at_ms + 1) is True
            deleted = await stub.DeleteFragment(storage_pb2.DeleteFragmentRequest(
                chunk_hash=chunk_hash_for(8), fragment_index=1, placement_group=3,
                written_before_unix_ms=listed[1].written_at_ms + 1))
            assert deleted.existed is True
            assert await client.list_fragments(3) == []
        finally:
            await channel.close()
            await client.close()

    run_with_node(tmp_path, body)
