"""The frontend-wide memory budgets (uploads, reads): bounded, first come first served, cancellation-safe."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from frontend.memory_budget import MemoryBudget


def test_reservations_beyond_the_budget_wait_in_order() -> None:
    async def main() -> list[str]:
        budget = MemoryBudget(100, name="test-order")
        waits_before = REGISTRY.get_sample_value("coffer_frontend_memory_budget_waits_total",
                                                 {"budget": "test-order"}) or 0.0
        order: list[str] = []
        first_in = asyncio.Event()
        release_first = asyncio.Event()

        async def upload(name: str, size: int, hold: asyncio.Event | None = None) -> None:
            async with budget.reserve(size):
                order.append(name)
                if hold is not None:
                    first_in.set()
                    await hold.wait()

        first = asyncio.create_task(upload("first", 80, release_first))
        await first_in.wait()
        second = asyncio.create_task(upload("second", 50))
        third = asyncio.create_task(upload("third", 10))  # fits, but must not overtake "second"
        await asyncio.sleep(0)
        assert order == ["first"] and budget.available == 20
        assert REGISTRY.get_sample_value("coffer_frontend_memory_budget_reserved_bytes",
                                         {"budget": "test-order"}) == 80
        assert REGISTRY.get_sample_value("coffer_frontend_memory_budget_waits_total",
                                         {"budget": "test-order"}) == waits_before + 2
        release_first.set()
        await asyncio.gather(first, second, third)
        assert budget.available == 100
        return order

    assert asyncio.run(main()) == ["first", "second", "third"]


def test_oversized_reservation_is_clamped_and_cancelled_waiters_leave_no_trace() -> None:
    async def main() -> None:
        budget = MemoryBudget(100, name="test")
        async with budget.reserve(10**12) as amount:
            assert amount == 100 and budget.available == 0
            waiting = asyncio.create_task(budget.reserve(30).__aenter__())
            await asyncio.sleep(0)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        assert budget.available == 100
        async with budget.reserve(30):
            assert budget.available == 70

    asyncio.run(main())


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryBudget(0, name="test")
