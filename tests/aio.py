"""Waiting on the event loop in tests that drive real I/O: poll a condition until a deadline, never a fixed sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
TIMEOUT = 20.0  # generous: two shared cores, other suites running


async def eventually(condition: Callable[[], T], what: str = "condition", timeout: float = TIMEOUT,
                     interval: float = 0.01) -> T:
    """`condition()`'s first truthy value; AssertionError if it stays falsy for `timeout` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not (value := condition()):
        if loop.time() > end:
            raise AssertionError(f"{what}: not true within {timeout} s")
        await asyncio.sleep(interval)
    return value
