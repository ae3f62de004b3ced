"""The device code flow's state: pending device codes, the user codes people type on the sign-in
page, approval, and single-use redemption (RFC 8628 as Entra answers it). `Grants` checks the
client, the scopes and the user, and issues the tokens; this module owns only the codes.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

from grpc_obo.devauthority._oauth import OAuthError

DEVICE_CODE_LIFETIME = 900
"""Seconds a device code waits for its sign-in (Entra: 15 minutes)."""
DEVICE_CODE_INTERVAL = 1
"""Seconds between polls the authority asks for (Entra asks 5; 1 keeps tests quick)."""
_USER_CODE_LETTERS = "BCDFGHJKLMNPQRSTVWXZ23456789"  # no vowels, no look-alikes
MAX_DEVICE_FLOWS_PER_CLIENT = 50
"""Pending device flows one client may hold; more are refused with 429 until some end."""
MAX_DEVICE_FLOWS = 1000
"""Pending device flows in total (memory stays bounded whoever asks)."""
UNKNOWN_CODE = "That code is unknown, used already or expired."


@dataclass
class DeviceFlow:
    """A device code waiting for (or given) its user's sign-in on the sign-in page."""

    user_code: str
    client_id: str
    tenant: str | None
    scope: str
    claims: str | None
    expires_at: float
    user_oid: str | None = None
    """Set when the user signed in on the page and approved the code."""
    amr: tuple[str, ...] = ("pwd",)
    """How the user signed in on the page (with `mfa` after the MFA step)."""


class DeviceFlows:
    """Pending device codes, bounded per client and in total; each redeemed once."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._flows: dict[str, DeviceFlow] = {}
        """SHA-256 of the device code -> its flow."""
        self._spent: dict[str, float] = {}
        """SHA-256 of a redeemed or expired device code -> when it would have expired (to tell
        `expired_token` from `bad_verification_code` until then)."""
        self._lock = threading.Lock()

    def owner(self, device_code: str) -> str | None:
        """The oid of the user who approved `device_code`, if any (for the request log)."""
        with self._lock:
            flow = self._flows.get(_hash(device_code))
        return flow.user_oid if flow else None

    def start(
        self, *, client_id: str, tenant: str | None, scope: str, claims: str | None
    ) -> tuple[str, str]:
        """A new (device code, user code) pair for `client_id`; 429 past the bounds."""
        device_code = "DAQABAAEAAAD." + secrets.token_urlsafe(48)
        user_code = "".join(secrets.choice(_USER_CODE_LETTERS) for _ in range(9))
        now = self._clock()
        with self._lock:
            self._prune(now)
            mine = sum(1 for f in self._flows.values() if f.client_id == client_id)
            if mine >= MAX_DEVICE_FLOWS_PER_CLIENT or len(self._flows) >= MAX_DEVICE_FLOWS:
                raise OAuthError(
                    "temporarily_unavailable",
                    50196,
                    "Too many device code sign-ins are pending"
                    + (" for this application" if mine >= MAX_DEVICE_FLOWS_PER_CLIENT else "")
                    + ". Finish or let some expire, then retry.",
                    status=429,
                    retry_after=DEVICE_CODE_INTERVAL * 5,
                )
            self._flows[_hash(device_code)] = DeviceFlow(
                user_code=user_code,
                client_id=client_id,
                tenant=tenant,
                scope=scope,
                claims=claims,
                expires_at=now + DEVICE_CODE_LIFETIME,
            )
        return device_code, user_code

    def pending(self, user_code: str) -> DeviceFlow:
        """The flow a person's (not yet approved, unexpired) user code names."""
        wanted = user_code.strip().upper().replace("-", "")
        now = self._clock()
        with self._lock:
            flow = next(
                (f for f in self._flows.values() if f.user_code == wanted and not f.user_oid),
                None,
            )
        if flow is None or flow.expires_at <= now:
            raise OAuthError("expired_token", 70019, UNKNOWN_CODE)
        return flow

    def approve(self, flow: DeviceFlow, user_oid: str, amr: tuple[str, ...]) -> None:
        with self._lock:
            if flow.user_oid is not None:
                raise OAuthError("expired_token", 70019, UNKNOWN_CODE)
            flow.user_oid, flow.amr = user_oid, amr

    def redeem(self, presented: str, client_id: str) -> tuple[DeviceFlow, str]:
        """The approved flow of `presented` (consumed) and its user's oid, or Entra's error for
        where it stands."""
        key = _hash(presented)
        now = self._clock()
        with self._lock:
            flow = self._flows.get(key)
            if flow is not None and flow.client_id != client_id:
                flow = None  # another client's code: as if unknown, and not consumed
            expired = flow is not None and flow.expires_at <= now
            if flow is not None and (flow.user_oid is not None or expired):
                del self._flows[key]  # redeemed once, or gone
                self._spent[key] = flow.expires_at
            spent = flow is None and key in self._spent
            self._prune(now)
        if flow is None and not spent:
            raise OAuthError(
                "bad_verification_code",
                70000,
                "The provided value for the input parameter 'device_code' is not valid: this "
                "device code was not issued to this application.",
            )
        if flow is None or expired:
            raise OAuthError(
                "expired_token",
                70019,
                "Verification code expired or already used. Start a new device flow.",
            )
        if flow.user_oid is None:
            raise OAuthError(
                "authorization_pending",
                70016,
                "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            )
        return flow, flow.user_oid

    def _prune(self, now: float) -> None:
        """Forget expired flows and spent codes past their lifetime (the caller holds the lock)."""
        for key in [k for k, f in self._flows.items() if f.expires_at <= now]:
            self._spent[key] = self._flows.pop(key).expires_at
        for key in [k for k, until in self._spent.items() if until <= now - 60]:
            del self._spent[key]
        while len(self._spent) > MAX_DEVICE_FLOWS:
            del self._spent[next(iter(self._spent))]


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
