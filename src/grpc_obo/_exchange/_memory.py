"""The in-process token store: a bounded LRU behind aiocache's `BaseCache` interface.

Why not `aiocache.SimpleMemoryCache` as is: it is unbounded, and it expires each key with its own
`loop.call_later` timer, so 100,000 users would mean 100,000 timer handles in the event loop's
heap (memory, and O(log n) work on every loop iteration). Wrapping it would not fix either.
So `_BoundedMemoryCache` is a small `BaseCache` subclass over an `OrderedDict`: values keep their
deadline next to them and expire lazily on read, the least recently used entry is dropped when
`max_entries` is reached, and expired entries at the cold end are swept on each write. It still
goes through `BaseCache` (plugins, `AIOCACHE_DISABLE`, its debug logging of keys, which are
hashes here), so it behaves like any other aiocache backend.

Measured (benchmarks/cache_bench.py): ~450 bytes per entry on top of the access token string;
a hit through `TokenCache` costs ~3-5 µs at 1 to 100,000 entries.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from aiocache.base import BaseCache
from aiocache.serializers import NullSerializer

from grpc_obo._errors._checks import a_callable, a_whole_number
from grpc_obo._exchange._token import CachedToken

__all__ = ["MemoryTokenStore"]

# Expired entries removed from the cold end per write: bounded so a write stays O(1).
_SWEEP_PER_WRITE = 4


class _BoundedMemoryCache(BaseCache):  # type: ignore[misc]  # aiocache ships no type hints
    NAME = "grpc_obo_bounded_memory"

    def __init__(self, *, max_entries: int, clock: Callable[[], float], **kwargs: Any) -> None:
        # NOTE: timeout=None because there is no I/O to bound, and aiocache implements a timeout
        # with asyncio.wait_for, which costs a task per call on Python < 3.12.
        super().__init__(serializer=NullSerializer(), timeout=None, **kwargs)
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[object, float | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _live(self, key: str) -> object | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, deadline = entry
        if deadline is not None and self._clock() >= deadline:
            del self._entries[key]
            return None
        return value

    async def _get(self, key: str, encoding: str | None = "utf-8", _conn: Any = None) -> object:
        value = self._live(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    async def _gets(self, key: str, encoding: str | None = "utf-8", _conn: Any = None) -> object:
        return await self._get(key, encoding=encoding, _conn=_conn)

    async def _multi_get(
        self, keys: Iterable[str], encoding: str | None = "utf-8", _conn: Any = None
    ) -> list[object]:
        return [await self._get(key) for key in keys]

    async def _set(
        self,
        key: str,
        value: object,
        ttl: float | None = None,
        _cas_token: object = None,
        _conn: Any = None,
    ) -> bool:
        if _cas_token is not None and _cas_token != self._live(key):
            return False
        now = self._clock()
        self._entries[key] = (value, now + ttl if ttl else None)
        self._entries.move_to_end(key)
        self._sweep(now)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return True

    def _sweep(self, now: float) -> None:
        for _ in range(_SWEEP_PER_WRITE):
            oldest = next(iter(self._entries.items()), None)
            if oldest is None or oldest[1][1] is None or oldest[1][1] > now:
                return
            del self._entries[oldest[0]]

    async def _multi_set(
        self, pairs: Iterable[tuple[str, object]], ttl: float | None = None, _conn: Any = None
    ) -> bool:
        for key, value in pairs:
            await self._set(key, value, ttl=ttl)
        return True

    async def _add(
        self, key: str, value: object, ttl: float | None = None, _conn: Any = None
    ) -> bool:
        if self._live(key) is not None:
            raise ValueError("key already exists, use set to update the value")
        return await self._set(key, value, ttl=ttl)

    async def _exists(self, key: str, _conn: Any = None) -> bool:
        return self._live(key) is not None

    async def _expire(self, key: str, ttl: float, _conn: Any = None) -> bool:
        value = self._live(key)
        if value is None:
            return False
        self._entries[key] = (value, self._clock() + ttl if ttl else None)
        return True

    async def _delete(self, key: str, _conn: Any = None) -> int:
        return 1 if self._entries.pop(key, None) is not None else 0

    async def _clear(self, namespace: str | None = None, _conn: Any = None) -> bool:
        if namespace:
            for key in [k for k in self._entries if k.startswith(namespace)]:
                del self._entries[key]
        else:
            self._entries.clear()
        return True


class MemoryTokenStore:
    """Tokens in this process only, at most `max_entries` of them (least recently used go first).

    Memory (tracemalloc, benchmarks/cache_bench.py): each entry costs the access token string
    (one byte per character; Entra tokens are ~1.2-2.5 KB) plus ~450 bytes of overhead (key
    string, `CachedToken`, `SecretToken`, floats, the LRU node). Measured: 100,000 entries with
    1,500-character tokens = 2,001 bytes/entry, 191 MiB. Lower `max_entries` to cap it.
    """

    def __init__(self, *, max_entries: int = 100_000, clock: Callable[[], float] = time.time):
        self._cache = _BoundedMemoryCache(
            max_entries=a_whole_number("max_entries", max_entries),
            clock=a_callable("clock", clock, "a callable returning the time in seconds"),
        )

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def max_entries(self) -> int:
        """How many tokens this store keeps at most."""
        return int(self._cache._max_entries)

    def __repr__(self) -> str:
        return (
            f"MemoryTokenStore(entries={len(self._cache)}, max_entries={self._cache._max_entries})"
        )

    async def get(self, key: str) -> CachedToken | None:
        value = await self._cache.get(key)
        return value if isinstance(value, CachedToken) else None

    def get_nowait(self, key: str) -> CachedToken | None:
        """`get` without a coroutine: the hot path of every outbound call reads the dict itself.

        NOTE: this skips aiocache's wrappers (plugins, its debug log of keys), which cost ~8 µs
        of a ~9 µs hit; misses and writes still go through them.
        """
        cache = self._cache
        value = cache._live(key)
        if value is None:
            return None
        cache._entries.move_to_end(key)
        return value if isinstance(value, CachedToken) else None

    async def set(self, key: str, token: CachedToken, ttl: float) -> None:
        if ttl > 0:
            await self._cache.set(key, token, ttl=float(ttl))

    async def delete(self, key: str) -> None:
        await self._cache.delete(key)

    async def close(self) -> None:
        await self._cache.close()

    async def __aenter__(self) -> MemoryTokenStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
