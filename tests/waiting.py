"""Waiting on a condition instead of the wall clock: `await eventually(lambda: ...)` polls a
cheap, synchronous condition and fails loudly after `within` seconds (a bound for a loaded
machine, not a timing the test depends on)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(condition: Callable[[], bool], *, within: float = 5.0) -> None:
    """Return as soon as `condition()` holds (checked every few milliseconds)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)
