"""The verified-token cache: a repeat token costs a dict lookup, not an RSA verify.

Keyed by the token string itself, in this process only: Python's string hash is keyed per
process (SipHash with a random seed), and a hit needs an exact string comparison, so no crafted
token can collide its way to another's identity; the entry holds the token anyway (as the
On-Behalf-Of assertion), so the key adds no exposure. Hashing each token with SHA-256 first cost
more than the lookup itself (benchmarks/server_bench.py). Anything persisted or shared keys by
SHA-256 instead (the On-Behalf-Of cache). An entry is good until the token's `exp` (plus the same
leeway a fresh validation allows), checked against the clock on every hit, and only while the
key material that verified it is still published: when a key leaves the JWKS its tokens are
verified again (and fail) instead of living on here.

Bounded twice, least recently used first out: by a count (`verified_cache_size`) and by a memory
budget (`verified_cache_bytes`). An entry's charge is the token's own size (the token string is
most of an entry) plus `ENTRY_OVERHEAD`, the rest of an entry as measured with tracemalloc
(benchmarks/scale_bench.py): the Identity and the per-user strings it keeps (oid, sub, names),
the dict slot. What all users of a tenant and application share (tenant id, issuer, audience,
client id, scope sets) is shared, not copied (`_rules.py`).
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable

from grpc_obo._identity import Identity

__all__ = ["ENTRY_OVERHEAD", "VerifiedTokenCache"]

ENTRY_OVERHEAD = 800
"""Bytes an entry holds beyond its token string (measured ~700 with Entra-shaped tokens)."""

# identity, expiry (epoch seconds), the fingerprint of the key that verified it, bytes charged
_Entry = tuple[Identity, int, str, int]


class VerifiedTokenCache:
    """Bounded LRU of token -> verified identity. Single event loop; no locking needed."""

    def __init__(
        self,
        max_size: int,
        *,
        leeway: float,
        has_key: Callable[[str], bool],
        max_bytes: int | None = None,
    ) -> None:
        self._max_size = max_size
        self._max_bytes = max_bytes
        self._leeway = leeway
        self._has_key = has_key  # whether key material is still published
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """The bytes charged for the entries held now (see `ENTRY_OVERHEAD`)."""
        return self._bytes

    def get(self, token: str, now: float) -> Identity | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if now > entry[1] + self._leeway or not self._has_key(entry[2]):
            # Expired or its key was withdrawn: forget it; a fresh validation decides the error.
            del self._entries[token]
            self._bytes -= entry[3]
            return None
        self._entries.move_to_end(token)
        return entry[0]

    def put(self, token: str, identity: Identity, *, key_fingerprint: str) -> None:
        if self._max_size <= 0:
            return
        charge = sys.getsizeof(token) + ENTRY_OVERHEAD
        if self._max_bytes is not None and charge > self._max_bytes:
            return
        entries = self._entries
        old = entries.pop(token, None)
        if old is not None:
            self._bytes -= old[3]
        entries[token] = (identity, identity.expires_at, key_fingerprint, charge)
        self._bytes += charge
        limit = self._max_bytes
        while len(entries) > self._max_size or (limit is not None and self._bytes > limit):
            self._bytes -= entries.popitem(last=False)[1][3]

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
