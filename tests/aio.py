"""Run an async test function on a fresh event loop, with a deadline."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from fltorrent.net.clock import run_virtual


def aio(
    timeout: float = 60.0, *, virtual: bool = False
) -> Callable[[Callable[..., Coroutine[Any, Any, None]]], Callable[..., None]]:
    """With ``virtual=True`` the test runs in virtual time and ``timeout`` is virtual seconds."""

    def deco(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            async def main() -> None:
                async with asyncio.timeout(timeout):
                    await fn(*args, **kwargs)

            if virtual:
                run_virtual(main())
            else:
                asyncio.run(main())

        return wrapper

    return deco
