"""`LeaseFlight`: the single flight across replicas that `RedisTokenStore.coordinate` runs.

A miss runs one script (ACQUIRE): a value that fits is returned; otherwise the lease
(`<namespace>:{k}:lease`, a random owner id, PX = lease_ttl) is taken with SET NX PX and this
replica exchanges, renewing the lease every lease_ttl / 3, then writes the value, deletes its
lease and publishes "set" in one script; otherwise it waits for a message about the key (or
polls, at most every 0.5 s) for no longer than the lease's remaining time, and looks again
(never sooner than 50 ms after the last look). A holder that dies stops renewing: its lease
ends within `lease_ttl` and a waiter takes over. A holder whose exchange fails releases its
lease by compare-and-delete ("rel") and its callers get the error; a waiter then tries
itself. Waiting ends at the production's patience (half the shortest deadline of the callers
waiting on it, see `TokenCache`) and after 2 x `lease_ttl` in any case, after which this
replica exchanges without the lease: a caller's deadline is never spent entirely on another
replica, and a caller without one never waits on a lease for ever. When the wait ends during
an ACQUIRE, which may have taken the lease for us, that lease is released at once.

NOTE: both ends of the wait are checked after every round trip and every wait, not only left
to the cancellation of `asyncio.timeout`: on Python 3.11 redis-py sends each command through
`asyncio.wait_for` (its `socket_timeout`), which swallows a cancellation arriving as the
send completes (CPython gh-86296). A swallowed cancellation used to keep a hurried wait
polling until 2 x lease_ttl, and a wait without a deadline until the lease ended.

The values themselves (opening them, the in-process level, writes) stay with the store,
which hands the flight the few operations it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from grpc_obo._exchange._keys import log_ref
from grpc_obo._exchange._local import LocalTier
from grpc_obo._exchange._observe import StoreObserver
from grpc_obo._exchange._redis_link import (
    ACQUIRE,
    POLL_FLOOR,
    RELEASE,
    RENEW,
    Notifications,
    RedisUnavailable,
)
from grpc_obo._exchange._singleflight import Patience
from grpc_obo._exchange._store import Produce
from grpc_obo._exchange._token import CachedToken

__all__ = ["VALUE", "FlightValues", "LeaseFlight", "report_damage"]

_log = logging.getLogger("grpc_obo.exchange.cache")

# ACQUIRE's answers.
VALUE, _ACQUIRED, _HELD = 0, 1, 2


def report_damage(key: str, state: int, lease_ms: int, *, damaged: bool) -> None:
    """Say what a script found that grpc_obo never writes (someone else wrote to Redis)."""
    if damaged:
        _log.warning(
            "redis token cache key %s… held a value of the wrong type (not written by "
            "grpc_obo); deleted it, treating it as a miss",
            log_ref(key),
        )
    if state == _ACQUIRED and lease_ms == -1:
        _log.warning(
            "redis token cache lease of %s… was set without expiry (not by grpc_obo, "
            "whose leases always expire); taken over",
            log_ref(key),
        )


@dataclass(frozen=True)
class FlightValues:
    """What the flight needs of the store's values (bound methods of the store)."""

    keys: Callable[[str], tuple[str, str]]
    """A cache key's Redis keys: its value and its lease."""
    open: Callable[[str, str, bytes], CachedToken | None]
    """A sealed value, opened (None: it does not open, or was evicted here)."""
    write: Callable[..., Awaitable[bool]]
    """`write(key, token, ttl, owner=...)`: store, release our lease, publish."""
    spawn: Callable[[Awaitable[Any]], asyncio.Task[Any]]
    """Run in the background, awaited (bounded) when the store closes."""
    down: Callable[[], bool]
    """Whether Redis is in an outage."""


class LeaseFlight:
    """The lease protocol of one store: acquire, wait, renew, release."""

    def __init__(
        self,
        *,
        client: Any,
        run: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]],
        events: Notifications,
        l1: LocalTier,
        values: FlightValues,
        origin: str,
        channel: str,
        timeout: float,
        lease_ttl: float,
        observer: StoreObserver,
    ) -> None:
        self._client = client
        self._run = run
        self._events = events
        self._l1 = l1
        self._values = values
        self._origin = origin
        self._channel = channel
        self._timeout = timeout
        self._lease_ttl = lease_ttl
        self._lease_ms = max(1, int(lease_ttl * 1000))
        self._max_wait = 2 * lease_ttl
        self._observer = observer

    async def coordinate(
        self,
        key: str,
        produce: Produce,
        *,
        accept: Callable[[CachedToken], bool],
        patience: Patience,
    ) -> CachedToken:
        value_key, lease_key = self._values.keys(key)
        owner = f"{self._origin}:{secrets.token_hex(8)}"
        mode = "get"
        answered = False  # whether Redis said anything about the key
        asked = False  # an ACQUIRE is on its way: it may take the lease without telling us
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._max_wait

        def left() -> float:
            """Seconds until the wait ends: the patience, or 2 x lease_ttl."""
            remaining = patience.remaining()
            cap = give_up_at - loop.time()
            return cap if remaining is None else min(cap, remaining)

        def acquire() -> Awaitable[Any]:
            return self._client.eval(  # type: ignore[no-any-return]
                ACQUIRE, 2, value_key, lease_key, owner, self._lease_ms, mode
            )

        try:
            # NOTE: whatever the callers' deadlines, waiting on another replica ends after
            # 2 x lease_ttl: a lease that someone keeps alive (or pinned with a long expiry)
            # costs a duplicate exchange, never a caller hung on it.
            async with patience.scope(), asyncio.timeout_at(give_up_at):
                await self._events.started(self._timeout)
                while True:
                    with self._events.watch(key) as woken:
                        seen = self._l1.evictions
                        asked = True
                        reply = await self._run(acquire)
                        asked, answered = False, True
                        state, value_ms, blob, lease_ms = (
                            int(reply[0]),
                            int(reply[1]),
                            reply[2],
                            int(reply[3]),
                        )
                        report_damage(key, state, lease_ms, damaged=int(reply[4]) == 1)
                        token = self._values.open(key, value_key, blob) if blob else None
                        if token is not None and accept(token):
                            if state == _ACQUIRED:  # taken needlessly: let it go at once
                                self._values.spawn(self._release(key, owner))
                            if self._l1.fill(key, token, value_ms / 1000, seen):
                                self._observer.store_outcome("from_redis")
                                return token
                            mode = "get"  # evicted while we read: look again
                            continue
                        if state == _ACQUIRED:
                            break
                        if left() <= 0:
                            raise TimeoutError  # see the module docstring
                        if state == VALUE:
                            mode = "take"  # there, but not good enough: replace it
                            continue
                        self._observer.store_outcome("waited")
                        # Until the lease ends, or the next poll, but never sooner than the
                        # floor: each look is a round trip to the Redis that every replica uses.
                        wait = max(POLL_FLOOR, min(lease_ms / 1000, self._events.poll_interval()))
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(min(wait, left())):
                                await woken.wait()
                        if left() <= 0:
                            raise TimeoutError
                        mode = "get"
        except TimeoutError:
            self._observer.store_outcome("impatient")
            if asked:
                # The wait ended during an ACQUIRE, which may have taken the lease for us: let
                # it go at once (compare-and-delete: never another replica's), so the other
                # replicas need not wait up to lease_ttl for a lease nobody renews.
                self._values.spawn(self._release(key, owner))
            # A slow Redis that never answered is as good as a down one for our own entry;
            # once Redis said the value is gone (evicted), the entry is not served again.
            if not answered and (stale := self.stale(key, accept)) is not None:
                return stale
            _log.debug("gave up waiting for another replica's exchange of %s", log_ref(key))
            return await self._produce_here(key, produce, owner)
        except RedisUnavailable:
            self._observer.store_outcome("unavailable")
            if (stale := self.stale(key, accept)) is not None:
                return stale
            return await self._produce_here(key, produce, owner)
        return await self._produce_leased(key, produce, owner, patience)

    def stale(self, key: str, accept: Callable[[CachedToken], bool]) -> CachedToken | None:
        """Our L1 entry past its recheck time, while Redis cannot confirm it (still usable)."""
        token = self._l1.get_local(key, stale_ok=True)
        if token is None or not accept(token):
            return None
        self._observer.store_outcome("stale")
        return token

    async def _produce_leased(
        self, key: str, produce: Produce, owner: str, patience: Patience
    ) -> CachedToken:
        _, lease_key = self._values.keys(key)
        self._observer.store_outcome("leased")
        renewal = self._values.spawn(self._renew(lease_key, owner))
        try:
            token, ttl = await produce()
        except BaseException:
            renewal.cancel()
            # The waiters try at once instead of waiting for the lease to end.
            self._values.spawn(self._release(key, owner))
            raise
        renewal.cancel()
        self._l1.put(key, token, ttl)
        if ttl > 0:
            stored = self._values.spawn(self._values.write(key, token, ttl, owner=owner))
        else:
            stored = self._values.spawn(self._release(key, owner))
        # Wait for the write while the callers can afford it (never fail for it): a caller
        # that invalidates right after must not race our own write.
        remaining = patience.remaining()
        if remaining is None or remaining > 0:
            await asyncio.wait({stored}, timeout=remaining)
        return token

    async def _produce_here(self, key: str, produce: Produce, owner: str) -> CachedToken:
        """Exchange without the lease (Redis down, or patience spent): share it if possible."""
        token, ttl = await produce()
        self._l1.put(key, token, ttl)
        if ttl > 0 and not self._values.down():
            # Also releases a lease of ours that a late ACQUIRE took after our release.
            self._values.spawn(self._values.write(key, token, ttl, owner=owner))
        return token

    async def _renew(self, lease_key: str, owner: str) -> None:
        while True:
            await asyncio.sleep(self._lease_ttl / 3)
            try:
                still_ours = await self._run(
                    lambda: self._client.eval(RENEW, 1, lease_key, owner, self._lease_ms)
                )
            except RedisUnavailable:
                continue
            if not still_ours:
                return  # it ended while Redis was away; another replica may hold it now

    async def _release(self, key: str, owner: str) -> None:
        _, lease_key = self._values.keys(key)
        message = self._events.message("rel", key)
        with contextlib.suppress(RedisUnavailable):
            await self._run(
                lambda: self._client.eval(RELEASE, 1, lease_key, owner, self._channel, message)
            )
