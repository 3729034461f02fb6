"""Async client of one storage node, and a pool of them keyed by node id.

Data operations (put, get, delete) travel on ONE long-lived bidirectional ``Stream`` per node,
multiplexed by ``request_id`` (perf-notes: a stream costs about half the CPU of a unary call per
fragment). Requests travel in batches: reads and writes are two lanes, each with at most one
batch waiting for the node's answer; what queues up meanwhile goes out together as the next
``FragmentRequestBatch`` (a request to an idle lane is sent at once). A batch costs both sides one
message's fixed costs (~0.3 ms of CPU each, measured with 4 KB fragments) and the node one group
commit, instead of one per fragment. The stream is opened on first use and reopened after it
breaks. Every failure reaches the caller as a ``storagenode.errors`` exception; no gRPC type
escapes this module:

* node answered with an error status -> the matching domain error;
* timeout, transport failure, broken stream -> ``NodeUnavailable`` (every request pending on a
  broken stream fails at once);
* fragment bytes that do not match the CRC32C the node sent -> ``FragmentCorrupt`` (end to end).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from awscrt.checksums import crc32c

from proto import storage_pb2, storage_pb2_grpc
from storagenode import wire
from storagenode.errors import (
    FragmentCorrupt,
    FragmentNotFound,
    InvalidFragment,
    NodeUnavailable,
    StorageError,
    StorageFull,
)
from storagenode.records import FragmentEntry, NodeHealth, VolumeStats

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Ping the long-lived stream so a node that vanished without a FIN/RST is noticed.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect soon after a node restarts instead of gRPC's default backoff of up to 120 s.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]

#: Full name of the bidirectional data stream (``proto/storage.proto``). The stream is opened with
#: an identity request serializer: request batches are serialized here, puts without a protobuf
#: copy of their data (``_serialize_put``, ``_serialize_batch``).
STREAM_METHOD = "/coffer.storage.v1.StorageNode/Stream"

#: Most requests, and bytes of requests, one batch carries (the node takes up to 128 requests of a
#: stream at once; 8 MiB keeps one message's buffering modest).
MAX_BATCH_REQUESTS = 32
MAX_BATCH_BYTES = 8 * 1024 * 1024

# Protobuf wire-format keys (field number << 3 | wire type 2 "length-delimited"), from
# proto/storage.proto: FragmentRequestBatch.requests = 1, FragmentRequest.put = 2,
# PutFragmentRequest.data = 4. Encoding per the protobuf encoding guide
# (https://protobuf.dev/programming-guides/encoding/).
_REQUEST_KEY = bytes([1 << 3 | 2])
_PUT_KEY = bytes([2 << 3 | 2])
_DATA_KEY = bytes([4 << 3 | 2])

#: A serialized message as pieces to concatenate (so a fragment is copied once, into the batch).
Pieces = Sequence[bytes | memoryview]


def _serialize_put(request_id: int, put: storage_pb2.PutFragmentRequest, data: bytes | memoryview) -> Pieces:
    """A serialized ``FragmentRequest(request_id, put=put)`` whose ``put.data`` is ``data``, as
    pieces to concatenate (``data`` itself is one of them, not copied).

    ``put`` carries every field but ``data``; ``data`` is appended as field 4 of the nested
    message (a parser accepts fields in any order), so the fragment is copied once, into the
    batch (``_serialize_batch``), instead of into a protobuf message and again into its
    serialization (measured 74 -> 22 us per 420 KB fragment).
    """
    head = put.SerializeToString()
    data_length = wire.encode_varint(len(data))
    inner_length = len(head) + len(_DATA_KEY) + len(data_length) + len(data)
    prefix = storage_pb2.FragmentRequest(request_id=request_id).SerializeToString()
    return (b"".join((prefix, _PUT_KEY, wire.encode_varint(inner_length), head, _DATA_KEY, data_length)), data)


def _serialize_batch(requests: Sequence[Pieces]) -> bytes:
    """A serialized ``FragmentRequestBatch`` of ``requests`` (each a serialized
    ``FragmentRequest`` as pieces); the only copy of any fragment data."""
    return wire.join_repeated(_REQUEST_KEY, requests)


class StreamResponse:
    """A ``FragmentResponse`` read off the stream without copying fragment data.

    ``data`` is a read-only view of the received message (the ``get`` payload), ``None`` unless
    the response carries ``get``. ``checksum``: the node's CRC32C of ``data``; ``existed``: the
    ``delete`` answer. Other fields as in ``proto/storage.proto``.
    """

    __slots__ = ("checksum", "data", "existed", "message", "request_id", "status")

    def __init__(self) -> None:
        self.request_id = 0
        self.status = 0
        self.message = ""
        self.data: memoryview | None = None
        self.checksum = 0
        self.existed = False


def _parse_response(serialized: bytes | memoryview) -> StreamResponse:
    """Parse a serialized ``FragmentResponse`` (field numbers from proto/storage.proto) into a
    ``StreamResponse`` whose fragment data is a view of ``serialized`` (protobuf would copy it on
    parsing and again on every access of the field). Unknown fields are skipped, as protobuf does.

    Raises:
        ValueError: malformed message (the stream fails and its requests get NodeUnavailable).
    """
    response = StreamResponse()
    for number, wire_type, value in wire.fields(memoryview(serialized).toreadonly()):
        if wire_type == 0 and isinstance(value, int):
            if number == 1:
                response.request_id = value
            elif number == 2:
                response.status = value
        elif isinstance(value, memoryview):
            if number == 3:
                response.message = bytes(value).decode("utf-8", "replace")
            elif number == 5:  # get: data = 1, checksum = 2
                response.data = value[:0]
                for inner_number, inner_type, inner in wire.fields(value):
                    if inner_number == 1 and isinstance(inner, memoryview):
                        response.data = inner
                    elif inner_number == 2 and inner_type == 0 and isinstance(inner, int):
                        response.checksum = inner
            elif number == 6:  # delete: existed = 1
                for inner_number, inner_type, inner in wire.fields(value):
                    if inner_number == 1 and inner_type == 0 and isinstance(inner, int):
                        response.existed = bool(inner)
    return response


def _parse_response_batch(serialized: bytes) -> list[StreamResponse]:
    """Parse a serialized ``FragmentResponseBatch`` (the ``Stream`` response deserializer) into
    its responses, in order, each as ``_parse_response`` reads it (data stays a view).

    Raises:
        ValueError: malformed message (the stream fails and its requests get NodeUnavailable).
    """
    responses: list[StreamResponse] = []
    for number, _wire_type, value in wire.fields(memoryview(serialized).toreadonly()):
        if number == 1 and isinstance(value, memoryview):
            responses.append(_parse_response(value))
    return responses


def _serializer(request: storage_pb2.FragmentRequest) -> Callable[[int], Pieces]:
    """``request`` serialized with the request id it is given (for ``_exchange``)."""

    def serialize(request_id: int) -> Pieces:
        request.request_id = request_id
        return (request.SerializeToString(),)

    return serialize


# Wire -> domain: the inverse of storagenode.servicer.ERROR_TABLE.
_STATUS_ERRORS: dict[int, type[StorageError]] = {
    storage_pb2.STATUS_NOT_FOUND: FragmentNotFound,
    storage_pb2.STATUS_CORRUPT: FragmentCorrupt,
    storage_pb2.STATUS_NO_SPACE: StorageFull,
    storage_pb2.STATUS_INVALID: InvalidFragment,
    storage_pb2.STATUS_INTERNAL: StorageError,
}
_CODE_ERRORS: dict[grpc.StatusCode, type[StorageError]] = {
    grpc.StatusCode.NOT_FOUND: FragmentNotFound,
    grpc.StatusCode.DATA_LOSS: FragmentCorrupt,
    grpc.StatusCode.RESOURCE_EXHAUSTED: StorageFull,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidFragment,
    grpc.StatusCode.INTERNAL: StorageError,
}


def _rpc_error(address: str, exc: grpc.aio.AioRpcError) -> StorageError:
    """Domain error for a failed unary / server-streaming call; transport codes -> NodeUnavailable."""
    error_class = _CODE_ERRORS.get(exc.code(), NodeUnavailable)
    return error_class(f"{address}: {exc.code().name}: {exc.details()}")


#: Lanes of a stream: gets do not wait behind a batch of puts being made durable.
READ_LANE = 0
WRITE_LANE = 1


class _Lane:
    """Requests of one kind waiting to be sent (request id, serialized pieces, the caller's future)
    and the ids of those sent that the node has not answered yet."""

    __slots__ = ("queue", "unanswered")

    def __init__(self) -> None:
        self.queue: deque[tuple[int, Pieces, asyncio.Future[StreamResponse]]] = deque()
        self.unanswered: set[int] = set()


class _StreamSession:
    """One open ``Stream`` call, its sender and reader tasks and the requests waiting for a response.

    Only the sender task writes to the call, one message at a time (grpc.aio allows one write in
    progress). Callers queue their request in a lane (``submit``) and await their own response
    future: a caller that is cancelled or times out never interrupts a write (grpc.aio cancels the
    whole call when a write is cancelled, which would fail every other request on the stream); a
    request whose caller gave up before its turn is not sent at all. A lane sends its next batch
    once the node has answered every request of its previous one.
    """

    def __init__(self, address: str, call: Any) -> None:
        self.address = address
        self.call = call
        self.pending: dict[int, asyncio.Future[StreamResponse]] = {}
        self.lanes = (_Lane(), _Lane())
        self.lane_of: dict[int, _Lane] = {}  # sent, unanswered request id -> its lane
        self.wakeup = asyncio.Event()
        self.reader = asyncio.create_task(self._read_responses())
        self.sender = asyncio.create_task(self._send_requests())

    @property
    def alive(self) -> bool:
        return not self.reader.done() and not self.sender.done()

    def submit(self, lane: int, request_id: int, serialized: Pieces, future: asyncio.Future[StreamResponse]) -> None:
        """Queue a serialized request on ``lane`` (``READ_LANE`` or ``WRITE_LANE``)."""
        self.lanes[lane].queue.append((request_id, serialized, future))
        self.wakeup.set()

    def _take_batch(self, lane: _Lane) -> bytes | None:
        """The lane's next batch, serialized (None when nothing is waiting); marks it sent."""
        requests: list[Pieces] = []
        size = 0
        while lane.queue and len(requests) < MAX_BATCH_REQUESTS and (not requests or size < MAX_BATCH_BYTES):
            request_id, serialized, future = lane.queue.popleft()
            if future.done():  # the caller gave up before its turn
                continue
            requests.append(serialized)
            size += sum(len(piece) for piece in serialized)
            lane.unanswered.add(request_id)
            self.lane_of[request_id] = lane
        return _serialize_batch(requests) if requests else None

    async def _send_requests(self) -> None:
        try:
            while True:
                await self.wakeup.wait()
                self.wakeup.clear()
                for lane in self.lanes:
                    if lane.unanswered:
                        continue  # its batch in flight: what queues up meanwhile goes next, together
                    batch = self._take_batch(lane)
                    if batch is not None:
                        await self.call.write(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Writing fails when the call already ended; the reader may not know yet.
            self.call.cancel()
            self.fail_pending(NodeUnavailable(f"{self.address}: stream broken: {exc!r}"))

    async def _read_responses(self) -> None:
        reason = "stream ended by the node"
        try:
            async for responses in self.call:
                if responses is None:
                    # grpc.aio hands over None when the deserializer raised: the stream is unusable.
                    reason = "the node sent a malformed response"
                    break
                for response in responses:
                    request_id = response.request_id
                    lane = self.lane_of.pop(request_id, None)
                    if lane is not None:
                        lane.unanswered.discard(request_id)
                        if not lane.unanswered:
                            self.wakeup.set()
                    future = self.pending.pop(request_id, None)
                    if future is not None and not future.done():
                        future.set_result(response)
        except grpc.aio.AioRpcError as exc:
            reason = f"stream failed: {exc.code().name}: {exc.details()}"
        except asyncio.CancelledError:
            reason = "client closed"
            raise
        except Exception as exc:  # a broken stream must never leave futures hanging
            reason = f"stream failed: {exc!r}"
        finally:
            self.fail_pending(NodeUnavailable(f"{self.address}: {reason}"))
            self.call.cancel()  # nothing more can be answered on this call: close it at once
            self.sender.cancel()

    def fail_pending(self, error: StorageError) -> None:
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        self.call.cancel()
        self.reader.cancel()
        self.sender.cancel()


class StorageNodeClient:
    """Client of the storage node at ``address`` (``host:port``). Use from one event loop.

    ``timeout`` (seconds) bounds every operation, including waiting to send. Nothing connects
    until the first call. All methods raise only ``storagenode.errors`` exceptions.
    """

    def __init__(self, address: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.address = address
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub: storage_pb2_grpc.StorageNodeStub | None = None
        self._session: _StreamSession | None = None
        self._request_ids = itertools.count(1)
        self._closed = False

    # -- data operations on the stream ------------------------------------------------------------

    async def put_fragment(
        self,
        chunk_hash: bytes,
        index: int,
        pg: int,
        data: bytes | memoryview,
        chunk_size: int,
        epoch: int,
    ) -> None:
        """Store fragment ``index`` (0..13) of the chunk ``chunk_hash`` (32 bytes) of placement group
        ``pg``; returns once the node has made it durable. ``data`` (any bytes-like object) is
        copied into the batch it is sent in, which may happen after this call suspends: keep it
        unchanged until the call returns or is cancelled (it is never read after that).
        ``chunk_size``: bytes of the chunk; ``epoch``: cluster-map epoch the fragment was placed
        under. The CRC32C of ``data`` is sent along and verified by the node.

        Raises:
            InvalidFragment: the node rejected the request (bad hash, index, or checksum mismatch).
            StorageFull: the node refuses writes.
            NodeUnavailable: no answer within the timeout, or the connection failed.
            StorageError: the node failed internally.
        """
        view = memoryview(data).cast("B")
        put = storage_pb2.PutFragmentRequest(
            chunk_hash=chunk_hash, fragment_index=index, placement_group=pg,
            checksum=crc32c(view), chunk_size=chunk_size, epoch=epoch,
        )
        await self._exchange(WRITE_LANE, lambda request_id: _serialize_put(request_id, put, view))

    async def get_fragment(self, chunk_hash: bytes, index: int, pg: int) -> bytes:
        """Return the bytes of fragment ``index`` of ``chunk_hash`` in placement group ``pg``.

        Raises:
            FragmentNotFound: the node does not hold it.
            FragmentCorrupt: the node found it corrupt, or the bytes received do not match the
                CRC32C the node sent.
            NodeUnavailable / InvalidFragment / StorageError: as for ``put_fragment``.
        """
        return bytes(await self.get_fragment_view(chunk_hash, index, pg))

    async def get_fragment_view(self, chunk_hash: bytes, index: int, pg: int) -> memoryview:
        """``get_fragment`` without copying: a read-only view of the received message.

        Same errors as ``get_fragment`` (the CRC32C is checked over the view).
        """
        request = storage_pb2.FragmentRequest(get=storage_pb2.GetFragmentRequest(
            chunk_hash=chunk_hash, fragment_index=index, placement_group=pg,
        ))
        response = await self._exchange(READ_LANE, _serializer(request))
        data = response.data
        if data is None:
            raise StorageError(f"{self.address}: answer to a get carries no fragment")
        if crc32c(data) != response.checksum:
            raise FragmentCorrupt(f"{self.address}: fragment {chunk_hash.hex()}/{index} failed its CRC32C "
                                  "on arrival")
        return data

    async def delete_fragment(self, chunk_hash: bytes, index: int, pg: int, written_before_ms: int = 0) -> bool:
        """Delete a fragment; returns whether the node deleted a record.

        ``written_before_ms`` 0 deletes unconditionally; otherwise (Unix ms, the node's clock) the
        node deletes only a record written before that time and keeps (returning False) one
        written at or after it, e.g. written again after garbage collection decided to delete.

        Raises:
            NodeUnavailable / InvalidFragment / StorageError: as for ``put_fragment``.
        """
        request = storage_pb2.FragmentRequest(delete=storage_pb2.DeleteFragmentRequest(
            chunk_hash=chunk_hash, fragment_index=index, placement_group=pg,
            written_before_unix_ms=written_before_ms,
        ))
        return (await self._exchange(WRITE_LANE, _serializer(request))).existed

    async def _exchange(self, lane: int, serialize: Callable[[int], Pieces]) -> StreamResponse:
        """Send the request ``serialize(request_id)`` (serialized now, before any suspension) on
        ``lane`` and return the node's response; raises the domain error of a non-OK status."""
        request_id = next(self._request_ids)
        serialized = serialize(request_id)
        session: _StreamSession | None = None
        try:
            async with asyncio.timeout(self.timeout):
                session = self._open_session()
                future: asyncio.Future[StreamResponse] = (
                    asyncio.get_running_loop().create_future()
                )
                session.pending[request_id] = future
                session.submit(lane, request_id, serialized, future)
                response = await future
        except TimeoutError as exc:
            raise NodeUnavailable(f"{self.address}: no answer within {self.timeout:g} s") from exc
        finally:
            if session is not None:
                session.pending.pop(request_id, None)
        if response.status != storage_pb2.STATUS_OK:
            error_class = _STATUS_ERRORS.get(response.status, StorageError)
            raise error_class(f"{self.address}: {response.message}")
        return response

    def _open_session(self) -> _StreamSession:
        if self._closed:
            raise NodeUnavailable(f"{self.address}: client is closed")
        session = self._session
        if session is None or not session.alive:
            # Opening a call does no I/O; a dead node shows up as the reader failing UNAVAILABLE.
            stream = self._channel_for_loop().stream_stream(
                STREAM_METHOD,
                request_serializer=wire.identity,
                response_deserializer=_parse_response_batch,
            )
            session = _StreamSession(self.address, stream())
            self._session = session
        return session

    def _channel_for_loop(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        return self._channel

    def _stub_for_loop(self) -> storage_pb2_grpc.StorageNodeStub:
        if self._stub is None:
            self._stub = storage_pb2_grpc.StorageNodeStub(self._channel_for_loop())
        return self._stub

    # -- listing and health ---------------------------------------------------------------------

    async def list_fragments(self, pg: int) -> list[FragmentEntry]:
        """Every fragment the node holds for placement group ``pg``, each with the time the node
        stored it (``written_at_ms``, Unix ms; 0 for records older than format 3).

        Raises:
            NodeUnavailable: no complete answer within the timeout, or the connection failed.
            InvalidFragment / StorageError: the node rejected or failed the listing.
        """
        if self._closed:
            raise NodeUnavailable(f"{self.address}: client is closed")
        entries: list[FragmentEntry] = []
        try:
            call = self._stub_for_loop().ListFragments(
                storage_pb2.ListFragmentsRequest(placement_group=pg), timeout=self.timeout
            )
            async for batch in call:
                entries.extend(
                    FragmentEntry(chunk_hash=entry.chunk_hash, index=entry.fragment_index,
                                  length=entry.length, checksum=entry.checksum, chunk_size=entry.chunk_size,
                                  written_at_ms=entry.written_at_unix_ms)
                    for entry in batch.fragments
                )
        except grpc.aio.AioRpcError as exc:
            raise _rpc_error(self.address, exc) from exc
        return entries

    async def summarize_placement_groups(
        self, pgs: Sequence[int] | None = None
    ) -> dict[int, dict[int, tuple[int, bytes]]]:
        """``{pg: {fragment index: (fragments, digest)}}`` of what the node holds in ``pgs`` (None
        or empty: every placement group it holds anything of); a placement group or index holding
        nothing is absent. ``digest`` is 16 bytes, defined in ``proto/storage.proto``
        (``PlacementGroupSummary``) and ``FragmentEngine.summarize_by_index``.

        Raises:
            NodeUnavailable: no answer within the timeout, or the connection failed.
            InvalidFragment / StorageError: the node rejected or failed the request.
        """
        if self._closed:
            raise NodeUnavailable(f"{self.address}: client is closed")
        try:
            response = await self._stub_for_loop().SummarizePlacementGroups(
                storage_pb2.SummarizeRequest(placement_groups=list(pgs or ())), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _rpc_error(self.address, exc) from exc
        summaries: dict[int, dict[int, tuple[int, bytes]]] = {}
        for summary in response.summaries:
            summaries.setdefault(summary.placement_group, {})[summary.fragment_index] = (
                summary.fragments, bytes(summary.digest))
        return summaries

    async def hint_repair(self, pgs: Sequence[int]) -> None:
        """Tell the node that placement groups ``pgs`` probably lack one of its fragments (a write
        reached the quorum without it): its repair agent looks at them now.

        Raises:
            NodeUnavailable: no answer within the timeout, or the connection failed.
        """
        if self._closed:
            raise NodeUnavailable(f"{self.address}: client is closed")
        try:
            await self._stub_for_loop().HintRepair(
                storage_pb2.HintRepairRequest(placement_groups=list(pgs)), timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _rpc_error(self.address, exc) from exc

    async def health(self) -> NodeHealth:
        """The node's id, per-volume usage and corrupt fragments seen since it started.

        Raises:
            NodeUnavailable: no answer within the timeout, or the connection failed.
        """
        if self._closed:
            raise NodeUnavailable(f"{self.address}: client is closed")
        try:
            response = await self._stub_for_loop().Health(storage_pb2.HealthRequest(), timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _rpc_error(self.address, exc) from exc
        return NodeHealth(
            node_id=response.node_id,
            volumes=tuple(VolumeStats(path=v.path, fragments=v.fragments, bytes_used=v.bytes_used,
                                      bytes_free=v.bytes_free) for v in response.volumes),
            corrupt_fragments_detected=response.corrupt_fragments_detected,
        )

    async def close(self) -> None:
        """Fail pending requests with ``NodeUnavailable`` and close the connection. Idempotent."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            session.fail_pending(NodeUnavailable(f"{self.address}: client closed"))
            session.close()
            await asyncio.gather(session.reader, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None


class StorageNodePool:
    """One ``StorageNodeClient`` per node id, created on demand and replaced when its address changes.

    ``timeout`` (seconds) is passed to every client.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self._timeout = timeout
        self._clients: dict[str, StorageNodeClient] = {}
        self._retired: set[asyncio.Task[None]] = set()

    def client(self, node_id: str, address: str) -> StorageNodeClient:
        """The client for ``node_id`` at ``address``; a cached client for an old address is closed."""
        existing = self._clients.get(node_id)
        if existing is not None and existing.address == address:
            return existing
        if existing is not None:
            self._retire(existing)
        client = StorageNodeClient(address, timeout=self._timeout)
        self._clients[node_id] = client
        return client

    def _retire(self, client: StorageNodeClient) -> None:
        try:
            task = asyncio.get_running_loop().create_task(client.close())
        except RuntimeError:  # no loop running: nothing was ever opened from this thread
            return
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        """Close every client (pending requests fail with ``NodeUnavailable``)."""
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(client.close() for client in clients), *self._retired, return_exceptions=True)
