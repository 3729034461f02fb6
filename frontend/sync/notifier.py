"""Long-poll wakeups: a waiter on a namespace returns as soon as its journal grows.

A commit on this frontend calls :meth:`ChangeNotifier.notify`, which wakes that namespace's waiters
at once. Commits made through another frontend (same metadata file) are not announced here, so
every waiter also re-reads the namespace's latest journal seq every ``recheck_seconds`` (1 s).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from prometheus_client import Gauge

LONGPOLL_WAITERS = Gauge("coffer_sync_longpoll_waiters", "Sync long-poll requests waiting for a change")

#: Seconds between database re-checks of a waiting long poll.
RECHECK_SECONDS = 1.0


class ChangeNotifier:
    """Per-namespace wakeup events for the ``/-/sync/changes`` long poll (one per frontend process;
    used from the event loop only)."""

    def __init__(self, recheck_seconds: float = RECHECK_SECONDS) -> None:
        self.recheck_seconds = recheck_seconds
        self._events: dict[int, asyncio.Event] = {}
        self._waiters: dict[int, int] = {}

    def notify(self, namespace_id: int) -> None:
        """Wake every current waiter on ``namespace_id`` (call after its journal grew)."""
        event = self._events.pop(namespace_id, None)
        if event is not None:
            event.set()

    async def wait(self, namespace_id: int, after_seq: int, timeout: float,
                   latest: Callable[[], Awaitable[int]]) -> int:
        """Wait until the namespace's journal has an entry after ``after_seq`` or ``timeout``
        seconds pass.

        ``latest`` reads the namespace's latest journal seq (``SyncStore.latest_seq`` in a thread);
        it is called at once, after every notification and every ``recheck_seconds``.
        Returns the latest seq seen: greater than ``after_seq`` when something arrived, else
        ``after_seq`` (timeout). Errors of ``latest`` propagate.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        self._waiters[namespace_id] = self._waiters.get(namespace_id, 0) + 1
        LONGPOLL_WAITERS.inc()
        try:
            while True:
                # Take the event before reading: a notify after the read then still wakes us.
                event = self._events.setdefault(namespace_id, asyncio.Event())
                seq = await latest()
                if seq > after_seq:
                    return seq
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return after_seq
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(remaining, self.recheck_seconds))
        finally:
            LONGPOLL_WAITERS.dec()
            left = self._waiters[namespace_id] - 1
            if left:
                self._waiters[namespace_id] = left
            else:
                # No waiter left: forget the namespace's event so idle namespaces cost nothing.
                del self._waiters[namespace_id]
                self._events.pop(namespace_id, None)

    def waiters(self, namespace_id: int) -> int:
        """How many long polls wait on ``namespace_id`` now."""
        return self._waiters.get(namespace_id, 0)
