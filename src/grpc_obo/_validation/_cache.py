"""The verified-token cache: a repeat token costs a dict lookup, not an RSA verify.

Keyed by the token string itself, in this process only: Python's string hash is keyed per
process (SipHash with a random seed), and a hit needs an exact string comparison, so no crafted
token can collide its way to another's identity; the entry holds the token anyway (as the
On-Behalf-Of assertion), so the key adds no exposure. Hashing each token with SHA-256 first cost
more than the lookup itself (benchmarks/server_bench.py). Anything persisted or shared keys by
SHA-256 instead (the On-Behalf-Of cache). Bounded by LRU eviction. An entry is
good until the token's `exp` (plus the same leeway a fresh validation allows), checked against
the clock on every hit, and only while the key material that verified it is still published:
when a key leaves the JWKS its tokens are verified again (and fail) instead of living on here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from grpc_obo._identity import Identity

__all__ = ["VerifiedTokenCache"]


@dataclass(frozen=True, slots=True)
class _Entry:
    identity: Identity
    expires_at: int
    key_fingerprint: str


class VerifiedTokenCache:
    """Bounded LRU of token -> verified identity. Single event loop; no locking needed."""

    def __init__(self, max_size: int, *, leeway: float, has_key: Callable[[str], bool]) -> None:
        self._max_size = max_size
        self._leeway = leeway
        self._has_key = has_key  # whether key material is still published
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: str, now: float) -> Identity | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if now > entry.expires_at + self._leeway or not self._has_key(entry.key_fingerprint):
            # Expired or its key was withdrawn: forget it; a fresh validation decides the error.
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return entry.identity

    def put(self, digest: str, identity: Identity, *, key_fingerprint: str) -> None:
        if self._max_size <= 0:
            return
        self._entries[digest] = _Entry(identity, identity.expires_at, key_fingerprint)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max_size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
