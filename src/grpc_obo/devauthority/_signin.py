"""The person at the sign-in page: password checks with smart lockout, and the MFA step.

Shared by every way a user proves who they are: the password grant (ROPC), the device code page
and the authorization endpoint's page. Only the pages offer the MFA step: a password alone never
counts as multi-factor authentication. The step is an approval on the page (standing for an
authenticator's push notification), bound by a single-use ticket to the sign-in it continues.

Smart lockout, as Entra's defaults: after `LOCKOUT_THRESHOLD` wrong passwords for an account
within `LOCKOUT_SECONDS`, further attempts are refused with AADSTS50053 until the lockout ends,
even with the right password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from grpc_obo.devauthority._oauth import OAuthError
from grpc_obo.devauthority._registrations import User
from grpc_obo.devauthority._world import World

LOCKOUT_THRESHOLD = 10
"""Wrong passwords in a row that lock an account (Entra's smart lockout default)."""
LOCKOUT_SECONDS = 60.0
"""How long a lockout lasts (Entra's default: one minute, growing with repeats)."""
MFA_TICKET_SECONDS = 300.0
"""How long the MFA step of a sign-in waits for its approval."""
MAX_MFA_TICKETS = 1_000


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0


@dataclass(frozen=True)
class _Ticket:
    user_oid: str
    purpose: str
    expires_at: float


def bad_credentials() -> OAuthError:
    """The one answer to a wrong username or password (it never says which)."""
    return OAuthError(
        "invalid_grant",
        50126,
        "Error validating credentials due to invalid username or password.",
    )


class SignIns:
    """Password checks and MFA tickets for one authority (thread-safe)."""

    def __init__(self, world: World, clock: Callable[[], float]) -> None:
        self.world = world
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, _Failures] = {}
        self._tickets: dict[str, _Ticket] = {}

    def password(self, username: str, password: str) -> User:
        """The user `username` names if `password` is theirs; else 50126 (or 50053 while the
        account is locked out). Unknown users count no failures: there is no account to lock."""
        user = self.world.find_user(username) if "@" in username else None
        if user is None:
            raise bad_credentials()
        now = self._clock()
        with self._lock:
            failures = self._failures.get(user.oid)
            if failures is not None and failures.locked_until > now:
                raise _locked_out()
        if hmac.compare_digest(password.encode(), user.password.encode()):
            with self._lock:
                self._failures.pop(user.oid, None)
            return user
        with self._lock:
            failures = self._failures.setdefault(user.oid, _Failures())
            failures.count += 1
            if failures.count >= LOCKOUT_THRESHOLD:
                failures.count = 0
                failures.locked_until = now + LOCKOUT_SECONDS
        raise bad_credentials()

    def start_mfa(self, user: User, purpose: str) -> str:
        """A single-use ticket for the MFA step of `user`'s sign-in for `purpose` (a device
        code, an authorization request). The page carries it; only its digest is kept."""
        ticket = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._tickets = {k: t for k, t in self._tickets.items() if t.expires_at > now}
            while len(self._tickets) >= MAX_MFA_TICKETS:
                del self._tickets[next(iter(self._tickets))]
            self._tickets[_digest(ticket)] = _Ticket(user.oid, purpose, now + MFA_TICKET_SECONDS)
        return ticket

    def finish_mfa(self, ticket: str, purpose: str) -> User:
        """The user whose MFA step `ticket` approves, consuming it; refused if unknown,
        expired, or issued for another sign-in."""
        now = self._clock()
        with self._lock:
            held = self._tickets.pop(_digest(ticket), None)
        user = self.world.find_user(held.user_oid) if held else None
        if held is None or held.purpose != purpose or held.expires_at <= now or user is None:
            raise OAuthError(
                "invalid_request",
                50089,
                "The multi-factor authentication step expired or does not belong to this "
                "sign-in. Sign in again.",
            )
        return user


def _locked_out() -> OAuthError:
    return OAuthError(
        "invalid_grant",
        50053,
        "Your account is locked because you've tried to sign in too many times with an "
        "incorrect user ID or password.",
    )


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
