"""The hand-coded protobuf wire format against real protobuf serialization."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proto import storage_pb2
from storagenode import wire


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varints_round_trip(value: int) -> None:
    encoded = wire.encode_varint(value)
    assert wire.read_varint(memoryview(encoded), 0) == (value, len(encoded))


@given(chunk_size=st.integers(min_value=0, max_value=2**64 - 1), index=st.integers(min_value=0, max_value=13),
       data=st.binary(max_size=300))
def test_fields_of_a_protobuf_message(chunk_size: int, index: int, data: bytes) -> None:
    message = storage_pb2.PutFragmentRequest(chunk_hash=b"h" * 32, fragment_index=index, data=data,
                                             chunk_size=chunk_size)
    found = {number: value for number, _wire_type, value in wire.fields(memoryview(message.SerializeToString()))}
    assert bytes(found[1]) == b"h" * 32
    assert found.get(2, 0) == index
    assert bytes(found.get(4, memoryview(b""))) == data
    assert found.get(6, 0) == chunk_size


def test_truncated_and_unknown_wire_types_are_errors() -> None:
    serialized = storage_pb2.GetFragmentResponse(data=b"x" * 50, checksum=7).SerializeToString()
    with pytest.raises((ValueError, IndexError)):
        list(wire.fields(memoryview(serialized[:-3])))
    with pytest.raises(ValueError):
        list(wire.fields(memoryview(bytes([1 << 3 | 3]))))  # wire type 3 (groups) is not used
    fixed = bytes([9 << 3 | 1]) + (5).to_bytes(8, "little") + bytes([10 << 3 | 5]) + (6).to_bytes(4, "little")
    assert list(wire.fields(memoryview(fixed))) == [(9, 1, 5), (10, 5, 6)]


def test_join_repeated_frames_each_message_as_one_length_delimited_field() -> None:
    first = storage_pb2.FragmentRequest(request_id=1).SerializeToString()
    second = storage_pb2.FragmentRequest(request_id=2, get={"fragment_index": 3}).SerializeToString()
    joined = wire.join_repeated(b"\x0a", [(first,), (second[:3], memoryview(second)[3:])])
    parsed = storage_pb2.FragmentRequestBatch.FromString(joined)
    assert [request.request_id for request in parsed.requests] == [1, 2]
    assert parsed.requests[1].get.fragment_index == 3
    assert wire.join_repeated(b"\x0a", []) == b""
