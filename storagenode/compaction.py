"""Background compaction: give the disk space of deleted fragments back.

Fragment data lives in RocksDB blob files, each holding the fragments of many chunks. Deleting a
fragment only writes a tombstone; its bytes stay in the blob file, and blob garbage collection is
off while writing (always on, it rewrites live fragments again and again: 4.5-5.8x write
amplification instead of 2x). So every ``interval_seconds`` (give or take 20%, ``common.jitter``) a
pass looks at each volume:

1. If fragments were deleted since the last pass (or this is the first pass since the node
   started: deletes before it are not counted), compact the volume: deleted keys are dropped,
   their bytes count as garbage, and blob files left with nothing but garbage are deleted.
2. If garbage is still at least ``garbage_ratio`` of the blob file bytes, run a relocation
   compaction: the live fragments of the oldest quarter of the blob files (at least the oldest
   one; ``RELOCATION_AGE_CUTOFF``) move to new files, and the old files go. The oldest files
   are where deletes have had the longest to pile up; the next pass takes the next quarter if
   garbage is still above the ratio. A relocation writes up to a quarter of the volume's blob
   bytes anew, so it is skipped (with a warning) when the disk does not have that much free beyond
   ``min_free_bytes``.

Each step is one compaction of the whole volume (RocksDB rewrites whole table files, which hold
only keys and references, so a key range would not bound the work), in a thread of its own:
never the event loop, never the node's request threads. Puts, gets, flushes and automatic
compactions go on meanwhile. A stop waits for the compaction in progress; killing the node
instead loses nothing (RocksDB compactions are crash-safe: the old files go only after the new
ones are recorded).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import Counter, Gauge

from common.jitter import jittered
from placement.etcd import cancel_and_wait
from storagenode.engine import BlobSpace, FragmentEngine
from storagenode.errors import StorageError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Fraction of a volume's blob files, the oldest (at least one), a relocation empties.
RELOCATION_AGE_CUTOFF = 0.25
#: After a failed pass, the next one starts after this long at most (seconds).
RETRY_SECONDS = 60.0

BLOB_FILE_BYTES = Gauge("coffer_volume_blob_file_bytes", "Bytes of the volume's blob files (fragment data)",
                        ["volume"])
BLOB_GARBAGE_BYTES = Gauge(
    "coffer_volume_blob_garbage_bytes",
    "Bytes of the volume's blob files that hold deleted fragments (known after a compaction)", ["volume"])
COMPACTIONS = Counter("coffer_compactions_total",
                      "Compactions of a whole volume: 'deletes' drops deleted keys, 'relocation' moves live "
                      "fragments out of the oldest blob files", ["kind"])
RECLAIMED_BYTES = Counter("coffer_compaction_reclaimed_bytes_total",
                          "Bytes of blob files compaction gave back to the disk")
SKIPPED_RELOCATIONS = Counter(
    "coffer_compaction_skipped_relocations_total",
    "Relocations skipped because the volume's disk lacked the free space to write the moved fragments")


@dataclass(frozen=True, slots=True)
class VolumeCompaction:
    """What a pass did to one volume: the blob files ``before`` and ``after``, whether deleted keys
    were dropped (``dropped_deletes``) and live fragments relocated (``relocated``)."""

    volume: str
    before: BlobSpace
    after: BlobSpace
    dropped_deletes: bool
    relocated: bool

    @property
    def reclaimed_bytes(self) -> int:
        """Blob file bytes the pass gave back (0 if the files grew meanwhile)."""
        return max(0, self.before.total_bytes - self.after.total_bytes)


class Compactor:
    """Runs a compaction pass over every volume of ``engine`` every ``interval_seconds``.

    ``garbage_ratio`` (0 < ratio <= 1): the share of a volume's blob file bytes that must be
    garbage before live fragments are relocated. ``start()`` runs passes in a task, ``stop()``
    ends it (waiting for a compaction in progress), ``run_pass()`` runs one now (tests, operators).

    Raises (constructor):
        ValueError: ``interval_seconds`` not positive or ``garbage_ratio`` outside (0, 1].
    """

    def __init__(self, engine: FragmentEngine, *, interval_seconds: float, garbage_ratio: float) -> None:
        if interval_seconds <= 0:
            raise ValueError(f"compaction interval must be positive, got {interval_seconds}")
        if not 0 < garbage_ratio <= 1:
            raise ValueError(f"garbage ratio must be in (0, 1], got {garbage_ratio}")
        self._engine = engine
        self._interval_seconds = interval_seconds
        self._garbage_ratio = garbage_ratio
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="compaction")
        self._task: asyncio.Task[None] | None = None
        # Deletes taken from the engine by a pass that then failed: the next pass still drops them.
        self._carried_deletes: dict[int, int] = {}
        # The engine counts deletes since it opened; those of earlier runs are unknown, so each
        # volume's first pass drops deleted keys whatever the count.
        self._dropped_since_start: set[int] = set()

    async def start(self) -> None:
        """Start the passes in the background (the first after one jittered interval). Idempotent."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run_forever(), name="compactor")

    async def stop(self) -> None:
        """Stop the passes; returns once a compaction in progress is done. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        # The thread finishes the compaction it is in; this no-op runs right after it.
        await asyncio.wrap_future(self._executor.submit(lambda: None))

    async def _run_forever(self) -> None:
        while True:
            try:
                # Jittered, so that the nodes of a cluster do not all compact at the same moment.
                await asyncio.sleep(jittered(self._interval_seconds))
                await self.run_pass()
            except StorageError as exc:
                logger.warning("compaction pass failed; retrying later", extra={"fields": {"error": str(exc)}})
                await asyncio.sleep(min(RETRY_SECONDS, self._interval_seconds))
            except Exception:
                # Whatever went wrong, compaction must not stop for the node's lifetime: retry.
                logger.exception("compaction pass failed unexpectedly; retrying later")
                await asyncio.sleep(min(RETRY_SECONDS, self._interval_seconds))

    async def run_pass(self) -> list[VolumeCompaction]:
        """Compact every volume that needs it (see the module docstring); return what was done,
        one entry per volume. Logged at info level when a volume was compacted.

        Raises:
            StorageError: the engine is closed or RocksDB failed (later volumes are not compacted).
        """
        results = []
        for index, path in enumerate(self._engine.volume_paths):
            results.append(await self._compact_volume(index, path))
        return results

    async def _compact_volume(self, index: int, path: str) -> VolumeCompaction:
        before = await self._run(lambda: self._engine.blob_space(index))
        deletes = self._carried_deletes.pop(index, 0) + self._engine.take_deletes_since_compaction(index)
        dropped_deletes = relocated = False
        try:
            if deletes or index not in self._dropped_since_start:
                await self._run(functools.partial(self._engine.compact, index))
                self._dropped_since_start.add(index)
                dropped_deletes = True
                COMPACTIONS.labels("deletes").inc()
        except BaseException:
            self._carried_deletes[index] = deletes
            raise
        space = await self._run(lambda: self._engine.blob_space(index))
        if space.garbage_ratio >= self._garbage_ratio:
            relocated = await self._relocate(index, path, space)
        after = await self._run(lambda: self._engine.blob_space(index))
        BLOB_FILE_BYTES.labels(path).set(after.total_bytes)
        BLOB_GARBAGE_BYTES.labels(path).set(after.garbage_bytes)
        result = VolumeCompaction(volume=path, before=before, after=after, dropped_deletes=dropped_deletes,
                                  relocated=relocated)
        RECLAIMED_BYTES.inc(result.reclaimed_bytes)
        if dropped_deletes or relocated:
            logger.info("volume compacted", extra={"fields": {
                "volume": path, "deleted_fragments": deletes, "relocated": relocated,
                "blob_bytes_before": before.total_bytes, "blob_bytes_after": after.total_bytes,
                "garbage_bytes_after": after.garbage_bytes, "reclaimed_bytes": result.reclaimed_bytes}})
        return result

    async def _relocate(self, index: int, path: str, space: BlobSpace) -> bool:
        """Relocate the live fragments of the oldest blob files, if the disk has room for them."""
        oldest = max(1, int(space.files * RELOCATION_AGE_CUTOFF))
        # At most what the oldest files hold, if they are about the average size.
        needed = space.total_bytes * oldest // max(1, space.files)
        free = await self._run(lambda: self._engine.free_bytes(index))
        if free - needed < self._engine.min_free_bytes:
            SKIPPED_RELOCATIONS.inc()
            logger.warning("volume too full to relocate fragments out of its oldest blob files; add capacity "
                           "or delete data, the garbage stays until then", extra={"fields": {
                               "volume": path, "free_bytes": free, "needed_bytes": needed,
                               "garbage_bytes": space.garbage_bytes}})
            return False
        await self._run(functools.partial(self._engine.compact, index, relocate_oldest=oldest))
        COMPACTIONS.labels("relocation").inc()
        return True

    async def _run(self, function: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)
