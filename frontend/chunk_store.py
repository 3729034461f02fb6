"""Chunks as stripes across storage nodes: write with a quorum, read a range, fall back to parity.

Write (design brief, "Write path" 4-5): encode the chunk into 14 fragments, send fragment ``i`` to
``acting_set[pg][i]`` all in parallel, succeed once ``write_quorum`` (12) are durable. Fragments
that did not make it are logged and counted; repair rebuilds them later.

Read (design brief, "Read path"): the code is systematic, so a healthy read fetches only the data
fragments that cover the range and slices their payloads (no decode). When one of them fails
(node unavailable, fragment missing or corrupt) or is slower than ``hedge_after`` seconds, the
other fragments are fetched too and the whole chunk is decoded from any 10, then verified against
its SHA-256. Partial reads on the fast path rely on the fragment CRC32C that the storage-node
client verifies end to end; whole chunks are always checked against their hash. Wrong bytes are
never returned: a chunk that cannot be rebuilt raises ``ChunkUnavailable`` or ``ChunkCorrupt``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import Counter

from common.erasure_code import next_combination
from common.layout import CHUNK_HASH_BYTES, DATA_FRAGMENTS, STRIPE_WIDTH, WRITE_QUORUM, placement_group
from frontend.datapath_errors import ChunkCorrupt, ChunkUnavailable, InsufficientFragments
from frontend.erasure import (
    ChunkBuffer,
    ErasureCoder,
    data_fragment_payload_range,
    fragment_bytes,
    fragment_header_bytes,
)
from placement.cluster_map import NodeState
from storagenode.errors import FragmentCorrupt, StorageError

if TYPE_CHECKING:
    from placement.cluster_map import ClusterMap
    from storagenode.client import StorageNodePool

logger = logging.getLogger(__name__)

T = TypeVar("T")

CHUNK_BYTES_WRITTEN = Counter(
    "coffer_frontend_chunk_bytes_written_total", "Chunk bytes written as stripes (before erasure coding)."
)
CHUNK_BYTES_READ = Counter("coffer_frontend_chunk_bytes_read_total", "Chunk bytes returned by chunk reads.")
STRIPES_WRITTEN = Counter(
    "coffer_frontend_stripes_written_total", "Stripes written with at least the quorum."
)
STRIPES_WRITTEN_DEGRADED = Counter(
    "coffer_frontend_stripes_written_degraded_total",
    "Stripes written with fewer than all 14 fragments durable (repair must complete them).",
)
MISSING_FRAGMENTS = Counter(
    "coffer_frontend_missing_fragments_total", "Fragments of successful stripe writes that were not written."
)
REPAIR_HINTS = Counter(
    "coffer_frontend_repair_hints_total",
    "Repair hints sent to up nodes that missed their fragment of a stripe written at the quorum.",
)
FAILED_STRIPE_WRITES = Counter(
    "coffer_frontend_failed_stripe_writes_total", "Stripe writes that missed the write quorum."
)
DEGRADED_READS = Counter(
    "coffer_frontend_degraded_reads_total", "Chunk reads that fetched parity and decoded."
)
CORRUPT_FRAGMENTS = Counter(
    "coffer_frontend_corrupt_fragments_total",
    "Fragments found corrupt on read (bad CRC32C at the node or in transit, wrong length).",
)
CHUNK_HASH_MISMATCHES = Counter(
    "coffer_frontend_chunk_hash_mismatches_total",
    "Assembled or decoded chunks whose SHA-256 did not match their hash (another combination was tried).",
)

#: Decodes tried with different fragment combinations before a chunk is declared corrupt.
MAX_DECODE_ATTEMPTS = 16


@dataclass(frozen=True)
class ChunkToWrite:
    """One chunk for ``ChunkStore.write_chunks``: ``chunk_hash`` (32 raw bytes, SHA-256 of the
    chunk), ``size`` bytes, and the bytes either in ``buffer.view[:size]`` (an erasure-coder
    buffer, encoded in place) or, when ``buffer`` is None, in ``data``."""

    chunk_hash: bytes
    size: int
    data: bytes | bytearray | memoryview = b""
    buffer: ChunkBuffer | None = None


@dataclass(frozen=True)
class _Target:
    """Where fragment ``index`` of one stripe lives in the map the operation started with."""

    index: int
    node_id: str
    address: str
    # DOWN in the map (lease lapsed): asked only when the other nodes cannot supply 10 fragments,
    # so a node that black-holes requests costs no hedge timeout per chunk.
    down: bool = False


class ChunkStore:
    """Reads and writes chunks as stripes of 14 fragments on their placement group's acting set.

    ``cluster_map`` returns the current ``ClusterMap`` (called once per operation); ``nodes`` hands
    out storage-node clients; ``coder`` erasure-codes. ``write_quorum`` (fragments, default 12 =
    k+2) must be durable for a write to succeed. ``hedge_after`` (seconds) is how long a read waits
    for its data fragments before also fetching the others. ``write_grace`` (seconds) is how long a
    write that reached the quorum keeps waiting for its remaining fragments before giving them up
    to repair.
    """

    def __init__(
        self,
        cluster_map: Callable[[], ClusterMap],
        nodes: StorageNodePool,
        coder: ErasureCoder,
        *,
        write_quorum: int = WRITE_QUORUM,
        hedge_after: float = 1.0,
        write_grace: float = 0.5,
    ) -> None:
        if not DATA_FRAGMENTS <= write_quorum <= STRIPE_WIDTH:
            raise ValueError(f"write_quorum must be {DATA_FRAGMENTS}..{STRIPE_WIDTH}, got {write_quorum}")
        self._cluster_map = cluster_map
        self._nodes = nodes
        self._coder = coder
        self.write_quorum = write_quorum
        self.hedge_after = hedge_after
        self.write_grace = write_grace
        # Repair hints in flight (fire and forget: a hint is advice; the periodic scan is the net).
        self._hints: set[asyncio.Task[None]] = set()

    # ---- write ---------------------------------------------------------------------------------

    async def write_chunk(self, chunk_hash: bytes, data: bytes | bytearray | memoryview) -> int:
        """Store a chunk (``data``, 1..4 MiB, whose SHA-256 is ``chunk_hash``, 32 raw bytes).

        Every fragment of the stripe is sent to its acting-set node at once (nodes marked DOWN are
        tried too and fail fast). Returns the number of fragments acknowledged durable (12..14 by
        default). Waits for every attempt to settle, or at most ``write_grace`` seconds after the
        quorum, and cancels what is left; no task outlives the call. The hash is not re-checked
        here: the caller computed it from these bytes.

        Raises:
            InsufficientFragments: fewer than ``write_quorum`` fragments became durable (retryable).
            ValueError: malformed hash or empty/oversized chunk.
        """
        if len(chunk_hash) != CHUNK_HASH_BYTES:
            raise ValueError(f"chunk hash must be {CHUNK_HASH_BYTES} bytes, got {len(chunk_hash)}")
        chunk_size = len(memoryview(data).cast("B"))
        fragments = await self._coder.encode(data)
        return await self._write_stripe(chunk_hash, chunk_size, fragments)

    async def write_chunks(self, chunks: Sequence[ChunkToWrite]) -> list[int]:
        """Store several chunks together: all are encoded, then every fragment of every stripe is
        sent at once, so each node receives its fragments of all the stripes as one batch (one
        message, one group commit) instead of one per stripe. Each stripe must reach the quorum
        on its own, as in ``write_chunk``. Returns the durable fragment count per chunk, in order.
        Every chunk is encoded and every stripe write settles before this returns or raises. Each
        chunk's buffer, when it has one, stays owned by the caller (release it afterwards).

        Raises:
            InsufficientFragments: a stripe missed the quorum (the first such error, after all
                stripes settled; retryable).
            ValueError: malformed hash or empty/oversized chunk.
        """
        for chunk in chunks:
            if len(chunk.chunk_hash) != CHUNK_HASH_BYTES:
                raise ValueError(f"chunk hash must be {CHUNK_HASH_BYTES} bytes, got {len(chunk.chunk_hash)}")
        encoded = await _settle([self._encode(chunk) for chunk in chunks])
        # All stripe writes start in this loop step, so their puts to one node queue together.
        written = await _settle([
            self._write_stripe(chunk.chunk_hash, chunk.size, fragments)
            for chunk, fragments in zip(chunks, encoded, strict=True)
        ])
        return list(written)

    async def _encode(self, chunk: ChunkToWrite) -> Sequence[bytes | memoryview]:
        if chunk.buffer is not None:
            return await self._coder.encode_buffer(chunk.buffer, chunk.size)
        return await self._coder.encode(chunk.data)

    async def _write_stripe(
        self, chunk_hash: bytes, chunk_size: int, fragments: Sequence[bytes | memoryview]
    ) -> int:
        cluster_map = self._cluster_map()
        pg = placement_group(chunk_hash, cluster_map.pg_count)
        targets = self._targets(cluster_map, pg)
        tasks = {
            asyncio.create_task(
                self._put(
                    target,
                    chunk_hash=chunk_hash,
                    pg=pg,
                    fragment=fragments[target.index],
                    chunk_size=chunk_size,
                    epoch=cluster_map.epoch,
                )
            ): target
            for target in targets
        }
        durable: set[int] = set()
        failed: dict[int, str] = {}
        pending: set[asyncio.Task[None]] = set(tasks)
        try:
            deadline: float | None = None
            loop = asyncio.get_running_loop()
            while pending:
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                done, pending = await asyncio.wait(
                    pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    break  # grace after the quorum is over
                for task in done:
                    index = tasks[task].index
                    error = task.exception()
                    if error is None:
                        durable.add(index)
                    else:
                        failed[index] = f"{type(error).__name__}: {error}"
                if len(failed) > STRIPE_WIDTH - self.write_quorum:
                    break  # the quorum is out of reach
                if deadline is None and len(durable) >= self.write_quorum:
                    deadline = loop.time() + self.write_grace
        finally:
            await _cancel_all(pending)
        hex_hash = chunk_hash.hex()
        for task in pending:
            failed.setdefault(tasks[task].index, "gave up after the write quorum was reached")
        if len(durable) < self.write_quorum:
            FAILED_STRIPE_WRITES.inc()
            logger.warning(
                "stripe write missed the quorum",
                extra={"fields": {"chunk": hex_hash, "pg": pg, "durable": len(durable), "failed": failed}},
            )
            raise InsufficientFragments(hex_hash, len(durable), self.write_quorum)
        STRIPES_WRITTEN.inc()
        CHUNK_BYTES_WRITTEN.inc(chunk_size)
        if len(durable) < STRIPE_WIDTH:
            missing = sorted(set(range(STRIPE_WIDTH)) - durable)
            STRIPES_WRITTEN_DEGRADED.inc()
            MISSING_FRAGMENTS.inc(len(missing))
            logger.warning(
                "stripe written without all fragments; repair must complete it",
                extra={
                    "fields": {
                        "chunk": hex_hash,
                        "pg": pg,
                        "epoch": cluster_map.epoch,
                        "missing": ",".join(f"{i}@{targets[i].node_id}" for i in missing),
                        "reasons": "; ".join(failed.get(i, "?") for i in missing),
                    }
                },
            )
            # Nodes that are up but missed their fragment (slow, briefly unreachable) rebuild it
            # now rather than at their next periodic scan; a DOWN node's positions are repaired
            # once it is OUT and the new epoch hints its new holders.
            for index in missing:
                if not targets[index].down:
                    self._hint_repair(targets[index], pg)
        return len(durable)

    def _hint_repair(self, target: _Target, pg: int) -> None:
        async def send() -> None:
            try:
                await self._nodes.client(target.node_id, target.address).hint_repair([pg])
            except StorageError as exc:
                logger.info("repair hint not delivered", extra={"fields": {
                    "node": target.node_id, "pg": pg, "error": str(exc)}})

        REPAIR_HINTS.inc()
        task = asyncio.create_task(send())
        self._hints.add(task)
        task.add_done_callback(self._hints.discard)

    async def _put(
        self,
        target: _Target,
        *,
        chunk_hash: bytes,
        pg: int,
        fragment: bytes | memoryview,
        chunk_size: int,
        epoch: int,
    ) -> None:
        client = self._nodes.client(target.node_id, target.address)
        await client.put_fragment(chunk_hash, target.index, pg, fragment, chunk_size, epoch)

    # ---- read ----------------------------------------------------------------------------------

    def try_chunk_buffer(self) -> ChunkBuffer | None:
        """A buffer to assemble a chunk in (``ChunkToWrite.buffer`` for ``write_chunks``), or None when
        none is free."""
        return self._coder.try_chunk_buffer()

    async def read_chunk(
        self, chunk_hash: bytes, chunk_size: int, start: int = 0, end: int | None = None
    ) -> bytes:
        """Return bytes ``[start, end)`` of the chunk ``chunk_hash``: ``read_chunk_pieces`` joined
        into one ``bytes`` (one copy). Same arguments and errors as ``read_chunk_pieces``."""
        pieces = await self.read_chunk_pieces(chunk_hash, chunk_size, start, end)
        return bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)

    async def read_chunk_pieces(
        self, chunk_hash: bytes, chunk_size: int, start: int = 0, end: int | None = None
    ) -> list[memoryview]:
        """Bytes ``[start, end)`` of the chunk ``chunk_hash`` (32 raw bytes) of ``chunk_size`` bytes,
        as read-only views that concatenate to them (on the healthy path one per data fragment, views
        of the received messages: nothing is copied; an empty range gives ``[]``).

        ``end`` defaults to ``chunk_size``. A whole-chunk read is verified against the SHA-256
        (over the pieces, in a thread) before it is returned; partial reads rely on the fragments'
        end-to-end CRC32C. Healthy reads touch only the covering data fragments;
        otherwise the chunk is decoded from any 10 fragments and its SHA-256 verified.

        Raises:
            ChunkUnavailable: fewer than 10 good fragments could be read (retryable).
            ChunkCorrupt: no combination of the fragments read rebuilds the chunk's hash (retryable).
            ValueError: malformed hash, size or range.
        """
        if len(chunk_hash) != CHUNK_HASH_BYTES:
            raise ValueError(f"chunk hash must be {CHUNK_HASH_BYTES} bytes, got {len(chunk_hash)}")
        end = chunk_size if end is None else end
        ranges = data_fragment_payload_range(chunk_size, start, end)  # validates the range
        if not ranges:
            return []
        read = _StripeRead(self, chunk_hash, chunk_size)
        try:
            pieces = await read.fast_path(ranges, whole=(start == 0 and end == chunk_size))
            if pieces is None:
                DEGRADED_READS.inc()
                chunk = await read.decode_path()
                pieces = [memoryview(chunk).toreadonly()[start:end]]
        finally:
            await read.close()
        CHUNK_BYTES_READ.inc(end - start)
        return pieces

    def _targets(self, cluster_map: ClusterMap, pg: int) -> list[_Target]:
        acting = cluster_map.acting_set(pg)
        return [
            _Target(index, node_id, cluster_map.nodes[node_id].address,
                    down=cluster_map.nodes[node_id].state != NodeState.UP)
            for index, node_id in enumerate(acting)
        ]


class _StripeRead:
    """The fragment fetches of one chunk read; ``close()`` cancels and awaits whatever is left."""

    def __init__(self, store: ChunkStore, chunk_hash: bytes, chunk_size: int) -> None:
        self.store = store
        self.chunk_hash = chunk_hash
        self.hex_hash = chunk_hash.hex()
        self.chunk_size = chunk_size
        self.fragment_length = fragment_bytes(chunk_size)
        cluster_map = store._cluster_map()
        self.pg = placement_group(chunk_hash, cluster_map.pg_count)
        self.targets = store._targets(cluster_map, self.pg)
        self.tasks: dict[int, asyncio.Task[memoryview]] = {}
        # Fragments as views of the received messages (no copy); decode converts to bytes.
        self.good: dict[int, memoryview] = {}
        self.failed: dict[int, str] = {}
        # Fragment combinations already known to rebuild a wrong chunk.
        self.tried: set[frozenset[int]] = set()

    def _fetch(self, indexes: Iterable[int]) -> None:
        for index in indexes:
            if index not in self.tasks:
                self.tasks[index] = asyncio.create_task(self._get(self.targets[index]))

    async def _get(self, target: _Target) -> memoryview:
        client = self.store._nodes.client(target.node_id, target.address)
        fragment = await client.get_fragment_view(self.chunk_hash, target.index, self.pg)
        if len(fragment) != self.fragment_length:
            raise FragmentCorrupt(f"fragment is {len(fragment)} bytes, expected {self.fragment_length}")
        return fragment

    def _collect(self, task: asyncio.Task[memoryview]) -> None:
        index = next(i for i, t in self.tasks.items() if t is task)
        if index in self.good or index in self.failed:
            return
        error = task.exception()
        if error is None:
            self.good[index] = task.result()
            return
        self.failed[index] = f"{type(error).__name__}: {error}"
        target = self.targets[index]
        if isinstance(error, FragmentCorrupt):
            CORRUPT_FRAGMENTS.inc()
            logger.error(
                "corrupt fragment",
                extra={
                    "fields": {
                        "chunk": self.hex_hash,
                        "pg": self.pg,
                        "index": index,
                        "node": target.node_id,
                        "error": str(error),
                    }
                },
            )
        elif not isinstance(error, StorageError):
            logger.error(
                "unexpected error reading a fragment",
                exc_info=error,
                extra={"fields": {"chunk": self.hex_hash, "index": index, "node": target.node_id}},
            )
        else:
            logger.info(
                "fragment read failed",
                extra={
                    "fields": {
                        "chunk": self.hex_hash,
                        "index": index,
                        "node": target.node_id,
                        "error": self.failed[index],
                    }
                },
            )

    async def fast_path(self, ranges: list[tuple[int, int, int]], *, whole: bool) -> list[memoryview] | None:
        """Slice the covering data fragments; None when any failed or was slower than ``hedge_after``."""
        indexes = [index for index, _, _ in ranges]
        if any(self.targets[i].down for i in indexes):
            return None  # straight to the other fragments: no timeout spent on a node known down
        self._fetch(indexes)
        wanted = [self.tasks[i] for i in indexes]
        # A fragment that fails fast sends us to the other fragments at once, not after the hedge.
        done, pending = await asyncio.wait(wanted, timeout=self.store.hedge_after,
                                           return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            self._collect(task)
        if pending or any(i in self.failed for i in indexes):
            return None
        header = fragment_header_bytes()
        # No copy: views of the payloads, hashed piece by piece when the chunk is whole.
        pieces = [
            self.good[index][header + payload_start : header + payload_end]
            for index, payload_start, payload_end in ranges
        ]
        if whole and not await _hash_matches(pieces, self.chunk_hash):
            CHUNK_HASH_MISMATCHES.inc()
            logger.error(
                "data fragments assemble to a wrong chunk hash", extra={"fields": {"chunk": self.hex_hash}}
            )
            self.tried.add(frozenset(indexes))
            return None
        return pieces

    async def decode_path(self) -> bytes:
        """Fetch every fragment not yet asked for (nodes marked DOWN last), decode from 10 good ones,
        verify the SHA-256."""
        self._fetch(i for i in range(STRIPE_WIDTH) if not self.targets[i].down)
        tried: set[frozenset[int]] = set(self.tried)
        attempts = 0
        while True:
            outstanding = [t for i, t in self.tasks.items() if i not in self.good and i not in self.failed]
            if not outstanding and len(self.tasks) < STRIPE_WIDTH and \
                    (len(self.good) < DATA_FRAGMENTS or next_combination(self.good, tried) is None):
                # The map may be stale: try the nodes it calls DOWN before giving up.
                self._fetch(range(STRIPE_WIDTH))
                continue
            if len(self.good) < DATA_FRAGMENTS and outstanding:
                done, _ = await asyncio.wait(outstanding, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    self._collect(task)
                continue
            if len(self.good) < DATA_FRAGMENTS:
                raise ChunkUnavailable(self.hex_hash, len(self.good), DATA_FRAGMENTS)
            combination = next_combination(self.good, tried)
            if combination is None:
                if outstanding:
                    # Every combination of what we have is bad: wait for one more fragment.
                    done, _ = await asyncio.wait(outstanding, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        self._collect(task)
                    continue
                raise ChunkCorrupt(self.hex_hash, f"{attempts} fragment combinations tried")
            tried.add(combination)
            attempts += 1
            chunk = await self._decode(combination)
            if chunk is not None:
                return chunk
            if attempts >= MAX_DECODE_ATTEMPTS:
                raise ChunkCorrupt(self.hex_hash, f"{attempts} fragment combinations tried")
            # Wait for every outstanding fragment so that the next combinations can avoid the bad one.
            if outstanding:
                done, _ = await asyncio.wait(outstanding)
                for task in done:
                    self._collect(task)

    async def _decode(self, combination: frozenset[int]) -> bytes | None:
        # pyeclib aborts the process on non-bytes fragments: copy the views into bytes here.
        fragments = {index: bytes(self.good[index]) for index in sorted(combination)}
        try:
            chunk = await self.store._coder.decode(fragments, self.chunk_size)
        except ValueError as error:
            logger.error(
                "decode refused fragments", extra={"fields": {"chunk": self.hex_hash, "error": str(error)}}
            )
            return None
        except Exception as error:  # pyeclib's ECDriverError and its subclasses
            logger.error("decode failed", extra={"fields": {"chunk": self.hex_hash, "error": repr(error)}})
            return None
        if await _hash_matches([chunk], self.chunk_hash):
            return chunk
        CHUNK_HASH_MISMATCHES.inc()
        logger.error(
            "decoded chunk has the wrong hash; trying another fragment combination",
            extra={"fields": {"chunk": self.hex_hash, "fragments": ",".join(map(str, sorted(combination)))}},
        )
        return None

    async def close(self) -> None:
        await _cancel_all(t for t in self.tasks.values() if not t.done())
        for task in self.tasks.values():
            if not task.cancelled():
                task.exception()  # mark retrieved: no "exception was never retrieved" noise


def _sha256(pieces: Iterable[bytes | memoryview]) -> bytes:
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    return digest.digest()


async def _hash_matches(pieces: list[bytes] | list[memoryview], chunk_hash: bytes) -> bool:
    """Whether the concatenated ``pieces`` hash to ``chunk_hash`` (SHA-256, in a thread: hashlib
    releases the GIL, the event loop stays free)."""
    return await asyncio.to_thread(_sha256, pieces) == chunk_hash


async def _settle(coroutines: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run ``coroutines`` concurrently until every one has finished; return their results in order
    or raise the first error (in order) once all are done, so no work outlives the caller. If the
    caller is cancelled, the ones still running are cancelled and awaited first."""
    tasks = [asyncio.create_task(coroutine) for coroutine in coroutines]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks)
    except BaseException:
        await _cancel_all(set(tasks))
        raise
    for task in tasks:
        error = task.exception()
        if error is not None:
            raise error
    return [task.result() for task in tasks]


async def _cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has finished (no orphans)."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
