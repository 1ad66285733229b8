"""Virtual time for asyncio: an event loop whose clock jumps to the next timer.

Theory of operation. asyncio's loop asks its selector to wait for I/O for at most the time left
until the earliest timer. :class:`VirtualTimeLoop` hands it a selector that polls real file
descriptors without blocking and, when nothing is ready, *advances the loop's clock* by that
timeout instead of sleeping. So ``await asyncio.sleep(3600)`` returns at once with
``loop.time()`` one hour later, and a simulated 128 kbit/s link costs no wall time. Everything
that waits through the loop (``sleep``, ``wait_for``, ``call_later``, the swarm's timers) sees
the same virtual clock; nothing else may read a wall clock for decisions in simulation.

Determinism: with no real I/O and no threads, the order of callbacks depends only on the
program, so the same seed gives the same run. Threads break that (their duration is real time
while the virtual clock keeps jumping), so simulation code must not use executors for work
whose duration matters; model that duration with ``asyncio.sleep`` instead.

When every task waits and no timer is scheduled, nothing can ever happen again unless a thread
wakes the loop; the selector then waits for real I/O up to ``stall_timeout`` wall seconds and
raises :class:`~fltorrent.errors.SimulationStalled` if none comes.
"""

from __future__ import annotations

import asyncio
import math
import selectors
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from fltorrent.errors import SimulationStalled

T = TypeVar("T")
FileObj = int | Any  # selectors' file object: a descriptor or anything with fileno()

DEFAULT_STALL_TIMEOUT = 30.0


class _VirtualSelector(selectors.BaseSelector):
    """Polls real descriptors without blocking; a wait becomes a jump of the virtual clock."""

    def __init__(self, loop_clock: list[float], stall_timeout: float) -> None:
        self._inner = selectors.DefaultSelector()
        self._now = loop_clock  # one-element list shared with the loop
        self._stall_timeout = stall_timeout

    def register(self, fileobj: FileObj, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: FileObj) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: FileObj, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = self._inner.select(0)
        if events or timeout == 0:
            return events
        if timeout is None:
            events = self._inner.select(self._stall_timeout)
            if not events:
                raise SimulationStalled(
                    "simulation stalled: every task is waiting and no timer is scheduled"
                )
            return events
        # Always move forward, even when the timeout is below the clock's float resolution.
        now = self._now[0]
        self._now[0] = max(now + timeout, math.nextafter(now, math.inf))
        return []

    def close(self) -> None:
        self._inner.close()

    def get_map(self) -> Mapping[FileObj, selectors.SelectorKey]:
        return self._inner.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop on a virtual clock (starts at ``start`` seconds)."""

    def __init__(self, *, start: float = 0.0, stall_timeout: float = DEFAULT_STALL_TIMEOUT) -> None:
        self._virtual_now = [start]
        super().__init__(selector=_VirtualSelector(self._virtual_now, stall_timeout))

    def time(self) -> float:
        return self._virtual_now[0]


def run_virtual(coro: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """``asyncio.run`` on a fresh :class:`VirtualTimeLoop`."""
    with asyncio.Runner(debug=debug, loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coro)


def is_virtual(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """Whether ``loop`` (default: the running loop) runs on virtual time."""
    return isinstance(loop or asyncio.get_running_loop(), VirtualTimeLoop)


async def offload(fn: Callable[[], T]) -> T:
    """Run blocking ``fn`` in a worker thread, or inline on a virtual-time loop.

    In simulation a thread would let the virtual clock jump (and timers fire) while it runs,
    and its real duration would leak into the run; inline it costs no virtual time at all.
    """
    if is_virtual():
        return fn()
    return await asyncio.to_thread(fn)
