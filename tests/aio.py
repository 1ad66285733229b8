"""Run an async test function on a fresh event loop, with a deadline."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any


def aio(
    timeout: float = 60.0,
) -> Callable[[Callable[..., Coroutine[Any, Any, None]]], Callable[..., None]]:
    def deco(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            async def main() -> None:
                async with asyncio.timeout(timeout):
                    await fn(*args, **kwargs)

            asyncio.run(main())

        return wrapper

    return deco
