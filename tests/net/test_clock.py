"""The virtual-time event loop: waits cost no wall time and the clock is exact."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from fltorrent.errors import SimulationStalled
from fltorrent.net.clock import VirtualTimeLoop, is_virtual, run_virtual
from tests.aio import aio


@aio(virtual=True, timeout=7200)
async def test_an_hour_of_sleep_costs_no_wall_time() -> None:
    loop = asyncio.get_running_loop()
    assert is_virtual()
    wall = time.perf_counter()
    t0 = loop.time()
    await asyncio.sleep(3600)
    assert loop.time() - t0 == pytest.approx(3600, abs=1e-6)
    assert time.perf_counter() - wall < 1.0


@aio(virtual=True)
async def test_timers_fire_in_order_at_their_virtual_times() -> None:
    loop = asyncio.get_running_loop()
    fired: list[tuple[str, float]] = []

    async def after(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        fired.append((name, loop.time()))

    async with asyncio.TaskGroup() as tg:
        for name, delay in [("c", 30.0), ("a", 0.5), ("b", 7.25)]:
            tg.create_task(after(name, delay))
    assert [n for n, _ in fired] == ["a", "b", "c"]
    assert [t for _, t in fired] == pytest.approx([0.5, 7.25, 30.0])


@aio(virtual=True, timeout=7200)
async def test_timeouts_expire_in_virtual_time() -> None:
    loop = asyncio.get_running_loop()
    never = asyncio.Event()
    t0 = loop.time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(120):
            await never.wait()
    assert loop.time() - t0 == pytest.approx(120)


def test_a_deadlock_is_reported_not_hung() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    loop = VirtualTimeLoop(stall_timeout=0.2)
    try:
        with pytest.raises(SimulationStalled):
            loop.run_until_complete(main())
    finally:
        loop.close()


def test_a_thread_can_still_wake_the_loop() -> None:
    async def main() -> str:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str] = loop.create_future()
        threading.Timer(0.05, lambda: loop.call_soon_threadsafe(fut.set_result, "woke")).start()
        return await fut

    assert run_virtual(main()) == "woke"


def test_same_program_same_schedule() -> None:
    async def main() -> list[tuple[int, float]]:
        loop = asyncio.get_running_loop()
        log: list[tuple[int, float]] = []

        async def worker(i: int) -> None:
            for k in range(5):
                await asyncio.sleep(0.1 * ((i * 7 + k * 3) % 5))
                log.append((i, loop.time()))

        async with asyncio.TaskGroup() as tg:
            for i in range(6):
                tg.create_task(worker(i))
        return log

    assert run_virtual(main()) == run_virtual(main())
