"""Frontend-wide bounds on the memory that requests in progress may hold.

A frontend keeps two budgets. Each upload (PUT, UploadPart, UploadPartCopy) holds at most its
chunk window (``parallel_chunks + 1`` chunks of ``CHUNK_SIZE`` bytes, plus their fragments while
they are sent). Each read (GetObject, the sync API's chunk download, UploadPartCopy's source)
holds at most its read-ahead window (``object_io.READ_AHEAD_CHUNKS`` chunks of fragments). Without
a global bound, many concurrent large requests could exhaust the process. With one, requests
beyond the budget wait their turn: their clients see a slower start, never an error.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import Counter, Gauge

RESERVED_BYTES = Gauge("coffer_frontend_memory_budget_reserved_bytes",
                       "Bytes of a frontend memory budget held by requests in progress", ["budget"])
WAITS = Counter("coffer_frontend_memory_budget_waits_total",
                "Requests that waited for room in a frontend memory budget", ["budget"])


class MemoryBudget:
    """Reserve bytes of a fixed budget; waiters are served first come, first served.

    Releasing is synchronous (no lock to await), so a cancellation can never leak a reservation.

    Args:
        total_bytes: the budget (bytes). A reservation larger than the budget is clamped to it, so
            one huge request can always proceed alone.
        name: the ``budget`` label of its metrics (``coffer_frontend_memory_budget_reserved_bytes``,
            ``..._waits_total``), e.g. ``"upload"`` or ``"read"``.

    Raises:
        ValueError: a budget that is not positive.
    """

    def __init__(self, total_bytes: int, *, name: str) -> None:
        if total_bytes <= 0:
            raise ValueError(f"a memory budget must be positive, got {total_bytes} bytes")
        self.total_bytes = total_bytes
        self.available = total_bytes
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        RESERVED_BYTES.labels(name).set_function(lambda: self.total_bytes - self.available)
        self._waits = WAITS.labels(name)

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.available:
            amount, waiter = self._waiters.popleft()
            if not waiter.done():
                self.available -= amount
                waiter.set_result(None)

    @asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[int]:
        """Hold ``size`` bytes (clamped to the budget) for the duration of the ``async with``.

        Yields the number of bytes reserved. Waiting is cancellable.
        """
        amount = max(0, min(size, self.total_bytes))
        if not self._waiters and amount <= self.available:
            self.available -= amount
        else:
            self._waits.inc()
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (amount, waiter)
            self._waiters.append(entry)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self.available += amount  # granted just as we were cancelled: give it back
                else:
                    self._waiters.remove(entry)
                self._wake()
                raise
        try:
            yield amount
        finally:
            self.available += amount
            self._wake()
