"""Garbage collection: delete the fragments of chunks no object or part references, and orphans.

Runs as a background task of the frontend process (``frontend/app.py``); its state lives in the
metadata store, so a restarted frontend resumes where it stopped. Source: issue 3 plan, section 5
(docs/architecture.md); the PUT-vs-collection protocol and why it is race-free are in
``metadata/store.py``'s docstring. In short:

``collect_once``: mark (one transaction: expired pins dropped, unreferenced unpinned chunks older
than the grace set DELETING), then per placement group list the fragments on every UP node of the
acting set and every UP former holder, and delete the marked chunks' fragments. Each delete is
conditional (``written_before_ms``): it removes only a record written before the chunk's mark time
AND no newer than the version listed (``min(mark_ms, written_at_ms + 1)``), so a late delete can
never remove a fragment a writer stored after the row was finished, whatever the clocks say. The
row is removed (``finish_collection``) once every UP holder listed and deleted without error; a
DOWN holder's leftovers have no row afterwards and fall to the orphan sweep. A failing UP node
leaves the chunk DELETING; the next pass resumes it (writes of that content wait, then get 503).

``sweep_orphans_once``: per placement group, list every UP node, then ask the metadata store which
of the listed chunks it records (in any state); fragments of unrecorded chunks written before
``now - orphan_grace`` (or with no write time) are deleted, conditional on the listed version
(``written_at_ms + 1``). Listing before asking is what makes it safe: a writer pins (creating the
row) before writing, so a fragment the store did not know at the check was either stored before
the listing (an orphan, or an older copy a new writer re-writes with a newer version, which the
conditional delete keeps) or is newer than the listed version.

Every SQLite call runs in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from metadata.records import ZeroRefcountChunk
from metadata.store import MetadataStore
from placement.cluster_map import ClusterMap, Node, NodeState
from storagenode.client import StorageNodePool
from storagenode.errors import StorageError
from storagenode.records import FragmentEntry

log = logging.getLogger("frontend.gc")

CHUNKS_COLLECTED = Counter("coffer_gc_chunks_collected_total",
                           "Chunks whose fragments were deleted and whose metadata row was removed")
FRAGMENTS_DELETED = Counter("coffer_gc_fragments_deleted_total",
                            "Fragments of collected chunks deleted from storage nodes")
ORPHAN_FRAGMENTS_DELETED = Counter("coffer_gc_orphan_fragments_deleted_total",
                                   "Fragments without a chunk record deleted by the orphan sweep")
CHUNKS_PENDING = Gauge("coffer_gc_chunks_pending",
                       "Chunks no object or part references, awaiting collection (any state)")
LAST_RUN = Gauge("coffer_gc_last_run_timestamp_seconds", "When the last collection pass ended (Unix seconds)")

#: Placement groups (collection) or (node, placement group) listings (sweep) worked on at once.
DEFAULT_CONCURRENCY = 8


@dataclass(frozen=True)
class CollectReport:
    """One ``collect_once`` pass: ``marked`` chunks newly marked, ``resumed`` chunks found already
    DELETING (an earlier pass did not finish them), ``collected`` rows removed, ``fragments_deleted``
    on the nodes, ``unfinished`` chunks left DELETING because an UP node failed (retried next pass)."""

    marked: int
    resumed: int
    collected: int
    fragments_deleted: int
    unfinished: int


@dataclass(frozen=True)
class SweepReport:
    """One ``sweep_orphans_once`` pass: ``fragments_listed`` over all UP nodes, ``orphans_deleted``,
    ``listings_failed`` (node, placement group) listings that failed (their orphans wait)."""

    fragments_listed: int
    orphans_deleted: int
    listings_failed: int


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class GarbageCollector:
    """Collects unreferenced chunks and orphan fragments (module docstring for the algorithm).

    ``metadata``: the store (blocking; called in threads). ``cluster_map``: returns the current map
    (may raise, e.g. ClusterMapUnavailable: the pass is skipped). ``nodes``: clients of the storage
    nodes. Times in seconds: ``grace_seconds`` a chunk stays unreferenced before collection;
    ``interval_seconds`` between passes; ``orphan_grace_seconds`` minimum age of an orphan fragment;
    ``orphan_sweep_interval_seconds`` between sweeps; ``pin_ttl_seconds`` age after which a
    writer's pin is dropped. ``batch_chunks``: chunks marked per pass at most (a full batch makes
    ``run`` go again at once). ``concurrency``: placement groups worked on at once.
    """

    def __init__(
        self,
        metadata: MetadataStore,
        cluster_map: Callable[[], ClusterMap],
        nodes: StorageNodePool,
        *,
        grace_seconds: float,
        interval_seconds: float,
        orphan_grace_seconds: float,
        orphan_sweep_interval_seconds: float,
        pin_ttl_seconds: float = 86400.0,
        batch_chunks: int = 1000,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        if min(grace_seconds, interval_seconds, orphan_grace_seconds, orphan_sweep_interval_seconds,
               pin_ttl_seconds) < 0 or batch_chunks <= 0 or concurrency <= 0:
            raise ValueError("garbage collector times must be >= 0, batch_chunks and concurrency > 0")
        self.metadata = metadata
        self.cluster_map = cluster_map
        self.nodes = nodes
        self.grace_seconds = grace_seconds
        self.interval_seconds = interval_seconds
        self.orphan_grace_seconds = orphan_grace_seconds
        self.orphan_sweep_interval_seconds = orphan_sweep_interval_seconds
        self.pin_ttl_seconds = pin_ttl_seconds
        self.batch_chunks = batch_chunks
        self.concurrency = concurrency

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Collect every ``interval_seconds`` (at once again while a pass marks a full batch) and
        sweep orphans every ``orphan_sweep_interval_seconds`` (the first sweep one interval after
        start), until cancelled. A failed pass is logged and retried at the next interval."""
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self.orphan_sweep_interval_seconds
        while True:
            again = False
            try:
                report = await self.collect_once()
                again = report.marked >= self.batch_chunks and report.unfinished == 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("garbage collection pass failed", extra={"fields": {"error": repr(exc)}})
            if loop.time() >= next_sweep:
                next_sweep = loop.time() + self.orphan_sweep_interval_seconds
                try:
                    await self.sweep_orphans_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("orphan sweep failed", extra={"fields": {"error": repr(exc)}})
            if not again:
                await asyncio.sleep(self.interval_seconds)

    # -- collection -------------------------------------------------------------------------------

    async def collect_once(self) -> CollectReport:
        """One pass: resume chunks already DELETING, mark new ones, delete their fragments on every
        UP holder, remove the rows of those fully deleted.

        Raises: whatever ``cluster_map()`` raises (nothing is marked then); metadata errors.
        Node failures do not raise: the chunks concerned stay DELETING for the next pass.
        """
        cluster_map = self.cluster_map()  # before marking: a pass that cannot delete marks nothing
        resumed = await asyncio.to_thread(self.metadata.chunks_being_collected, self.batch_chunks)
        now = time.time()
        marked = await asyncio.to_thread(
            self.metadata.mark_chunks_for_collection, now - self.grace_seconds, now - self.pin_ttl_seconds,
            self.batch_chunks)
        chunks = {chunk.hash: chunk for chunk in resumed}
        chunks.update((chunk.hash, chunk) for chunk in marked)
        by_pg: dict[int, list[ZeroRefcountChunk]] = {}
        for chunk in chunks.values():
            by_pg.setdefault(cluster_map.placement_group(bytes.fromhex(chunk.hash)), []).append(chunk)
        limit = asyncio.Semaphore(self.concurrency)
        outcomes = await asyncio.gather(
            *(self._collect_placement_group(cluster_map, pg, group, limit) for pg, group in by_pg.items()))
        collected = sum(done for done, _deleted in outcomes)
        deleted = sum(deleted for _done, deleted in outcomes)
        counts = await asyncio.to_thread(self.metadata.gc_counts)
        CHUNKS_PENDING.set(counts.zero_refcount)
        LAST_RUN.set(time.time())
        report = CollectReport(marked=len(marked), resumed=len(resumed), collected=collected,
                               fragments_deleted=deleted, unfinished=len(chunks) - collected)
        if chunks:
            log.info("garbage collection pass", extra={"fields": {
                "marked": report.marked, "resumed": report.resumed, "collected": report.collected,
                "fragments_deleted": report.fragments_deleted, "unfinished": report.unfinished,
                "pending": counts.zero_refcount}})
        return report

    async def _collect_placement_group(
        self, cluster_map: ClusterMap, pg: int, chunks: Sequence[ZeroRefcountChunk], limit: asyncio.Semaphore
    ) -> tuple[int, int]:
        """Delete ``chunks``' fragments of ``pg`` on its UP holders; finish those fully deleted.
        Returns (rows removed, fragments deleted)."""
        now_ms = _ms(time.time())
        mark_ms = {bytes.fromhex(chunk.hash): _ms(chunk.marked_at) if chunk.marked_at else now_ms
                   for chunk in chunks}
        failed: set[bytes] = set()
        deleted = 0
        holders = dict.fromkeys([*cluster_map.acting_set(pg), *(node for node, _ in cluster_map.former_positions[pg])])

        async def on_node(node_id: str) -> None:
            nonlocal deleted
            node = cluster_map.nodes.get(node_id)
            if node is None or node.state != NodeState.UP:
                return  # DOWN or OUT: what it holds becomes an orphan once the row is gone
            client = self.nodes.client(node_id, node.address)
            try:
                entries = await client.list_fragments(pg)
            except StorageError as exc:
                failed.update(mark_ms)
                log.warning("garbage collection could not list", extra={"fields": {
                    "node": node_id, "pg": pg, "error": repr(exc)}})
                return
            targets = [entry for entry in entries if entry.chunk_hash in mark_ms]
            # Sent together: the client batches what queues on a node's write lane.
            outcomes = await asyncio.gather(*(
                client.delete_fragment(entry.chunk_hash, entry.index, pg,
                                       written_before_ms=min(mark_ms[entry.chunk_hash], entry.written_at_ms + 1))
                for entry in targets), return_exceptions=True)
            for entry, outcome in zip(targets, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, StorageError):
                        raise outcome
                    failed.add(entry.chunk_hash)
                    log.warning("garbage collection could not delete", extra={"fields": {
                        "node": node_id, "pg": pg, "chunk": entry.chunk_hash.hex(), "index": entry.index,
                        "error": repr(outcome)}})
                elif outcome:
                    deleted += 1

        async with limit:
            await asyncio.gather(*(on_node(node_id) for node_id in holders))
        FRAGMENTS_DELETED.inc(deleted)
        done = [chunk_hash.hex() for chunk_hash in mark_ms if chunk_hash not in failed]
        removed = await asyncio.to_thread(self.metadata.finish_collection, done) if done else 0
        CHUNKS_COLLECTED.inc(removed)
        return removed, deleted

    # -- orphans ----------------------------------------------------------------------------------

    async def sweep_orphans_once(self) -> SweepReport:
        """List every placement group on every UP node; delete fragments of chunks the metadata
        store does not record that are older than the orphan grace (module docstring).

        Raises: whatever ``cluster_map()`` raises; metadata errors. Node failures do not raise.
        """
        cluster_map = self.cluster_map()
        up = [node for node in cluster_map.nodes.values() if node.state == NodeState.UP]
        limit = asyncio.Semaphore(self.concurrency)
        outcomes = await asyncio.gather(*(
            self._sweep_placement_group(cluster_map, pg, up, limit) for pg in range(cluster_map.pg_count)))
        report = SweepReport(fragments_listed=sum(o.fragments_listed for o in outcomes),
                             orphans_deleted=sum(o.orphans_deleted for o in outcomes),
                             listings_failed=sum(o.listings_failed for o in outcomes))
        log.info("orphan sweep", extra={"fields": {
            "fragments_listed": report.fragments_listed, "orphans_deleted": report.orphans_deleted,
            "listings_failed": report.listings_failed}})
        return report

    async def _sweep_placement_group(
        self, cluster_map: ClusterMap, pg: int, nodes: Sequence[Node], limit: asyncio.Semaphore
    ) -> SweepReport:
        """Sweep ``pg`` on ``nodes`` (the UP ones)."""
        listings: dict[str, list[FragmentEntry]] = {}
        failures = 0
        async with limit:
            async def list_node(node_id: str, address: str) -> None:
                nonlocal failures
                try:
                    listings[node_id] = await self.nodes.client(node_id, address).list_fragments(pg)
                except StorageError as exc:
                    failures += 1
                    log.warning("orphan sweep could not list", extra={"fields": {
                        "node": node_id, "pg": pg, "error": repr(exc)}})

            await asyncio.gather(*(list_node(node.node_id, node.address) for node in nodes))
            cutoff_ms = _ms(time.time() - self.orphan_grace_seconds)
            listed = sum(len(entries) for entries in listings.values())
            old = {entry.chunk_hash.hex() for entries in listings.values() for entry in entries
                   if entry.written_at_ms < cutoff_ms}
            if not old:
                return SweepReport(listed, 0, failures)
            # Asked after listing: see the module docstring for why this order is safe.
            recorded = await asyncio.to_thread(self.metadata.chunks_recorded, old)
            deleted = 0
            for node_id, entries in listings.items():
                orphans = [entry for entry in entries
                           if entry.written_at_ms < cutoff_ms and entry.chunk_hash.hex() not in recorded]
                if not orphans:
                    continue
                client = self.nodes.client(node_id, cluster_map.nodes[node_id].address)
                outcomes = await asyncio.gather(*(
                    client.delete_fragment(entry.chunk_hash, entry.index, pg,
                                           written_before_ms=entry.written_at_ms + 1)
                    for entry in orphans), return_exceptions=True)
                for entry, outcome in zip(orphans, outcomes, strict=True):
                    if isinstance(outcome, BaseException):
                        if not isinstance(outcome, StorageError):
                            raise outcome
                        log.warning("orphan sweep could not delete", extra={"fields": {
                            "node": node_id, "pg": pg, "chunk": entry.chunk_hash.hex(), "index": entry.index,
                            "error": repr(outcome)}})
                    elif outcome:
                        deleted += 1
            ORPHAN_FRAGMENTS_DELETED.inc(deleted)
            return SweepReport(listed, deleted, failures)
