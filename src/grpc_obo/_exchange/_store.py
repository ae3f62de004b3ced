"""`TokenStore`: the small interface `TokenCache` needs from a storage backend.

Implementations (`MemoryTokenStore`, `RedisTokenStore`) sit on aiocache backends. A store is a
best-effort cache: `get` answers None for anything it cannot return safely (missing, expired,
undecryptable, backend down) and never raises for those; the caller then fetches a fresh token.
"""

from __future__ import annotations

from typing import Protocol

from grpc_obo._exchange._token import CachedToken

__all__ = ["TokenStore"]


class TokenStore(Protocol):
    async def get(self, key: str) -> CachedToken | None:
        """The token stored under `key`, or None (never raises for a backend problem)."""
        ...

    async def set(self, key: str, token: CachedToken, ttl: float) -> None:
        """Store `token` for `ttl` seconds (> 0); failures are logged, not raised."""
        ...

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...
