"""Refresh tokens as Entra keeps them: opaque, single-use (each redemption rotates to a new one),
bound to their client, void after a password change or a session revocation (AADSTS50173),
expiring after `REFRESH_TOKEN_LIFETIME` of inactivity (AADSTS700082), and bounded in memory.

Only SHA-256 digests of the tokens are held; nothing here logs or repeats a token.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from grpc_obo.devauthority._oauth import OAuthError
from grpc_obo.devauthority._registrations import User

REFRESH_TOKEN_LIFETIME = 90 * 24 * 3600
"""Seconds a refresh token lives unused (Entra: 90 days); each redemption gives a new one."""
MAX_REFRESH_TOKENS = 20_000
"""Refresh tokens held at most; beyond it the oldest are forgotten (memory stays bounded)."""


@dataclass(frozen=True)
class RefreshGrant:
    """What a refresh token stands for."""

    user_oid: str
    tenant_id: str
    client_id: str
    resource_client_id: str
    resource_prefix: str
    scopes: frozenset[str]
    amr: tuple[str, ...]
    credential_version: str
    issued_at: float
    expires_at: float


class RefreshTokens:
    """The store of live refresh tokens (thread-safe)."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        lifetime: float = REFRESH_TOKEN_LIFETIME,
        limit: int = MAX_REFRESH_TOKENS,
    ) -> None:
        self._clock = clock
        self.lifetime = lifetime
        self.limit = limit
        self._held: dict[str, RefreshGrant] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def issue(
        self,
        user: User,
        *,
        client_id: str,
        resource_client_id: str,
        resource_prefix: str,
        scopes: frozenset[str],
        amr: tuple[str, ...],
    ) -> str:
        now = self._clock()
        token = "0.dev." + secrets.token_urlsafe(48)
        grant = RefreshGrant(
            user_oid=user.oid,
            tenant_id=user.tenant_id,
            client_id=client_id,
            resource_client_id=resource_client_id,
            resource_prefix=resource_prefix,
            scopes=scopes,
            amr=amr,
            credential_version=user.credential_version,
            issued_at=now,
            expires_at=now + self.lifetime,
        )
        with self._lock:
            if len(self._held) >= self.limit:
                self._prune(now)
            while len(self._held) >= self.limit:
                del self._held[next(iter(self._held))]  # the oldest
            self._held[_digest(token)] = grant
        return token

    def owner(self, presented: str) -> str | None:
        """The user oid a token belongs to (for the request log), without redeeming it."""
        with self._lock:
            held = self._held.get(_digest(presented))
        return held.user_oid if held else None

    def redeem(
        self, presented: str, client_id: str, find_user: Callable[[str], User | None]
    ) -> RefreshGrant:
        """Consume `presented` for `client_id` and return what it stood for, or refuse it.

        Another client presenting it learns nothing and does not burn the owner's token.
        """
        now = self._clock()
        key = _digest(presented)
        with self._lock:
            held = self._held.get(key)
            if held is not None and held.client_id == client_id:
                del self._held[key]
            self._prune(now)
        if held is None or held.client_id != client_id:
            raise OAuthError(
                "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
            )
        if held.expires_at <= now:
            raise OAuthError(
                "invalid_grant",
                700082,
                f"The refresh token has expired due to inactivity. The token was issued on "
                f"{_when(held.issued_at)} and was inactive for {_days(now - held.issued_at)}.",
            )
        user = find_user(held.user_oid)
        if user is not None and user.credential_version != held.credential_version:
            raise OAuthError(
                "invalid_grant",
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is "
                "needed. The user might have changed or reset their password. The grant was "
                f"issued on '{_when(held.issued_at)}' and the TokensValidFrom date (before which "
                f"tokens are not valid) for this user is '{_when(user.tokens_valid_from)}'.",
            )
        return held

    def _prune(self, now: float) -> None:
        """Forget expired tokens (the caller holds the lock)."""
        expired = [key for key, grant in self._held.items() if grant.expires_at <= now]
        for key in expired:
            del self._held[key]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _when(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def _days(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    return f"{days}.{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
