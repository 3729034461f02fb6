"""frontend/sync/notifier.py: long-poll waiters wake on notify, on the periodic re-check (another
frontend's commits), and time out with the cursor unchanged."""

from __future__ import annotations

import asyncio

from frontend.sync.notifier import LONGPOLL_WAITERS, ChangeNotifier


class Journal:
    """A namespace's latest seq, read through ``latest`` as the handler does; counts the reads."""

    def __init__(self, seq: int = 0) -> None:
        self.seq = seq
        self.reads = 0
        self._read = asyncio.Condition()

    async def latest(self) -> int:
        async with self._read:
            self.reads += 1
            self._read.notify_all()
        return self.seq

    async def read_at_least(self, reads: int) -> None:
        """Wait until ``latest`` was called ``reads`` times."""
        async with self._read:
            await asyncio.wait_for(self._read.wait_for(lambda: self.reads >= reads), 60)


def waiting_gauge() -> float:
    return LONGPOLL_WAITERS._value.get()


async def _returns_at_once_when_something_is_already_there() -> None:
    journal = Journal(seq=7)
    assert await ChangeNotifier().wait(1, 5, 30.0, journal.latest) == 7
    assert journal.reads == 1


async def _notify_wakes_the_waiter() -> None:
    # The re-check period and the timeout are far away: only notify can end this wait early.
    notifier = ChangeNotifier(recheck_seconds=300.0)
    journal = Journal(seq=3)
    waiter = asyncio.create_task(notifier.wait(1, 3, 300.0, journal.latest))
    await journal.read_at_least(1)
    journal.seq = 4
    notifier.notify(1)
    assert await asyncio.wait_for(waiter, 60) == 4
    assert notifier.waiters(1) == 0


async def _notify_of_another_namespace_does_not_wake() -> None:
    notifier = ChangeNotifier(recheck_seconds=300.0)
    journal = Journal(seq=3)
    waiter = asyncio.create_task(notifier.wait(1, 3, 300.0, journal.latest))
    await journal.read_at_least(1)
    notifier.notify(2)
    await asyncio.sleep(0.05)
    assert not waiter.done()
    assert journal.reads == 1
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert notifier.waiters(1) == 0


async def _recheck_sees_changes_without_notify() -> None:
    # Another frontend committed: nobody calls notify here, the periodic re-read finds it.
    notifier = ChangeNotifier(recheck_seconds=0.02)
    journal = Journal(seq=0)
    waiter = asyncio.create_task(notifier.wait(1, 0, 300.0, journal.latest))
    await journal.read_at_least(2)
    journal.seq = 1
    assert await asyncio.wait_for(waiter, 60) == 1


async def _timeout_returns_the_same_position() -> None:
    notifier = ChangeNotifier(recheck_seconds=0.02)
    journal = Journal(seq=9)
    before = waiting_gauge()
    assert await notifier.wait(1, 9, 0.1, journal.latest) == 9
    assert journal.reads >= 2  # it re-checked while waiting
    assert waiting_gauge() == before
    assert notifier.waiters(1) == 0


async def _many_waiters_all_wake() -> None:
    notifier = ChangeNotifier(recheck_seconds=300.0)
    journal = Journal(seq=0)
    waiters = [asyncio.create_task(notifier.wait(5, 0, 300.0, journal.latest)) for _ in range(5)]
    await journal.read_at_least(5)
    assert notifier.waiters(5) == 5
    assert waiting_gauge() >= 5
    journal.seq = 2
    notifier.notify(5)
    assert await asyncio.wait_for(asyncio.gather(*waiters), 60) == [2] * 5


# pytest runs these coroutines on a fresh event loop each (no asyncio plugin in this project).


def test_returns_at_once_when_something_is_already_there() -> None:
    asyncio.run(_returns_at_once_when_something_is_already_there())


def test_notify_wakes_the_waiter() -> None:
    asyncio.run(_notify_wakes_the_waiter())


def test_notify_of_another_namespace_does_not_wake() -> None:
    asyncio.run(_notify_of_another_namespace_does_not_wake())


def test_recheck_sees_changes_without_notify() -> None:
    asyncio.run(_recheck_sees_changes_without_notify())


def test_timeout_returns_the_same_position() -> None:
    asyncio.run(_timeout_returns_the_same_position())


def test_many_waiters_all_wake() -> None:
    asyncio.run(_many_waiters_all_wake())
