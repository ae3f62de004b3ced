"""`LocalTier`: the in-process level (L1) in front of a shared store (L2, Redis).

Each entry keeps two instants beside the token:

- `drop_at`: the end of the token's cached life, `expires_on - margin` as the L2 TTL says; an
  entry is never served after it, whatever else happens;
- `recheck_at`: at most `ttl` (a few seconds) after the entry was filled from L2 or written:
  the backstop for an invalidation notification this process missed. Past it, the hot path
  (`get_nowait`) answers None and the caller reads L2 again; while L2 cannot be reached, the
  entry keeps being served until `drop_at` (`get_local(stale_ok=True)`), since no replica can
  change L2 then anyway.

Evictions are numbered (`evict`, `evictions`): a value read from L2 goes in with `fill`, which
refuses it when its key was evicted after the read began, so a read racing an eviction never
brings the evicted token back.

The hot path is the same dict read as `MemoryTokenStore.get_nowait`: no aiocache wrapper, no
coroutine. Bounded like the memory store: least recently used entries go first at
`max_entries`, and a few expired entries at the cold end are swept on each write.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from grpc_obo._errors import ConfigurationError
from grpc_obo._exchange._token import CachedToken

__all__ = ["LocalTier"]

_SWEEP_PER_WRITE = 4
_MAX_RECENT_EVICTIONS = 4_096

# (token, recheck_at, drop_at): a tuple, the cheapest thing to unpack on the hot path.
_Entry = tuple[CachedToken, float, float]


class LocalTier:
    def __init__(self, *, max_entries: int, ttl: float, clock: Callable[[], float]) -> None:
        if max_entries < 1:
            raise ConfigurationError("l1_max_entries must be at least 1")
        if ttl <= 0:
            raise ConfigurationError("l1_ttl must be positive")
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._max_entries = max_entries
        self._ttl = float(ttl)
        self._clock = clock
        self._evictions = 0
        self._evicted: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def max_entries(self) -> int:
        return self._max_entries

    def get_nowait(self, key: str) -> CachedToken | None:
        """The token if the entry is within its recheck time (the hot path: a dict read)."""
        entry = self._entries.get(key)
        if entry is None or self._clock() >= entry[1]:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def get_local(self, key: str, *, stale_ok: bool) -> CachedToken | None:
        """Like `get_nowait`; with `stale_ok`, also past the recheck time (until `drop_at`)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        if now >= entry[2]:
            del self._entries[key]
            return None
        if now < entry[1] or stale_ok:
            self._entries.move_to_end(key)
            return entry[0]
        return None

    def put(self, key: str, token: CachedToken, ttl: float) -> None:
        """Keep `token` for at most `ttl` seconds (its remaining cached life); recheck sooner."""
        if ttl <= 0:
            self._entries.pop(key, None)
            return
        now = self._clock()
        self._entries[key] = (token, now + min(ttl, self._ttl), now + ttl)
        self._entries.move_to_end(key)
        self._sweep(now)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def discard(self, key: str) -> None:
        self._entries.pop(key, None)

    @property
    def evictions(self) -> int:
        """How many evictions so far: a read from L2 notes it before it starts (see `fill`)."""
        return self._evictions

    def evict(self, key: str) -> None:
        """Forget `key`, and refuse any value for it read from L2 before now."""
        self._entries.pop(key, None)
        self._evictions += 1
        self._evicted[key] = self._evictions
        self._evicted.move_to_end(key)
        while len(self._evicted) > _MAX_RECENT_EVICTIONS:
            self._evicted.popitem(last=False)

    def fill(self, key: str, token: CachedToken, ttl: float, seen: int) -> bool:
        """`put` a value read from L2, unless `key` was evicted since `seen` (the read began)."""
        if self._evicted.get(key, 0) > seen:
            return False
        self.put(key, token, ttl)
        return True

    def recheck_all(self) -> None:
        """Make every entry go back to L2 before the hot path serves it again.

        Used when invalidation notifications may have been missed (the subscription was down):
        entries stay available as stale fallbacks while L2 cannot be reached.
        """
        entries = self._entries
        for key, (token, _recheck, drop) in entries.items():
            entries[key] = (token, 0.0, drop)

    def clear(self) -> None:
        self._entries.clear()

    def _sweep(self, now: float) -> None:
        for _ in range(_SWEEP_PER_WRITE):
            oldest = next(iter(self._entries.items()), None)
            if oldest is None or oldest[1][2] > now:
                return
            del self._entries[oldest[0]]
