"""Background scrub: re-read every fragment on this node, find bit rot before a client does.

A pass walks ``FragmentEngine.list_all()`` (volume by volume, key order) and re-verifies each
fragment with ``FragmentEngine.verify`` (length, CRC32C, RocksDB block checksums) in the executor,
never on the event loop. A fragment that fails is removed with ``FragmentEngine.quarantine``: it is
then missing, and the repair agent rebuilds it from the other fragments of its stripe.

Pacing: a pass reads at ``total bytes / period_seconds`` (so it takes about ``period_seconds``),
never faster than ``max_bytes_per_second`` (a large node then takes longer than the period). The
total is summed from the headers at the start of the pass. Pacing follows a virtual clock: after
``n`` bytes the pass waits until ``n / rate`` seconds have gone by since it began, so a stall
(a busy disk) is caught up afterwards no faster than verification itself allows.

Passes are not resumed across restarts: a restarted node begins a new pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import Counter, Gauge

from storagenode.engine import FragmentEngine
from storagenode.errors import StorageError
from storagenode.records import FragmentEntry

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Headers taken from ``list_all`` per executor call.
LIST_PAGE_ENTRIES = 256
#: Fragments are verified in groups of about this many bytes per executor call (one thread hop
#: per group rather than per fragment); pacing waits between groups.
VERIFY_GROUP_BYTES = 4 * 1024 * 1024
#: After a pass fails (e.g. a volume read error), the next one starts after this long at most.
RETRY_SECONDS = 60.0

FRAGMENTS_CHECKED = Counter("coffer_scrub_fragments_checked_total", "Fragments the scrubber re-read and verified")
BYTES_CHECKED = Counter("coffer_scrub_bytes_checked_total", "Fragment bytes the scrubber re-read and verified")
CORRUPT_FRAGMENTS = Counter(
    "coffer_scrub_corrupt_fragments_total", "Corrupt fragments the scrubber found and quarantined (removed)"
)
PASSES = Counter("coffer_scrub_passes_total", "Scrub passes completed over every fragment of the node")
PASS_PROGRESS = Gauge(
    "coffer_scrub_pass_progress_ratio", "Fraction (0..1) of the bytes of the current scrub pass verified so far"
)
BYTES_PER_SECOND = Gauge(
    "coffer_scrub_bytes_per_second", "Bytes verified per second, averaged over the current scrub pass"
)


@dataclass(frozen=True, slots=True)
class ScrubReport:
    """What one pass did: fragments and bytes verified, corrupt fragments found and removed."""

    fragments_checked: int
    bytes_checked: int
    corrupt_found: int


def target_rate(total_bytes: int, period_seconds: float, max_bytes_per_second: float) -> float:
    """Bytes per second a pass over ``total_bytes`` reads at: ``total_bytes / period_seconds``,
    at most ``max_bytes_per_second``; ``max_bytes_per_second`` when there is nothing to spread
    (``total_bytes`` 0) or no period (``period_seconds`` <= 0)."""
    if total_bytes <= 0 or period_seconds <= 0:
        return max_bytes_per_second
    return min(total_bytes / period_seconds, max_bytes_per_second)


@dataclass(frozen=True, slots=True)
class _Finding:
    pg: int
    entry: FragmentEntry
    problem: str
    removed: bool


class Scrubber:
    """Scrubs every fragment of ``engine`` once per ``period_seconds``, at most
    ``max_bytes_per_second``, running engine calls in ``executor``.

    ``start()`` runs passes back to back in a task (after a pass shorter than the period, the next
    begins one period after the last one began); ``stop()`` ends it. ``run_pass()`` runs one pass
    now (tests, operators).

    Raises (constructor):
        ValueError: ``period_seconds`` negative or ``max_bytes_per_second`` not positive.
    """

    def __init__(self, engine: FragmentEngine, executor: Executor, *, period_seconds: float,
                 max_bytes_per_second: float) -> None:
        if period_seconds < 0:
            raise ValueError(f"scrub period must not be negative, got {period_seconds}")
        if max_bytes_per_second <= 0:
            raise ValueError(f"scrub rate must be positive, got {max_bytes_per_second}")
        self._engine = engine
        self._executor = executor
        self._period_seconds = period_seconds
        self._max_bytes_per_second = max_bytes_per_second
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start scrubbing in the background. Idempotent."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run_forever(), name="scrubber")

    async def stop(self) -> None:
        """Stop scrubbing; returns once the background task has ended (an engine call already in
        the executor finishes there on its own). Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.run_pass()
                wait = started + self._period_seconds - loop.time()
            except StorageError as exc:
                logger.warning("scrub pass failed", extra={"fields": {"error": str(exc)}})
                wait = min(RETRY_SECONDS, max(self._period_seconds, 1.0))
            if wait > 0:
                await asyncio.sleep(wait)

    async def run_pass(self) -> ScrubReport:
        """Verify every fragment on the node once, paced; quarantine (remove) the corrupt ones.

        Fragments written during the pass may or may not be checked. Each corrupt fragment found
        is logged at warning level with its chunk hash, index, placement group and problem.

        Raises:
            StorageError: the engine is closed or a volume could not be read.
        """
        loop = asyncio.get_running_loop()
        total_bytes = await self._run(lambda: sum(entry.length for _pg, entry in self._engine.list_all()))
        rate = target_rate(total_bytes, self._period_seconds, self._max_bytes_per_second)
        PASS_PROGRESS.set(0.0)
        started = loop.time()
        fragments_checked = bytes_checked = corrupt_found = 0
        group: list[tuple[int, FragmentEntry]] = []
        group_bytes = 0

        async def check_group() -> None:
            nonlocal fragments_checked, bytes_checked, corrupt_found, group, group_bytes
            corrupt_found += self._report(await self._run(functools.partial(self._verify_group, group)))
            fragments_checked += len(group)
            bytes_checked += group_bytes
            FRAGMENTS_CHECKED.inc(len(group))
            BYTES_CHECKED.inc(group_bytes)
            group, group_bytes = [], 0
            await self._pace(started, bytes_checked, total_bytes, rate)

        listing = self._engine.list_all()
        while True:
            page: list[tuple[int, FragmentEntry]] = await self._run(
                functools.partial(list, itertools.islice(listing, LIST_PAGE_ENTRIES)))
            for item in page:
                group.append(item)
                group_bytes += item[1].length
                if group_bytes >= VERIFY_GROUP_BYTES:
                    await check_group()
            if len(page) < LIST_PAGE_ENTRIES:
                break
        if group:
            await check_group()
        elapsed = loop.time() - started
        if elapsed > 0:
            BYTES_PER_SECOND.set(bytes_checked / elapsed)
        PASS_PROGRESS.set(1.0)
        PASSES.inc()
        logger.info("scrub pass done", extra={"fields": {
            "fragments": fragments_checked, "bytes": bytes_checked, "corrupt": corrupt_found,
            "seconds": round(elapsed, 3)}})
        return ScrubReport(fragments_checked=fragments_checked, bytes_checked=bytes_checked,
                           corrupt_found=corrupt_found)

    async def _pace(self, started: float, bytes_checked: int, total_bytes: int, rate: float) -> None:
        """Update the gauges and wait until ``bytes_checked`` is due at ``rate``."""
        loop = asyncio.get_running_loop()
        if total_bytes > 0:
            PASS_PROGRESS.set(min(1.0, bytes_checked / total_bytes))
        elapsed = loop.time() - started
        if elapsed > 0:
            BYTES_PER_SECOND.set(bytes_checked / elapsed)
        wait = started + bytes_checked / rate - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)

    def _verify_group(self, group: list[tuple[int, FragmentEntry]]) -> list[_Finding]:
        """Verify each fragment of ``group`` (blocking: runs in the executor); quarantine the bad."""
        findings: list[_Finding] = []
        for pg, entry in group:
            problem = self._engine.verify(entry.chunk_hash, entry.index, pg)
            if problem is not None:
                removed = self._engine.quarantine(entry.chunk_hash, entry.index, pg)
                findings.append(_Finding(pg=pg, entry=entry, problem=problem, removed=removed))
        return findings

    @staticmethod
    def _report(findings: list[_Finding]) -> int:
        """Log and count the findings; return how many were corrupt fragments removed (a fragment
        that checked out again under quarantine's lock was rewritten meanwhile, not corrupt)."""
        removed = 0
        for finding in findings:
            logger.warning("scrub found a corrupt fragment", extra={"fields": {
                "chunk_hash": finding.entry.chunk_hash.hex(), "index": finding.entry.index, "pg": finding.pg,
                "length": finding.entry.length, "problem": finding.problem, "removed": finding.removed}})
            if finding.removed:
                removed += 1
                CORRUPT_FRAGMENTS.inc()
        return removed

    async def _run(self, function: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

