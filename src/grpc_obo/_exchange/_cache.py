"""`TokenCache`: cache-or-fetch for exchanged tokens, single-flighted, with proactive refresh.

    get_or_fetch(key, fetch)
      ├── store hit, usable ──────────────▶ return it (and, past refresh_on, start one
      │                                     background refresh for the key)
      └── miss ─▶ single flight per key ─▶ re-check the store (another flight or replica may
                                           have stored it) ─▶ fetch() ─▶ store with
                                           TTL = expires_on - now - margin ─▶ every waiter

"Usable" means valid for more than `margin` more seconds, the same instant the store's TTL ends,
so a token close to expiry is never handed out from the cache, and never stored at all.
A failed background refresh keeps serving the cached token until it stops being usable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

from grpc_obo._errors import ConfigurationError
from grpc_obo._exchange._keys import log_ref
from grpc_obo._exchange._memory import MemoryTokenStore
from grpc_obo._exchange._observe import AcquisitionNote
from grpc_obo._exchange._singleflight import SingleFlight
from grpc_obo._exchange._store import TokenStore
from grpc_obo._exchange._token import CachedToken

__all__ = ["TokenCache"]

_log = logging.getLogger("grpc_obo.exchange.cache")

Fetch = Callable[[], Awaitable[CachedToken]]


class TokenCache:
    """Exchanged tokens by cache key: one fetch per key at a time, refreshed before expiry.

    `key` must be derived from everything `fetch` depends on (see `obo_cache_key`): callers
    with the same key share one fetch and its result. `fetch` may also run in the background
    for a proactive refresh, after the request that supplied it has finished.
    """

    def __init__(
        self,
        *,
        store: TokenStore | None = None,
        margin: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if margin < 0:
            raise ConfigurationError("margin must not be negative")
        self._store: TokenStore = store if store is not None else MemoryTokenStore(clock=clock)
        self._margin = float(margin)
        self._clock = clock
        self._flight: SingleFlight[CachedToken] = SingleFlight()
        # Strong references to background refreshes: the event loop keeps only weak ones.
        self._background: set[asyncio.Task[CachedToken]] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"TokenCache(store={self._store!r}, margin={self._margin})"

    @property
    def store(self) -> TokenStore:
        return self._store

    def peek(self, key: str) -> CachedToken | None:
        """A cached token that needs no work at all (usable, not due for refresh), or None.

        Synchronous: only stores that can answer without I/O (the memory store) take part;
        None means "call `get_or_fetch`", which also handles refreshes and single flight.
        """
        get_nowait = getattr(self._store, "get_nowait", None)
        if get_nowait is None:
            return None
        token: CachedToken | None = get_nowait(key)
        if token is None:
            return None
        now = self._clock()
        if token.usable(now, self._margin) and not token.due_for_refresh(now):
            return token
        return None

    async def get(self, key: str) -> CachedToken | None:
        """The cached token if it is usable now, without fetching or refreshing."""
        token = await self._store.get(key)
        if token is not None and token.usable(self._clock(), self._margin):
            return token
        return None

    async def get_or_fetch(
        self, key: str, fetch: Fetch, *, note: AcquisitionNote | None = None
    ) -> CachedToken:
        """A usable token for `key`: from the cache, or from the one running `fetch` for it.

        Errors from `fetch` reach every caller waiting on that production and are not cached.
        Cancelling a caller does not cancel the fetch other callers wait on. `note.source` is
        set to where the token came from: "cache", "authority" (this caller's fetch ran) or
        "single_flight" (another caller's fetch, joined).
        """
        if self._closed:
            raise RuntimeError("TokenCache is closed")
        token = await self._store.get(key)
        now = self._clock()
        if token is not None and token.usable(now, self._margin):
            if token.due_for_refresh(now):
                self._refresh_in_background(key, fetch)
            return token
        if note is None:
            return await self._flight.do(key, lambda: self._produce(key, fetch, refreshing=False))
        joined = self._flight.running(key)
        fetched = False

        async def counted() -> CachedToken:
            nonlocal fetched
            fetched = True
            return await fetch()

        try:
            return await self._flight.do(key, lambda: self._produce(key, counted, refreshing=False))
        finally:
            note.source = "authority" if fetched else "single_flight" if joined else "cache"

    async def invalidate(self, key: str) -> None:
        """Forget the token for `key` (e.g. the downstream answered with a claims challenge)."""
        await self._store.delete(key)

    async def close(self) -> None:
        """Stop background refreshes and running fetches, then close the store."""
        self._closed = True
        await self._flight.cancel_all()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._store.close()

    async def __aenter__(self) -> TokenCache:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _produce(self, key: str, fetch: Fetch, *, refreshing: bool) -> CachedToken:
        # Re-check inside the flight: a flight that ended between our miss and now, or another
        # replica sharing the store, may already have put a fresh token there.
        cached = await self._store.get(key)
        now = self._clock()
        fresh_enough = not (refreshing and cached is not None and cached.due_for_refresh(now))
        if cached is not None and cached.usable(now, self._margin) and fresh_enough:
            return cached
        token = await fetch()
        if not isinstance(token, CachedToken):
            raise TypeError("fetch must return a CachedToken")
        ttl = token.expires_on - self._clock() - self._margin
        if ttl > 0:
            await self._store.set(key, token, ttl)
        else:
            _log.info(
                "token for %s expires within the %.0f s margin; returned but not cached",
                log_ref(key),
                self._margin,
            )
        return token

    def _refresh_in_background(self, key: str, fetch: Fetch) -> None:
        if self._closed or self._flight.running(key):
            return
        task = self._flight.start(key, lambda: self._produce(key, fetch, refreshing=True))
        self._background.add(task)
        task.add_done_callback(lambda done: self._refreshed(key, done))

    def _refreshed(self, key: str, task: asyncio.Task[CachedToken]) -> None:
        self._background.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            # Only the type: the cached token is still usable and keeps being served.
            _log.warning(
                "background refresh for %s failed (%s); keeping the cached token",
                log_ref(key),
                type(error).__name__,
            )
