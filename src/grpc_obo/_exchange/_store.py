"""`TokenStore`: the small interface `TokenCache` needs from a storage backend.

Implementations: the bounded in-process `MemoryTokenStore` (on aiocache's `BaseCache`) and the
shared `RedisTokenStore` (an in-process level in front of Redis). A store is a best-effort
cache: `get` answers None for anything it cannot return safely (missing, expired,
undecryptable, backend down) and never raises for those; the caller then fetches a fresh token.

A store shared by replicas may also implement `SharedTokenStore`: then `TokenCache` lets it
decide, on a miss, whether this replica exchanges or waits for another one's exchange.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from grpc_obo._errors import ConfigurationError
from grpc_obo._exchange._singleflight import Patience
from grpc_obo._exchange._token import CachedToken

__all__ = ["Produce", "SharedTokenStore", "TokenStore", "a_store", "shared_store"]

Produce = Callable[[], Awaitable[tuple[CachedToken, float]]]
"""Runs the exchange: the token and how many seconds it may be cached (<= 0: not at all)."""


class TokenStore(Protocol):
    async def get(self, key: str) -> CachedToken | None:
        """The token stored under `key`, or None (never raises for a backend problem)."""
        ...

    async def set(self, key: str, token: CachedToken, ttl: float) -> None:
        """Store `token` for `ttl` seconds (> 0); failures are logged, not raised."""
        ...

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...


class SharedTokenStore(TokenStore, Protocol):
    """A store that replicas share, with a level in this process in front of it."""

    def get_nowait(self, key: str) -> CachedToken | None:
        """The in-process entry, if it needs no check with the shared level (no I/O)."""
        ...

    def get_local(self, key: str) -> CachedToken | None:
        """The in-process entry, also past its recheck time while the shared level is down."""
        ...

    async def coordinate(
        self,
        key: str,
        produce: Produce,
        *,
        accept: Callable[[CachedToken], bool],
        patience: Patience,
    ) -> CachedToken:
        """A token for `key` that `accept` takes: stored by any replica, or from `produce`.

        At most one replica runs `produce` for a key at a time while the shared level works;
        waiting on another replica ends at `patience`, then this one produces. Errors of
        `produce` propagate; the shared level's own failures never do.
        """
        ...


_STORE_METHODS = ("get", "set", "delete", "close")


def a_store(value: object, setting: str = "store") -> TokenStore:
    """`value` if it has what `TokenCache` calls on a store, else a `ConfigurationError` naming
    `setting` (a `TokenCache` is not a store: it is given as `cache=`)."""
    if isinstance(value, type) or not all(
        callable(getattr(value, name, None)) for name in _STORE_METHODS
    ):
        raise ConfigurationError(
            f"{setting} must be a token store (MemoryTokenStore, RedisTokenStore, or an object "
            "with async get, set, delete and close)",
            setting=setting,
        )
    return value  # type: ignore[return-value]  # checked structurally just above


def shared_store(store: TokenStore) -> SharedTokenStore | None:
    """`store` if it implements `SharedTokenStore`, else None."""
    if all(callable(getattr(store, name, None)) for name in ("get_local", "coordinate")):
        return store  # type: ignore[return-value]  # checked structurally just above
    return None
