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

A shared store (`RedisTokenStore`: an in-process level in front of Redis) also takes part in
the single flight across replicas: on a miss, the production asks the store to `coordinate`,
which either finds the token, takes a short lease in Redis and runs `fetch`, or waits for the
replica holding the lease. That wait ends at the production's patience (half of the shortest
deadline among the callers waiting on it, see `Patience`), after which this replica exchanges
itself: a caller's deadline is never spent entirely on another replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

from grpc_obo._errors._checks import a_callable, a_number
from grpc_obo._exchange._keys import log_ref
from grpc_obo._exchange._memory import MemoryTokenStore
from grpc_obo._exchange._observe import AcquisitionNote
from grpc_obo._exchange._singleflight import Patience, SingleFlight
from grpc_obo._exchange._store import SharedTokenStore, TokenStore, a_store, shared_store
from grpc_obo._exchange._token import CachedToken

__all__ = ["TokenCache"]

_log = logging.getLogger("grpc_obo.exchange.cache")

Fetch = Callable[[], Awaitable[CachedToken]]

PATIENCE_SHARE = 0.5
"""Share of a caller's remaining time it may spend waiting on another replica's exchange."""


class TokenCache:
    """Exchanged tokens by cache key: one fetch per key at a time, refreshed before expiry.

    `key` must be derived from everything `fetch` depends on (see `obo_cache_key`): callers
    with the same key share one fetch and its result. `fetch` may also run in the background
    for a proactive refresh, after the request that supplied it has finished.

    A `store` passed in stays the caller's: several caches may share it, and `close()` leaves
    it open (it closes the in-process store it builds when given none).
    """

    def __init__(
        self,
        *,
        store: TokenStore | None = None,
        margin: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._margin = a_number("margin", margin)
        self._clock = a_callable("clock", clock, "a callable returning the time in seconds")
        # NOTE: a store passed in is the caller's: it may serve other caches (an `OnBehalfOf`
        # and an `AppOnly` sharing one Redis store), so `close()` closes only a store built here.
        self._owns_store = store is None
        self._store: TokenStore = (
            a_store(store) if store is not None else MemoryTokenStore(clock=clock)
        )
        # Looked up once: `peek` is the hot path of every outbound call.
        self._get_nowait: Callable[[str], CachedToken | None] | None = getattr(
            self._store, "get_nowait", None
        )
        self._shared: SharedTokenStore | None = shared_store(self._store)
        self._flight: SingleFlight[CachedToken] = SingleFlight()
        self._patience: dict[str, Patience] = {}
        # Strong references to background refreshes: the event loop keeps only weak ones.
        self._background: set[asyncio.Task[CachedToken]] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"TokenCache(store={self._store!r}, margin={self._margin})"

    @property
    def store(self) -> TokenStore:
        return self._store

    @property
    def margin(self) -> float:
        return self._margin

    @property
    def max_entries(self) -> int | None:
        """How many tokens the store keeps in this process at most (its `max_entries`, or the
        Redis store's `l1_max_entries`); None for a store without such a bound."""
        bound = getattr(self._store, "max_entries", None)
        return bound if isinstance(bound, int) else None

    def peek(self, key: str) -> CachedToken | None:
        """A cached token that needs no work at all (usable, not due for refresh), or None.

        Synchronous: only stores that can answer without I/O (the memory store, the in-process
        level of the Redis store) take part; None means "call `get_or_fetch`", which also
        handles refreshes and single flight.
        """
        get_nowait = self._get_nowait
        if get_nowait is None:
            return None
        token = get_nowait(key)
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
        self,
        key: str,
        fetch: Fetch,
        *,
        note: AcquisitionNote | None = None,
        timeout: float | None = None,
    ) -> CachedToken:
        """A usable token for `key`: from the cache, or from the one running `fetch` for it.

        Errors from `fetch` reach every caller waiting on that production and are not cached.
        Cancelling a caller does not cancel the fetch other callers wait on. `note.source` is
        set to where the token came from: "cache", "authority" (this caller's fetch ran) or
        "single_flight" (another caller's fetch, joined).

        `timeout` is how long this caller will wait (the caller enforces it): with a shared
        store, waiting on another replica's exchange stops early enough to exchange here.
        """
        if self._closed:
            raise RuntimeError("TokenCache is closed")
        shared = self._shared
        token = shared.get_local(key) if shared is not None else await self._store.get(key)
        now = self._clock()
        if token is not None and token.usable(now, self._margin):
            if token.due_for_refresh(now):
                self._refresh_in_background(key, fetch)
            return token
        if note is None:
            return await self._join(key, fetch, timeout)
        joined = self._flight.running(key)
        fetched = False

        async def counted() -> CachedToken:
            nonlocal fetched
            fetched = True
            return await fetch()

        try:
            return await self._join(key, counted, timeout)
        finally:
            note.source = "authority" if fetched else "single_flight" if joined else "cache"

    async def invalidate(self, key: str) -> None:
        """Forget the token for `key` (e.g. the downstream answered with a claims challenge).

        With a shared store the eviction reaches every replica (see `RedisTokenStore`).
        """
        await self._store.delete(key)

    async def close(self) -> None:
        """Stop background refreshes and running fetches; close the store if this cache built
        it (the default in-process one). A store passed in is left open: close it yourself."""
        self._closed = True
        await self._flight.cancel_all()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._owns_store:
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

    def _join(self, key: str, fetch: Fetch, timeout: float | None) -> Awaitable[CachedToken]:
        """Join (or start) the production for `key`; its patience follows the callers'."""
        if self._shared is None:
            return self._flight.do(key, lambda: self._produce(key, fetch, refreshing=False))
        until = None
        if timeout is not None:
            until = asyncio.get_running_loop().time() + max(0.0, timeout) * PATIENCE_SHARE
        patience = self._patience.get(key) if self._flight.running(key) else None
        if patience is not None:
            patience.shorten(until)
            return self._flight.do(key, lambda: self._produce(key, fetch, refreshing=False))
        return asyncio.shield(self._start(key, fetch, Patience(until), refreshing=False))

    def _start(
        self, key: str, fetch: Fetch, patience: Patience, *, refreshing: bool
    ) -> asyncio.Task[CachedToken]:
        """Start a production for `key` with its own patience (none may be running)."""
        self._patience[key] = patience
        task = self._flight.start(
            key, lambda: self._produce(key, fetch, refreshing=refreshing, patience=patience)
        )
        task.add_done_callback(lambda _: self._forget_patience(key, patience))
        return task

    def _forget_patience(self, key: str, patience: Patience) -> None:
        if self._patience.get(key) is patience:
            del self._patience[key]

    async def _produce(
        self, key: str, fetch: Fetch, *, refreshing: bool, patience: Patience | None = None
    ) -> CachedToken:
        if self._shared is not None:
            return await self._produce_shared(
                self._shared, key, fetch, refreshing=refreshing, patience=patience or Patience()
            )
        # Re-check inside the flight: a flight that ended between our miss and now, or another
        # replica sharing the store, may already have put a fresh token there.
        cached = await self._store.get(key)
        if cached is not None and self._acceptable(cached, refreshing=refreshing):
            return cached
        token, ttl = await self._fetched(key, fetch)
        if ttl > 0:
            await self._store.set(key, token, ttl)
        return token

    async def _produce_shared(
        self,
        store: SharedTokenStore,
        key: str,
        fetch: Fetch,
        *,
        refreshing: bool,
        patience: Patience,
    ) -> CachedToken:
        return await store.coordinate(
            key,
            lambda: self._fetched(key, fetch),
            accept=lambda token: self._acceptable(token, refreshing=refreshing),
            patience=patience,
        )

    def _acceptable(self, token: CachedToken, *, refreshing: bool) -> bool:
        now = self._clock()
        if not token.usable(now, self._margin):
            return False
        return not (refreshing and token.due_for_refresh(now))

    async def _fetched(self, key: str, fetch: Fetch) -> tuple[CachedToken, float]:
        """Run `fetch`; the token and how long to cache it (<= 0: not at all)."""
        token = await fetch()
        if not isinstance(token, CachedToken):
            raise TypeError("fetch must return a CachedToken")
        ttl = token.expires_on - self._clock() - self._margin
        if ttl <= 0:
            _log.info(
                "token for %s expires within the %.0f s margin; returned but not cached",
                log_ref(key),
                self._margin,
            )
        return token, ttl

    def _refresh_in_background(self, key: str, fetch: Fetch) -> None:
        if self._closed or self._flight.running(key):
            return
        if self._shared is not None:
            task = self._start(key, fetch, Patience(), refreshing=True)
        else:
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
