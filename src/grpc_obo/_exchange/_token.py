"""`CachedToken`: the downstream access token as the exchange cache holds it.

Only the access token is kept. An OBO response also carries a refresh token and an ID token;
they are long-lived secrets we never need (the next exchange uses the incoming assertion), so
they are dropped before anything reaches a cache.

`encode()` / `decode()` are the value codec of the shared store: the JSON that `TokenSealer`
encrypts before it reaches Redis (it holds the raw token, so it exists only to be sealed).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from grpc_obo._identity import SecretToken

__all__ = ["CachedToken"]

_CODEC_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class CachedToken:
    """A downstream access token with its lifetime, as epoch seconds (`time.time()` scale)."""

    access_token: SecretToken
    expires_on: float
    """When the authority says the token stops being valid."""
    refresh_on: float
    """When to start a proactive refresh in the background (before `expires_on`)."""
    token_type: str = "Bearer"

    def __post_init__(self) -> None:
        if not isinstance(self.access_token, SecretToken):
            raise TypeError("access_token must be a SecretToken")
        if self.refresh_on > self.expires_on:
            # A refresh point after expiry would never fire; clamp so the invariant always holds.
            object.__setattr__(self, "refresh_on", self.expires_on)

    @classmethod
    def from_msal(cls, result: Mapping[str, Any], *, now: float | None = None) -> CachedToken:
        """Build from a successful MSAL result (`access_token`, `expires_in`, maybe `refresh_on`).

        MSAL turns the authority's `refresh_in` into an epoch `refresh_on`; when the authority
        sent neither, refresh at half the lifetime (MSAL's own rule for long-lived tokens).
        """
        now = time.time() if now is None else now
        # AAD v1-like endpoints send expires_in as a string; OAuth 2.0 says it is a number.
        expires_in = float(result["expires_in"])
        expires_on = now + expires_in
        if "refresh_on" in result:
            refresh_on = float(result["refresh_on"])
        elif "refresh_in" in result:
            refresh_on = now + float(result["refresh_in"])
        else:
            refresh_on = now + expires_in / 2
        return cls(
            access_token=SecretToken(str(result["access_token"])),
            expires_on=expires_on,
            refresh_on=refresh_on,
            # Interned: one "Bearer" for every cached token, not one per authority response.
            token_type=sys.intern(str(result.get("token_type") or "Bearer")),
        )

    def usable(self, now: float, margin: float) -> bool:
        """Whether the token is still good for at least `margin` seconds."""
        return now < self.expires_on - margin

    def due_for_refresh(self, now: float) -> bool:
        return now >= self.refresh_on

    def encode(self) -> bytes:
        """The plaintext the Redis store seals: it holds the raw token, never log or keep it."""
        return json.dumps(
            {
                "v": _CODEC_VERSION,
                "at": self.access_token.reveal(),
                "exp": self.expires_on,
                "ref": self.refresh_on,
                "typ": self.token_type,
            },
            separators=(",", ":"),
        ).encode("utf-8")

    @classmethod
    def decode(cls, plaintext: bytes) -> CachedToken | None:
        """The token `encode()` wrote, or None for anything else (another version, damage)."""
        try:
            data = json.loads(plaintext)
            if data.get("v") != _CODEC_VERSION:
                return None
            return cls(
                access_token=SecretToken(data["at"]),
                expires_on=float(data["exp"]),
                refresh_on=float(data["ref"]),
                token_type=str(data["typ"]),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
