"""A storage node's background work: the cluster-map watch, repair, scrub and compaction.

``NodeBackground`` owns them for ``storagenode.server.serve``: the watch starts without waiting
for a map (a new cluster publishes its first map only once enough nodes registered), repair runs
only once a map is known, and everything stops before the engine closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import Executor
from dataclasses import dataclass

from placement.cluster_map import ClusterMap
from placement.watcher import ClusterMapWatcher
from storagenode.client import StorageNodePool
from storagenode.compaction import Compactor
from storagenode.engine import FragmentEngine
from storagenode.repair import RepairAgent
from storagenode.scrub import Scrubber

logger = logging.getLogger(__name__)

#: Seconds between attempts to load the first cluster map.
MAP_RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class DurabilitySettings:
    """What the node's background work runs with (the ``coffer storagenode`` flags).

    ``repair``/``scrub``: whether each runs at all. ``repair_bytes_per_second``: bytes repair may
    fetch from other nodes per second; ``repair_scan_interval``: seconds between scans of the
    node's placement groups. ``scrub_period``: seconds a full scrub pass should take;
    ``scrub_max_bytes_per_second``: the pass never reads faster than this. ``compaction``: whether
    deleted fragments' disk space is given back (``storagenode.compaction``), checked every
    ``compaction_interval`` seconds; live fragments are relocated out of the oldest blob files once
    ``compaction_garbage_ratio`` of a volume's blob file bytes are garbage.
    ``background_write_max_bytes_per_second``: each volume's flushes and compactions together write
    at most this many bytes per second, flushes first (0: no cap; ``FragmentEngine``).
    """

    repair: bool = True
    repair_bytes_per_second: float = 50 * 1024 * 1024
    repair_scan_interval: float = 60.0
    scrub: bool = True
    scrub_period: float = 14 * 24 * 3600.0
    scrub_max_bytes_per_second: float = 20 * 1024 * 1024
    compaction: bool = True
    compaction_interval: float = 600.0
    compaction_garbage_ratio: float = 0.25
    background_write_max_bytes_per_second: int = 0


class NodeBackground:
    """Cluster-map watch, repair agent and scrubber of one node. ``start`` never blocks on etcd;
    ``stop`` is idempotent and waits for everything to finish."""

    def __init__(self, node_id: str, engine: FragmentEngine, executor: Executor, etcd: str | None,
                 settings: DurabilitySettings) -> None:
        self._watcher = ClusterMapWatcher(etcd) if etcd else None
        self._map_loader: asyncio.Task[None] | None = None
        self._last_map: ClusterMap | None = None
        self._peers = StorageNodePool()
        self._repair = (
            RepairAgent(node_id, engine, executor, self.cluster_map, self._peers,
                        bytes_per_second=settings.repair_bytes_per_second,
                        scan_interval=settings.repair_scan_interval)
            if settings.repair and self._watcher is not None else None
        )
        self._scrubber = (
            Scrubber(engine, executor, period_seconds=settings.scrub_period,
                     max_bytes_per_second=settings.scrub_max_bytes_per_second)
            if settings.scrub else None
        )
        self._compactor = (
            Compactor(engine, interval_seconds=settings.compaction_interval,
                      garbage_ratio=settings.compaction_garbage_ratio)
            if settings.compaction else None
        )

    def hint(self, pg: int) -> None:
        """Ask repair to look at placement group ``pg`` now (no-op when repair does not run)."""
        if self._repair is not None:
            self._repair.hint(pg)

    def cluster_map(self) -> ClusterMap | None:
        """The newest cluster map this node has seen, or None before the first one arrives."""
        if self._watcher is None:
            return None
        try:
            return self._watcher.current
        except RuntimeError:
            return None

    async def start(self) -> None:
        """Start the scrubber and the compactor now, the map watch + repair in the background."""
        if self._scrubber is not None:
            await self._scrubber.start()
        if self._compactor is not None:
            await self._compactor.start()
        if self._watcher is not None:
            self._map_loader = asyncio.create_task(self._load_map_then_repair(), name="cluster-map-loader")

    async def _load_map_then_repair(self) -> None:
        assert self._watcher is not None
        while True:
            try:
                await self._watcher.start(timeout=MAP_RETRY_SECONDS)
                self._last_map = self._watcher.current
                break
            except TimeoutError as exc:
                logger.debug("no cluster map yet", extra={"fields": {"error": str(exc)}})
            except Exception:
                # Whatever went wrong, repair must not stay off for the node's lifetime: retry.
                logger.exception("loading the cluster map failed; retrying")
                await asyncio.sleep(MAP_RETRY_SECONDS)
        if self._repair is not None:
            self._watcher.add_listener(self._on_new_map)
            await self._repair.start()

    def _on_new_map(self, new_map: ClusterMap) -> None:
        """A new epoch: placement groups whose acting set changed are scanned at once rather than
        after the scan interval (their new holders have fragments to fetch)."""
        previous, self._last_map = self._last_map, new_map
        if self._repair is None:
            return
        for pg in range(new_map.pg_count):
            if previous is None or previous.pg_count != new_map.pg_count or (
                previous.acting_set(pg) != new_map.acting_set(pg)
            ):
                self._repair.hint(pg)

    async def stop(self) -> None:
        """Stop repair, scrub, compaction and the watch (in that order); safe to call more than once."""
        if self._map_loader is not None:
            self._map_loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._map_loader
            self._map_loader = None
        if self._repair is not None:
            await self._repair.stop()
        if self._scrubber is not None:
            await self._scrubber.stop()
        if self._compactor is not None:
            await self._compactor.stop()
        if self._watcher is not None:
            await self._watcher.stop()
        await self._peers.close()
