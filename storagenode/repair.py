"""The repair agent of one storage node: restores this node's positions of every stripe it belongs to.

Repair runs inside every storage node rather than in a central repairer: for each placement group,
each acting-set member rebuilds only its own position, so work spreads over all survivors, the node
that stores a fragment is the one that writes it, and the state is nothing but listings (a restart
loses nothing). Design: /work/helper-notes/issue3-plan.md §2-3; decisions per PG: ``repair_plan``.

A scan (``scan_once``; at start, then every ``scan_interval`` seconds give or take 20%
(``common.jitter``), and soon after a ``hint``):

1. Summarizes this node's placement groups (``FragmentEngine.summarize_by_index``: per fragment
   index a count and a digest, cached by the engine) and asks every UP node it shares a placement
   group with (acting member or former holder) for its summaries of the shared placement groups:
   one ``SummarizePlacementGroups`` call per peer (``StorageNodeClient.summarize_placement_groups``).
2. A placement group whose summaries agree (``repair_plan.needs_listing``) and that was not hinted
   is clean: nothing to repair, its health follows from the map alone (``clean_health``). Every
   other one is listed here (headers only, in the executor) and on every UP acting member and
   every UP former holder (``StorageNodeClient.list_fragments``). A clean cluster's scan thus
   costs one small call per peer and no listing.
3. Plans the listed ones (``plan_placement_group``, in the executor) and runs the tasks, fewest surviving fragments
   first, ``concurrency`` at a time: a **copy** fetches the fragment from a node that holds that very
   index (a former holder); a **rebuild** fetches 10 other fragments, decodes, checks the chunk's
   SHA-256, re-encodes (``common.erasure_code.rebuild_fragment``, in the executor; other
   combinations are tried on a mismatch) and keeps the fragment of this node's index. Either is
   stored with ``FragmentEngine.put_many`` (synced) in the executor. Bytes fetched go through a
   token bucket of ``bytes_per_second``.
4. Deletes this node's misplaced fragments (index no longer its position) whose current holder
   listed the same chunk and index with the same checksum, if the map still says so.

DOWN nodes are not repaired around (their positions stay theirs until placement makes them OUT),
but their fragments count as missing in the degraded-stripe gauges. PG-level gauges are set from
the PGs whose first UP acting member is this node, so sums over nodes are cluster totals.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TypeVar

from awscrt.checksums import crc32c
from prometheus_client import Counter, Gauge

from common.erasure_code import ChunkHashMismatch, next_combination, rebuild_fragment
from common.jitter import jittered
from common.layout import DATA_FRAGMENTS
from placement.cluster_map import ClusterMap
from storagenode.client import StorageNodePool
from storagenode.engine import FragmentEngine, FragmentWrite
from storagenode.errors import StorageError, StorageFull
from storagenode.records import FragmentEntry
from storagenode.repair_plan import (
    MISSING_BUCKETS,
    MisplacedFragment,
    PlacementGroupPlan,
    PositionSummaries,
    RepairTask,
    clean_health,
    listing_targets,
    needs_listing,
    plan_placement_group,
    primary_of,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Decode attempts (fragment combinations) per rebuild before giving up on a stripe this scan.
MAX_DECODE_ATTEMPTS = 4
#: Remote listings (and summary calls) in flight at once during a scan.
LISTING_CONCURRENCY = 8
#: Window over which the observed repair rate is averaged, seconds.
RATE_WINDOW_SECONDS = 30.0

DEGRADED_STRIPES = Gauge(
    "coffer_repair_degraded_stripes",
    "Stripes missing this many fragments (DOWN nodes count as missing), over the placement groups this node "
    "is the first UP acting member of",
    ["missing"],
)
REPAIRED_FRAGMENTS = Counter(
    "coffer_repair_fragments", "Fragments this node repaired, by how: copied from a former holder or rebuilt",
    ["method"],
)
REPAIRED_BYTES = Counter("coffer_repair_bytes", "Fragment bytes this node stored by repair")
FETCHED_BYTES = Counter("coffer_repair_fetched_bytes", "Fragment bytes repair fetched (rate-limited)")
REPAIR_FAILURES = Counter(
    "coffer_repair_failures", "Repair tasks that failed this scan (retried next scan), by reason", ["reason"]
)
REPAIR_RATE = Gauge("coffer_repair_rate_bytes_per_second", "Bytes repair fetched per second, last 30 s")
PENDING_FRAGMENTS = Gauge("coffer_repair_pending_fragments", "Repair tasks of this node not yet done")
PENDING_BYTES = Gauge("coffer_repair_pending_bytes", "Bytes the pending repair tasks of this node will fetch")
TIME_TO_FULL_REDUNDANCY = Gauge(
    "coffer_repair_time_to_full_redundancy_seconds",
    "Pending bytes / observed repair rate (or / the rate limit when idle), seconds",
)
SCANS = Counter("coffer_repair_scans", "Repair scans completed")
LISTED_PLACEMENT_GROUPS = Counter(
    "coffer_repair_listed_placement_groups",
    "Placement groups repair scans listed in full (the others were clean by their summaries)",
)
MISPLACED_FRAGMENTS = Gauge(
    "coffer_repair_misplaced_fragments", "Fragments this node holds at an index that is no longer its position"
)
MISPLACED_DELETED = Counter(
    "coffer_repair_misplaced_deleted", "Misplaced fragments deleted after their current holder confirmed a copy"
)
UNRECOVERABLE_STRIPES = Gauge(
    "coffer_repair_unrecoverable_stripes",
    "Stripes with fewer than 10 fragments anywhere, over the placement groups this node is the first UP "
    "acting member of (usually leftovers of failed writes that garbage collection removes)",
)


@dataclass
class RepairReport:
    """What one ``scan_once`` found and did.

    ``placement_groups`` scanned, ``listed`` of them in full (the rest clean by their
    summaries); ``tasks`` planned for this node; ``copied`` / ``rebuilt``
    fragments stored; ``failed`` tasks (retried next scan); ``bytes_fetched`` / ``bytes_written``;
    ``unrecoverable`` stripes and ``degraded`` stripes per missing-count label (only PGs this node
    is primary of); ``misplaced`` fragments held here, ``misplaced_deleted`` of them deleted.
    """

    placement_groups: int = 0
    listed: int = 0
    tasks: int = 0
    copied: int = 0
    rebuilt: int = 0
    failed: int = 0
    bytes_fetched: int = 0
    bytes_written: int = 0
    unrecoverable: int = 0
    degraded: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MISSING_BUCKETS, 0))
    misplaced: int = 0
    misplaced_deleted: int = 0


class TokenBucket:
    """Token bucket of ``rate`` tokens (bytes) per second holding at most ``rate`` (one second's worth).

    ``acquire(amount)`` waits until the bucket holds ``min(amount, capacity)`` tokens and then takes
    ``amount``, going into debt for amounts above the capacity, so the long-run rate is ``rate``
    whatever the request sizes (Turner's token bucket, as in RFC 2697's committed burst).

    Raises:
        ValueError: ``rate`` is not positive.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = float(rate)
        self._clock = clock
        self._tokens = self.rate
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, amount: float) -> None:
        """Take ``amount`` tokens, sleeping first as long as the bucket is short of them."""
        while True:
            self._refill()
            needed = min(amount, self.rate)
            if self._tokens >= needed:
                self._tokens -= amount
                return
            await asyncio.sleep((needed - self._tokens) / self.rate)


class _RateMeter:
    """Bytes per second over the last ``window`` seconds (or since start, when younger)."""

    def __init__(self, window: float = RATE_WINDOW_SECONDS) -> None:
        self._window = window
        self._started = time.monotonic()
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, amount: int) -> None:
        self._samples.append((time.monotonic(), amount))

    def rate(self) -> float:
        now = time.monotonic()
        while self._samples and self._samples[0][0] < now - self._window:
            self._samples.popleft()
        span = max(1.0, min(self._window, now - self._started))
        return sum(amount for _, amount in self._samples) / span


class _TaskFailed(Exception):
    """A repair task could not be done this scan; ``reason`` labels ``coffer_repair_failures_total``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RepairAgent:
    """Keeps this node's positions of every stripe it belongs to whole (module docstring).

    ``node_id``: this node's id in the cluster map. ``engine``: its fragment store; every engine
    call and every CPU-heavy step runs in ``executor`` (threads). ``cluster_map()`` returns the
    node's current map, or None before it has one (the scan then does nothing). ``peers`` supplies
    clients of other nodes. ``bytes_per_second`` limits bytes fetched; ``scan_interval`` is the
    mean time between scans, seconds (each wait is jittered by up to 20%). ``concurrency`` tasks
    run at once. Use from one event loop.

    Raises:
        ValueError: ``bytes_per_second`` or ``scan_interval`` not positive, ``concurrency`` < 1.
    """

    def __init__(
        self,
        node_id: str,
        engine: FragmentEngine,
        executor: Executor,
        cluster_map: Callable[[], ClusterMap | None],
        peers: StorageNodePool,
        *,
        bytes_per_second: float,
        scan_interval: float,
        concurrency: int = 2,
    ) -> None:
        if scan_interval <= 0 or concurrency < 1:
            raise ValueError("scan_interval must be positive and concurrency at least 1")
        self.node_id = node_id
        self._engine = engine
        self._executor = executor
        self._cluster_map = cluster_map
        self._peers = peers
        self._limiter = TokenBucket(bytes_per_second)
        self._scan_interval = scan_interval
        self._concurrency = concurrency
        self._meter = _RateMeter()
        self._wake = asyncio.Event()
        self._hinted: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self._scan_lock = asyncio.Lock()
        self._pending_bytes = 0
        self._pending_fragments = 0

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start scanning in the background: at once, then every ``scan_interval`` s (jittered by
        ``common.jitter.jittered``) or on a hint."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"repair-{self.node_id}")

    async def stop(self) -> None:
        """Stop the background scans (a scan in progress is cancelled; what it stored stays). Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def hint(self, pg: int) -> None:
        """Ask for a scan soon: placement group ``pg`` probably lacks a fragment (e.g. a degraded write)."""
        self._hinted.add(pg)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.scan_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("repair scan failed", extra={"fields": {"node": self.node_id}})
            with contextlib.suppress(TimeoutError):
                # Jittered: the nodes of a cluster start together and would otherwise all scan
                # (and summon each other's summaries) at the same moment, every interval.
                async with asyncio.timeout(jittered(self._scan_interval)):
                    await self._wake.wait()
            self._wake.clear()

    # -- one scan -----------------------------------------------------------------------------------

    async def scan_once(self) -> RepairReport:
        """Run one full scan (module docstring) and return what it did. Scans do not overlap.

        Unreachable peers, failed fetches and failed stores only fail the tasks concerned (retried
        next scan). Raises ``StorageError`` if the local engine cannot be listed (e.g. closed).
        """
        async with self._scan_lock:
            hinted, self._hinted = self._hinted, set()  # hints arriving during the scan wait for the next
            report = RepairReport()
            cluster_map = self._cluster_map()
            if cluster_map is None:
                return report
            own = await self._in_executor(self._engine.summarize_by_index, None)
            pgs = [
                pg for pg in range(cluster_map.pg_count)
                if self.node_id in cluster_map.acting_set(pg) or own.get(pg)
            ]
            peer_summaries = await self._peer_summaries(cluster_map, pgs)
            dirty, plans = await self._in_executor(
                _triage, cluster_map, self.node_id, pgs, own, peer_summaries, hinted)
            plans.extend(await self._plan(cluster_map, dirty))
            report.listed = len(dirty)
            LISTED_PLACEMENT_GROUPS.inc(len(dirty))
            report.placement_groups = len(plans)
            tasks: list[RepairTask] = []
            misplaced: list[MisplacedFragment] = []
            for pg, plan in plans:
                tasks.extend(plan.tasks)
                misplaced.extend(plan.misplaced)
                if primary_of(cluster_map, pg) == self.node_id:
                    report.unrecoverable += plan.health.unrecoverable
                    for label, count in plan.health.degraded_buckets().items():
                        report.degraded[label] += count
            tasks.sort(key=RepairTask.priority)
            report.tasks = len(tasks)
            report.misplaced = len(misplaced)
            for label, count in report.degraded.items():
                DEGRADED_STRIPES.labels(missing=label).set(count)
            UNRECOVERABLE_STRIPES.set(report.unrecoverable)
            MISPLACED_FRAGMENTS.set(report.misplaced)
            self._pending_fragments = len(tasks)
            self._pending_bytes = sum(task.fetch_bytes for task in tasks)
            self._publish_progress()
            await self._run_tasks(tasks, report)
            report.misplaced_deleted = await self._delete_misplaced(misplaced)
            MISPLACED_FRAGMENTS.set(report.misplaced - report.misplaced_deleted)
            self._publish_progress()
            SCANS.inc()
            logger.info("repair scan done", extra={"fields": {"node": self.node_id, **dataclasses.asdict(report)}})
            return report

    async def _peer_summaries(
        self, cluster_map: ClusterMap, pgs: Sequence[int]
    ) -> dict[str, dict[int, dict[int, tuple[int, bytes]]] | None]:
        """Summaries of ``pgs`` from every other node of their ``listing_targets``: one call per
        peer, asking only for the placement groups shared with it. None for a peer that failed."""
        wanted: dict[str, list[int]] = {}
        for pg in pgs:
            for node_id in listing_targets(cluster_map, pg):
                if node_id != self.node_id:
                    wanted.setdefault(node_id, []).append(pg)
        gate = asyncio.Semaphore(LISTING_CONCURRENCY)

        async def summarize(node_id: str, shared: list[int]) -> dict[int, dict[int, tuple[int, bytes]]] | None:
            address = cluster_map.nodes[node_id].address
            async with gate:
                try:
                    return await self._peers.client(node_id, address).summarize_placement_groups(shared)
                except StorageError as error:
                    logger.warning("repair could not summarize a peer", extra={"fields": {
                        "node": self.node_id, "peer": node_id, "error": str(error)}})
                    return None

        results = await asyncio.gather(*(summarize(node_id, shared) for node_id, shared in wanted.items()))
        return dict(zip(wanted, results, strict=True))

    async def _plan(self, cluster_map: ClusterMap, pgs: Sequence[int]) -> list[tuple[int, PlacementGroupPlan]]:
        """List ``pgs`` here, on their UP members and former holders and plan each (listing and
        planning in the executor)."""
        gate = asyncio.Semaphore(LISTING_CONCURRENCY)

        async def listing(node_id: str, pg: int) -> list[FragmentEntry] | None:
            address = cluster_map.nodes[node_id].address
            async with gate:
                try:
                    return await self._peers.client(node_id, address).list_fragments(pg)
                except StorageError as error:
                    logger.warning("repair could not list a peer", extra={"fields": {
                        "node": self.node_id, "peer": node_id, "pg": pg, "error": str(error)}})
                    return None

        async def plan_one(pg: int) -> tuple[int, PlacementGroupPlan]:
            peers = [node_id for node_id in listing_targets(cluster_map, pg) if node_id != self.node_id]
            local, *results = await asyncio.gather(
                self._in_executor(_list_local, self._engine, pg), *(listing(node_id, pg) for node_id in peers))
            listings: dict[str, Sequence[FragmentEntry] | None] = dict(zip(peers, results, strict=True))
            listings[self.node_id] = local
            plan = await self._in_executor(plan_placement_group, pg, cluster_map, self.node_id, listings)
            return pg, plan

        return list(await asyncio.gather(*(plan_one(pg) for pg in pgs)))

    # -- tasks --------------------------------------------------------------------------------------

    async def _run_tasks(self, tasks: list[RepairTask], report: RepairReport) -> None:
        queue = collections.deque(tasks)  # already in priority order

        async def worker() -> None:
            while queue:
                task = queue.popleft()
                try:
                    await self._repair(task, report)
                    # Failed tasks stay pending: the next scan plans them again.
                    self._pending_fragments -= 1
                    self._pending_bytes -= task.fetch_bytes
                except _TaskFailed as failure:
                    report.failed += 1
                    REPAIR_FAILURES.labels(reason=failure.reason).inc()
                    logger.warning("repair task failed", extra={"fields": {
                        "node": self.node_id, "pg": task.pg, "chunk": task.chunk_hash.hex(), "index": task.index,
                        "reason": failure.reason, "error": str(failure)}})
                finally:
                    self._publish_progress()

        await asyncio.gather(*(worker() for _ in range(self._concurrency)))

    async def _repair(self, task: RepairTask, report: RepairReport) -> None:
        cluster_map = self._cluster_map()
        if cluster_map is None or cluster_map.acting_set(task.pg)[task.index] != self.node_id:
            raise _TaskFailed("epoch_changed", "this node no longer holds the position")
        method = "rebuild"
        data = await self._copy(cluster_map, task, report) if task.copy_from else None
        if data is None:
            data = await self._rebuild(cluster_map, task, report)
        else:
            method = "copy"
        error = await self._in_executor(_store, self._engine, task, data)
        if error is not None:
            raise _TaskFailed("storage_full" if isinstance(error, StorageFull) else "storage", str(error))
        report.bytes_written += len(data)
        if method == "copy":
            report.copied += 1
        else:
            report.rebuilt += 1
        REPAIRED_FRAGMENTS.labels(method=method).inc()
        REPAIRED_BYTES.inc(len(data))

    async def _fetch(
        self, cluster_map: ClusterMap, task: RepairTask, index: int, holders: Sequence[str], report: RepairReport
    ) -> bytes | None:
        """Fragment ``index`` of the task's chunk from the first of ``holders`` that returns a valid one."""
        for holder in holders:
            await self._limiter.acquire(task.fragment_length)
            try:
                if holder == self.node_id:
                    stored = await self._in_executor(self._engine.get, task.chunk_hash, index, task.pg)
                    data = bytes(stored.data)
                else:
                    address = cluster_map.nodes[holder].address
                    data = await self._peers.client(holder, address).get_fragment(task.chunk_hash, index, task.pg)
            except StorageError as error:
                logger.warning("repair could not fetch a fragment", extra={"fields": {
                    "node": self.node_id, "peer": holder, "chunk": task.chunk_hash.hex(), "index": index,
                    "error": str(error)}})
                continue
            report.bytes_fetched += len(data)
            FETCHED_BYTES.inc(len(data))
            self._meter.add(len(data))
            if len(data) == task.fragment_length:
                return data
            logger.warning("repair source has the wrong length", extra={"fields": {
                "node": self.node_id, "peer": holder, "chunk": task.chunk_hash.hex(), "index": index,
                "length": len(data), "expected": task.fragment_length}})
        return None

    async def _copy(self, cluster_map: ClusterMap, task: RepairTask, report: RepairReport) -> bytes | None:
        """The fragment from one of ``copy_from``; None when none returned it (the caller rebuilds)."""
        return await self._fetch(cluster_map, task, task.index, task.copy_from, report)

    async def _rebuild(self, cluster_map: ClusterMap, task: RepairTask, report: RepairReport) -> bytes:
        """Fetch 10 other fragments (lowest indexes first), decode, verify and re-encode; on a hash
        mismatch fetch the rest and try other combinations (at most ``MAX_DECODE_ATTEMPTS``)."""
        sources = list(task.sources)
        good: dict[int, bytes] = {}

        async def fetch_more(count: int) -> None:
            batch: list[tuple[int, tuple[str, ...]]] = []
            while sources and len(batch) < count:
                batch.append(sources.pop(0))
            results = await asyncio.gather(*(self._fetch(cluster_map, task, i, h, report) for i, h in batch))
            for (index, _), data in zip(batch, results, strict=True):
                if data is not None:
                    good[index] = data

        while len(good) < DATA_FRAGMENTS and sources:
            await fetch_more(DATA_FRAGMENTS - len(good))
        if len(good) < DATA_FRAGMENTS:
            raise _TaskFailed("unavailable", f"only {len(good)} source fragments could be fetched")
        tried: set[frozenset[int]] = set()
        while len(tried) < MAX_DECODE_ATTEMPTS:
            combination = next_combination(good, tried)
            if combination is None:
                if not sources:
                    break
                await fetch_more(len(sources))
                continue
            tried.add(combination)
            fragments = {index: good[index] for index in sorted(combination)}
            try:
                return await self._in_executor(
                    rebuild_fragment, fragments, task.chunk_size, task.chunk_hash, task.index
                )
            except ChunkHashMismatch as error:
                logger.error("rebuilt chunk has the wrong hash; trying other fragments", extra={"fields": {
                    "node": self.node_id, "chunk": task.chunk_hash.hex(), "error": str(error)}})
                if sources:
                    await fetch_more(len(sources))
            except Exception as error:  # ValueError or pyeclib's ECDriverError: bad sources
                logger.error("rebuild refused its fragments", extra={"fields": {
                    "node": self.node_id, "chunk": task.chunk_hash.hex(), "error": repr(error)}})
        raise _TaskFailed("hash_mismatch", f"no combination of {sorted(good)} decodes to the chunk")

    # -- misplaced fragments ------------------------------------------------------------------------

    async def _delete_misplaced(self, misplaced: Sequence[MisplacedFragment]) -> int:
        """Delete confirmed misplaced fragments whose position the current map still gives away."""
        deleted = 0
        for fragment in misplaced:
            if not fragment.confirmed:
                continue
            cluster_map = self._cluster_map()
            if cluster_map is None or cluster_map.acting_set(fragment.pg)[fragment.index] != fragment.holder:
                continue  # the map moved since the holder confirmed: re-check next scan
            try:
                # Conditional on the version listed: a copy rewritten since then is kept.
                written_before = fragment.written_at_ms + 1 if fragment.written_at_ms else 0
                existed = await self._in_executor(
                    self._engine.delete, fragment.chunk_hash, fragment.index, fragment.pg, written_before
                )
            except StorageError as error:
                logger.error("could not delete a misplaced fragment", extra={"fields": {
                    "node": self.node_id, "chunk": fragment.chunk_hash.hex(), "error": str(error)}})
                continue
            if existed:
                deleted += 1
                MISPLACED_DELETED.inc()
        return deleted

    # -- helpers ------------------------------------------------------------------------------------

    def _publish_progress(self) -> None:
        rate = self._meter.rate()
        REPAIR_RATE.set(rate)
        PENDING_FRAGMENTS.set(max(0, self._pending_fragments))
        PENDING_BYTES.set(max(0, self._pending_bytes))
        TIME_TO_FULL_REDUNDANCY.set(max(0, self._pending_bytes) / (rate if rate > 0 else self._limiter.rate))

    async def _in_executor(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)


def _triage(
    cluster_map: ClusterMap,
    node_id: str,
    pgs: Sequence[int],
    own: Mapping[int, PositionSummaries],
    peer_summaries: Mapping[str, Mapping[int, PositionSummaries] | None],
    hinted: Collection[int],
) -> tuple[list[int], list[tuple[int, PlacementGroupPlan]]]:
    """Split ``pgs`` into those to list (hinted, or ``needs_listing``) and the plans of the clean
    ones (no task, nothing misplaced, ``clean_health``). ``own``: this node's summaries by PG;
    ``peer_summaries``: each peer's by PG, None for a peer that could not be asked. Pure, CPU only."""
    dirty: list[int] = []
    clean: list[tuple[int, PlacementGroupPlan]] = []
    for pg in pgs:
        mine = own.get(pg, {})
        peers: dict[str, PositionSummaries | None] = {}
        for peer in listing_targets(cluster_map, pg):
            if peer != node_id:
                summaries = peer_summaries.get(peer)
                peers[peer] = None if summaries is None else summaries.get(pg, {})
        if pg in hinted or needs_listing(pg, cluster_map, node_id, mine, peers):
            dirty.append(pg)
        else:
            stripes = max((count for count, _ in mine.values()), default=0)
            clean.append((pg, PlacementGroupPlan([], [], clean_health(pg, cluster_map, stripes))))
    return dirty, clean


def _list_local(engine: FragmentEngine, pg: int) -> list[FragmentEntry]:
    """This node's listing of placement group ``pg`` (headers only; blocking)."""
    return list(engine.list_pg(pg))


def _store(engine: FragmentEngine, task: RepairTask, data: bytes) -> StorageError | None:
    """Store the repaired fragment durably (blocking); returns the engine's error, if any."""
    write = FragmentWrite(task.chunk_hash, task.index, task.pg, data, crc32c(data), task.chunk_size)
    return engine.put_many([write])[0]
