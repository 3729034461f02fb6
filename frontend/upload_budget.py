"""A frontend-wide bound on the memory that uploads in progress may hold.

Each PUT or UploadPart holds at most its chunk window in memory (``parallel_chunks + 1`` chunks of
``CHUNK_SIZE`` bytes, plus their fragments while they are sent). Without a global bound, many
concurrent large uploads could exhaust the process; with it, uploads beyond the budget wait their
turn (their clients see a slower start, never an error).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class UploadBudget:
    """Reserve bytes of a fixed budget; waiters are served first come, first served.

    Releasing is synchronous (no lock to await), so a cancellation can never leak a reservation.

    Args:
        total_bytes: the budget (bytes). A reservation larger than the budget is clamped to it, so
            one huge upload can always proceed alone.

    Raises:
        ValueError: a budget that is not positive.
    """

    def __init__(self, total_bytes: int) -> None:
        if total_bytes <= 0:
            raise ValueError("the upload budget must be positive")
        self.total_bytes = total_bytes
        self.available = total_bytes
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

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
