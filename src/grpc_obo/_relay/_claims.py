"""Claims challenges kept for later exchanges: filtered to what may reach the authority, bounded,
expiring, and forgotten once met."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from grpc_obo._common import LRU
from grpc_obo._identity import Identity

__all__ = ["KNOWN_CLAIMS", "ClaimsMemory", "remembered_claims"]

# Claims a resource may ask for in a claims challenge (Entra: CAE `nbf`, authentication context
# `acrs`, client capabilities `xms_cc`, Conditional Access policy ids `capolids`; OpenID
# Connect's `acr`, `amr`, `auth_time`). Anything else is dropped, not sent to the authority.
KNOWN_CLAIMS = frozenset({"acrs", "nbf", "xms_cc", "capolids", "acr", "amr", "auth_time"})
_MAX_CLAIMS = 1024  # bytes of the filtered JSON: Entra's challenges are under 200
_MAX_ITEM = 128  # characters of one value
_MAX_VALUES = 16


def remembered_claims(claims: str) -> str | None:
    """`claims` (a JSON claims request) reduced to what may go to the authority, or None.

    Keeps only the `access_token` member and, in it, `KNOWN_CLAIMS`, each a request of the form
    `{"essential": bool, "value": str, "values": [str, ...]}` with short values. Compact JSON of
    at most 1 KB; None when nothing usable is left.
    """
    try:
        parsed = json.loads(claims)
    except (ValueError, RecursionError):
        return None
    if not isinstance(parsed, dict):
        return None
    requested = parsed.get("access_token")
    if not isinstance(requested, dict):
        return None
    kept: dict[str, dict[str, object]] = {}
    for name in sorted(requested):
        request = _claim_request(requested[name]) if name in KNOWN_CLAIMS else None
        if request is not None:
            kept[name] = request
    if not kept:
        return None
    text = json.dumps({"access_token": kept}, separators=(",", ":"))
    return text if len(text) <= _MAX_CLAIMS else None


def _claim_request(request: object) -> dict[str, object] | None:
    if request is None:
        return {}  # `"acrs": null`: the claim, no constraint (OpenID Connect claims requests)
    if not isinstance(request, dict):
        return None
    kept: dict[str, object] = {}
    for key, item in request.items():
        if (
            (key == "essential" and isinstance(item, bool))
            or (key == "value" and _short(item))
            or (
                key == "values"
                and isinstance(item, list)
                and 0 < len(item) <= _MAX_VALUES
                and all(_short(v) for v in item)
            )
        ):
            kept[key] = item
        else:
            return None  # an unknown member or a bad value: the request is not understood
    return kept


def _short(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_ITEM and value.isprintable()


class ClaimsMemory:
    """Claims challenges per (user, scope set), for the next exchanges of that user.

    Bounded (oldest forgotten first), expiring after `ttl` seconds on `clock`, and forgotten
    once an exchange that carried them succeeded (`forget`): a downstream cannot make the
    middle tier send claims for a user for longer than it takes to meet them once.
    """

    def __init__(
        self,
        *,
        max_entries: int = 1000,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._claims: LRU[tuple[str, tuple[str, ...]], tuple[str, float]] = LRU(max_entries)

    def __len__(self) -> int:
        return len(self._claims)

    def get(self, identity: Identity | None, scopes: tuple[str, ...]) -> str | None:
        if not self._claims or identity is None:
            return None
        key = (identity.principal, scopes)
        entry = self._claims.peek(key)  # first in, first out: a read does not renew it
        if entry is None:
            return None
        if self._clock() >= entry[1]:
            self._claims.pop(key)
            return None
        return entry[0]

    def put(self, identity: Identity, scopes: tuple[str, ...], claims: str | None) -> None:
        """Remember `claims` (already filtered by `remembered_claims`); None does nothing."""
        if claims is None:
            return
        self._claims.put((identity.principal, scopes), (claims, self._clock() + self._ttl))

    def forget(self, identity: Identity | None, scopes: tuple[str, ...], claims: str) -> None:
        """An exchange carrying `claims` succeeded: they are met, stop asking for them."""
        if identity is None:
            return
        key = (identity.principal, scopes)
        entry = self._claims.peek(key)
        if entry is not None and entry[0] == claims:
            self._claims.pop(key)
