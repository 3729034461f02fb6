"""The protobuf wire format, hand-coded for the data path's ``Stream`` messages.

The storage node and its client build and read ``FragmentRequest`` / ``FragmentResponse`` by hand
so a 420 KB fragment is copied once rather than into a message and again into its serialization
(or out of a parsed message on every access). Field numbers come from ``proto/storage.proto``;
the encoding (base-128 varints, keys ``field number << 3 | wire type``) from the protobuf encoding
guide (https://protobuf.dev/programming-guides/encoding/). Both sides are tested against real
protobuf: change them together with the ``.proto`` file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_LENGTH_DELIMITED = 2
WIRE_FIXED32 = 5

_SMALL_VARINTS = [bytes([value]) for value in range(0x80)]


def encode_varint(value: int) -> bytes:
    """The base-128 varint of a non-negative ``value``."""
    if value < 0x80:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(buffer: memoryview, position: int) -> tuple[int, int]:
    """Decode the varint at ``position``; return ``(value, next position)``.

    Raises:
        IndexError: the buffer ends inside the varint.
        ValueError: a varint longer than 10 bytes.
    """
    byte = buffer[position]
    if byte < 0x80:  # the common case: one byte
        return byte, position + 1
    value = byte & 0x7F
    shift = 7
    position += 1
    while True:
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def fields(buffer: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """``(field number, wire type, value)`` of each field of one message, in order.

    Varints and fixed-width values are ints; length-delimited values are views of ``buffer`` (no
    copy). Unknown fields are the caller's to skip, as protobuf does.

    Raises:
        ValueError / IndexError: malformed input (a field running past the end, an unknown wire
        type, an over-long varint).
    """
    position = 0
    end = len(buffer)
    while position < end:
        key, position = read_varint(buffer, position)
        number, wire_type = key >> 3, key & 7
        value: int | memoryview
        if wire_type == WIRE_VARINT:
            value, position = read_varint(buffer, position)
        elif wire_type == WIRE_LENGTH_DELIMITED:
            length, position = read_varint(buffer, position)
            if position + length > end:
                raise ValueError("length-delimited field runs past the message")
            value = buffer[position : position + length]
            position += length
        elif wire_type == WIRE_FIXED64:
            if position + 8 > end:
                raise ValueError("fixed64 field runs past the message")
            value, position = int.from_bytes(buffer[position : position + 8], "little"), position + 8
        elif wire_type == WIRE_FIXED32:
            if position + 4 > end:
                raise ValueError("fixed32 field runs past the message")
            value, position = int.from_bytes(buffer[position : position + 4], "little"), position + 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        yield number, wire_type, value


def join_repeated(key: bytes, messages: Iterable[Sequence[bytes | memoryview]]) -> bytes:
    """A serialized message made of one repeated length-delimited field (``key``: its field key
    byte), each element a serialized message given as pieces: the pieces are copied once, into the
    returned bytes (e.g. the ``Stream`` batches, whose elements hold ~420 KB fragments)."""
    pieces: list[bytes | memoryview] = []
    for message in messages:
        pieces.append(key)
        pieces.append(encode_varint(sum(len(piece) for piece in message)))
        pieces.extend(message)
    return b"".join(pieces)


def identity(serialized: bytes) -> bytes:
    """The (de)serializer of a gRPC method whose messages are coded by hand: bytes pass through."""
    return serialized
