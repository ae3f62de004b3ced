"""`SingleFlight`: at most one running production per key; everyone else waits for it.

The production runs in its own task, not in the first caller's, so cancelling any caller (even
the one that started it) never cancels the work others wait on; callers wait through
`asyncio.shield`. The entry leaves the in-flight map when the production finishes, success or
failure, so the map holds only running work and a failure is not remembered: the next call for
that key starts a new production. Each key has its own task, so one key's failure or slowness
never reaches another key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Patience", "SingleFlight"]

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._running)

    def running(self, key: str) -> bool:
        return key in self._running

    def start(self, key: str, produce: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        """The running production for `key`, starting `produce()` if there is none."""
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(produce())
            self._running[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return task

    async def do(self, key: str, produce: Callable[[], Awaitable[T]]) -> T:
        """Join (or start) the production for `key` and return its result or raise its error."""
        return await asyncio.shield(self.start(key, produce))

    def _finished(self, key: str, task: asyncio.Task[T]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            # NOTE: mark the exception retrieved: when every waiter was cancelled nobody else
            # will, and asyncio would log "exception was never retrieved" at garbage collection.
            task.exception()

    async def cancel_all(self) -> None:
        """Cancel every running production and wait for them to end (used on close)."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Patience:
    """How long a shared production may wait on other replicas before doing the work itself.

    A production is shared by every local caller of its key, each with its own deadline. It
    waits on another replica's exchange only until the earliest of those callers' patience
    ends (`until`, event-loop time; None: no caller has a deadline), so that the caller still
    has time to exchange here if the other replica died or is slow. A caller joining with an
    earlier deadline shortens it: `scope()` blocks already running are rescheduled.
    """

    __slots__ = ("_scopes", "until")

    def __init__(self, until: float | None = None) -> None:
        self.until = until
        self._scopes: list[asyncio.Timeout] = []

    def shorten(self, until: float | None) -> None:
        if until is None or (self.until is not None and self.until <= until):
            return
        self.until = until
        for scope in self._scopes:
            # An expired scope cannot be rescheduled (asyncio raises); its waiter checks
            # `remaining()` after each step anyway (see `LeaseFlight`).
            if not scope.expired():
                scope.reschedule(until)

    def remaining(self) -> float | None:
        if self.until is None:
            return None
        return self.until - asyncio.get_running_loop().time()

    @contextlib.asynccontextmanager
    async def scope(self) -> AsyncIterator[asyncio.Timeout]:
        """An `asyncio.timeout_at(until)` block that a later `shorten` reaches too."""
        async with asyncio.timeout_at(self.until) as scope:
            self._scopes.append(scope)
            try:
                yield scope
            finally:
                self._scopes.remove(scope)
