"""`Outcomes`: what a `RedisTokenStore` did on its misses, counted by a test (or a test process).

Pass one as the store's `observer`; it counts the fixed words the store reports (`from_redis`,
`leased`, `waited`, `impatient`, `unavailable`, `stale`), never a key or a token.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["Outcomes"]


class Outcomes(Counter[str]):
    def store_outcome(self, outcome: str) -> None:
        self[outcome] += 1
