"""Cache key derivation for On-Behalf-Of results: a pure function, no I/O.

The key is a SHA-256 over a canonical JSON array of every input that changes the answer the
authority would give: the incoming assertion, our client id, the authority, the scopes (as a set)
and the claims challenge. JSON arrays are unambiguous (strings are quoted and escaped), so no two
different inputs encode to the same bytes. The raw assertion never appears in the key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from grpc_obo._errors import ConfigurationError
from grpc_obo._identity import SecretToken

__all__ = ["OBO_KEY_PREFIX", "log_ref", "obo_cache_key"]

OBO_KEY_PREFIX = "grpc_obo:obo:v1:"
"""Namespace + format version; bump the version whenever the encoding below changes."""


def obo_cache_key(
    *,
    assertion: SecretToken,
    client_id: str,
    authority: str,
    scopes: Iterable[str],
    claims: str | None = None,
) -> str:
    """The cache key for one OBO exchange: `grpc_obo:obo:v1:` + 64 hex characters.

    Scope order and duplicates do not matter (the authority treats scopes as a set); every
    other field is taken exactly as given.
    """
    if isinstance(scopes, str):
        # A bare string would iterate as characters and silently produce a nonsense key.
        raise ConfigurationError("scopes must be a collection of strings, not a string")
    scope_set = sorted(set(scopes))
    if not scope_set:
        raise ConfigurationError("an On-Behalf-Of exchange needs at least one scope")
    canonical = json.dumps(
        [assertion.reveal(), client_id, authority, scope_set, claims],
        ensure_ascii=True,
        separators=(",", ":"),
    )
    return OBO_KEY_PREFIX + hashlib.sha256(canonical.encode("ascii")).hexdigest()


def log_ref(key: str) -> str:
    """A short, stable reference to a cache key for log lines (a hash of it, whatever it is)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
