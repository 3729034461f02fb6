"""Unit tests of the PUT data path's copy-avoiding parts: erasure-coder chunk buffers (real worker
processes and shared memory) and the storage-node client's hand-serialized put requests (parsed
back by real protobuf)."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Iterator

import pytest

from common.layout import STRIPE_WIDTH
from frontend.erasure import INLINE_MAX_BYTES, ErasureCoder, fragment_bytes
from proto import storage_pb2
from storagenode.client import _parse_response, _parse_response_batch, _serialize_batch, _serialize_put


@pytest.fixture(scope="module")
def coder() -> Iterator[ErasureCoder]:
    with ErasureCoder(workers=1, chunk_buffers=2) as erasure_coder:
        yield erasure_coder
        # Views of the shared memory held by reference cycles (tracebacks of expected errors) must
        # be gone before the segments are closed, or SharedMemory.__del__ raises BufferError later.
        gc.collect()


@pytest.mark.parametrize("size", [1, INLINE_MAX_BYTES + 1, 1_000_003])
def test_encode_in_buffer_matches_encode_and_leaves_the_chunk(coder: ErasureCoder, size: int) -> None:
    chunk = os.urandom(size)
    buffer = coder.try_chunk_buffer()
    assert buffer is not None
    try:
        buffer.view[:size] = chunk
        in_place = asyncio.run(coder.encode_buffer(buffer, size))
        assert len(in_place) == STRIPE_WIDTH
        assert all(len(fragment) == fragment_bytes(size) for fragment in in_place)
        copied = asyncio.run(coder.encode(chunk))
        assert [bytes(fragment) for fragment in in_place] == copied
        assert bytes(buffer.view[:size]) == chunk
    finally:
        buffer.release()


def test_buffers_are_lent_without_waiting_and_come_back(coder: ErasureCoder) -> None:
    first, second = coder.try_chunk_buffer(), coder.try_chunk_buffer()
    assert first is not None and second is not None
    assert coder.try_chunk_buffer() is None  # all lent: the caller falls back, never waits
    first.release()
    first.release()  # idempotent: the slot is not handed out twice
    third = coder.try_chunk_buffer()
    assert third is not None
    assert coder.try_chunk_buffer() is None
    with pytest.raises(RuntimeError):
        asyncio.run(coder.encode_buffer(first, 10))  # a released buffer is refused
    second.release()
    third.release()


@pytest.mark.parametrize("length", [0, 1, 127, 128, 16_383, 16_384, 420_000])
def test_serialized_put_parses_as_the_protobuf_message(length: int) -> None:
    data = os.urandom(length)
    put = storage_pb2.PutFragmentRequest(
        chunk_hash=bytes(range(32)), fragment_index=13, placement_group=300, checksum=0xFFFFFFFF,
        chunk_size=4 << 20, epoch=2**40,
    )
    pieces = _serialize_put(2**35 + 7, put, memoryview(data))
    # The fragment is not copied here: the batch that carries it copies it once.
    assert isinstance(pieces[-1], memoryview) and pieces[-1].obj is data
    parsed = storage_pb2.FragmentRequest.FromString(b"".join(pieces))
    expected = storage_pb2.PutFragmentRequest()
    expected.CopyFrom(put)
    expected.data = data
    assert parsed == storage_pb2.FragmentRequest(request_id=2**35 + 7, put=expected)


@pytest.mark.parametrize(
    "response",
    [
        storage_pb2.FragmentResponse(
            request_id=2**40 + 3,
            get=storage_pb2.GetFragmentResponse(data=b"\x00\xff" * 70_000, checksum=0xDEADBEEF, chunk_size=4 << 20),
        ),
        storage_pb2.FragmentResponse(request_id=1, get=storage_pb2.GetFragmentResponse()),
        storage_pb2.FragmentResponse(request_id=9, delete=storage_pb2.DeleteFragmentResponse(existed=True)),
        storage_pb2.FragmentResponse(request_id=9, delete=storage_pb2.DeleteFragmentResponse(existed=False)),
        storage_pb2.FragmentResponse(request_id=7, put=storage_pb2.PutFragmentResponse()),
        storage_pb2.FragmentResponse(request_id=5, status=storage_pb2.STATUS_NOT_FOUND, message="nö such fragment"),
    ],
)
def test_stream_responses_parse_like_protobuf(response: storage_pb2.FragmentResponse) -> None:
    parsed = _parse_response(response.SerializeToString())
    assert (parsed.request_id, parsed.status, parsed.message) == (response.request_id, response.status,
                                                                  response.message)
    if response.HasField("get"):
        assert parsed.data is not None and bytes(parsed.data) == response.get.data
        assert parsed.checksum == response.get.checksum
    else:
        assert parsed.data is None
    assert parsed.existed == (response.HasField("delete") and response.delete.existed)


def test_stream_response_skips_unknown_fields_and_refuses_truncation() -> None:
    known = storage_pb2.FragmentResponse(request_id=4, get=storage_pb2.GetFragmentResponse(data=b"abc", checksum=7))
    # Unknown fields of every wire type (numbers 10-13) around the known ones.
    unknown = bytes([10 << 3 | 0, 0x96, 0x01, 11 << 3 | 1]) + bytes(8) + bytes([12 << 3 | 5]) + bytes(4)
    unknown += bytes([13 << 3 | 2, 2]) + b"zz"
    parsed = _parse_response(unknown + known.SerializeToString() + unknown)
    assert (parsed.request_id, parsed.data, parsed.checksum) == (4, b"abc", 7)
    serialized = known.SerializeToString()
    with pytest.raises((ValueError, IndexError)):
        _parse_response(serialized[:-3])


def test_a_serialized_request_batch_parses_as_the_protobuf_message() -> None:
    put = storage_pb2.PutFragmentRequest(chunk_hash=bytes(32), fragment_index=2, placement_group=5, checksum=9)
    get = storage_pb2.FragmentRequest(request_id=8, get={"chunk_hash": bytes(32), "fragment_index": 3})
    data = os.urandom(300_000)
    serialized = _serialize_batch([_serialize_put(7, put, memoryview(data)), (get.SerializeToString(),)])
    parsed = storage_pb2.FragmentRequestBatch.FromString(serialized)
    expected_put = storage_pb2.PutFragmentRequest()
    expected_put.CopyFrom(put)
    expected_put.data = data
    assert list(parsed.requests) == [storage_pb2.FragmentRequest(request_id=7, put=expected_put), get]


def test_response_batches_parse_like_protobuf() -> None:
    responses = [
        storage_pb2.FragmentResponse(request_id=3, get=storage_pb2.GetFragmentResponse(data=b"abc" * 999, checksum=4)),
        storage_pb2.FragmentResponse(request_id=4, put=storage_pb2.PutFragmentResponse()),
        storage_pb2.FragmentResponse(request_id=5, status=storage_pb2.STATUS_CORRUPT, message="bad"),
    ]
    parsed = _parse_response_batch(storage_pb2.FragmentResponseBatch(responses=responses).SerializeToString())
    assert [(r.request_id, r.status, r.message) for r in parsed] == [(3, 0, ""), (4, 0, ""), (5, 2, "bad")]
    assert parsed[0].data is not None and bytes(parsed[0].data) == b"abc" * 999
    assert _parse_response_batch(b"") == []
    with pytest.raises((ValueError, IndexError)):
        _parse_response_batch(storage_pb2.FragmentResponseBatch(responses=responses).SerializeToString()[:-2])
