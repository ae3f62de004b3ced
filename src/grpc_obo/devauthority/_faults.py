"""Fault injection and the request log: what tests switch at run time and what they assert on.

Faults are rules matched against each request (endpoint, grant, client, user) and consumed one per
matching request; `times=None` keeps a rule until `clear()`. The log records only non-secret
fields (never a form value other than grant type, client id, user and scopes).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

Endpoint = Literal[
    "token",
    "discovery",
    "jwks",
    "userrealm",
    "devicecode",
    "devicelogin",
    "authorize",
    "other",
    "any",
]
FaultKind = Literal["status", "drop"]


@dataclass(frozen=True)
class RequestInfo:
    """What is known of a request before it is processed (used to match faults and to log)."""

    endpoint: Endpoint
    grant: str | None = None
    client_id: str | None = None
    user_oid: str | None = None
    username: str | None = None


@dataclass
class FaultRule:
    kind: FaultKind
    status: int = 503
    retry_after: float | None = None
    times: int | None = 1
    endpoint: Endpoint = "token"
    grant: str | None = None
    client_id: str | None = None
    user: str | None = None
    """Matches the user's oid or username (case-insensitive)."""

    def matches(self, info: RequestInfo) -> bool:
        if self.endpoint != "any" and self.endpoint != info.endpoint:
            return False
        if self.grant is not None and self.grant != info.grant:
            return False
        if self.client_id is not None and self.client_id != info.client_id:
            return False
        if self.user is not None:
            wanted = self.user.lower()
            names = {(info.user_oid or "").lower(), (info.username or "").lower()}
            if info.username:
                names.add(info.username.split("@", 1)[0].lower())
            if wanted not in names:
                return False
        return True


# The shape Entra sends when a conditional-access policy (here: a made-up policy id) needs MFA.
DEFAULT_CHALLENGE = (
    '{"access_token":{"capolids":{"essential":true,'
    '"values":["c0ffee00-0000-4000-8000-00000000ca01"]}}}'
)


@dataclass(frozen=True)
class ClaimsChallenge:
    """A conditional-access requirement for one user's tokens to one resource (or any)."""

    user: str
    claims: str
    resource_client_id: str | None = None


class Faults:
    """Switchable faults. Every method is thread-safe (tests drive a threaded authority)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._challenges: list[ClaimsChallenge] = []
        self.latency: float = 0.0
        """Seconds added before every response."""
        self.jwks_down: bool = False
        """When set, the JWKS endpoints answer 503 (discovery still answers)."""

    def fail(
        self,
        status: int = 503,
        *,
        times: int | None = 1,
        endpoint: Endpoint = "token",
        grant: str | None = None,
        client_id: str | None = None,
        user: str | None = None,
        retry_after: float | None = None,
    ) -> FaultRule:
        """Answer matching requests with an Entra-shaped error of this HTTP status."""
        rule = FaultRule(
            kind="status",
            status=status,
            retry_after=retry_after,
            times=times,
            endpoint=endpoint,
            grant=grant,
            client_id=client_id,
            user=user,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def throttle(
        self,
        *,
        retry_after: float = 1.0,
        times: int | None = 1,
        endpoint: Endpoint = "token",
        grant: str | None = None,
        client_id: str | None = None,
        user: str | None = None,
    ) -> FaultRule:
        """HTTP 429 with a Retry-After header, as Entra throttles."""
        return self.fail(
            429,
            times=times,
            endpoint=endpoint,
            grant=grant,
            client_id=client_id,
            user=user,
            retry_after=retry_after,
        )

    def drop_connection(
        self,
        *,
        times: int | None = 1,
        endpoint: Endpoint = "token",
        grant: str | None = None,
        client_id: str | None = None,
        user: str | None = None,
    ) -> FaultRule:
        """Close the connection without answering."""
        rule = FaultRule(
            kind="drop",
            times=times,
            endpoint=endpoint,
            grant=grant,
            client_id=client_id,
            user=user,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def require_claims(
        self,
        user: str,
        *,
        claims: str | None = None,
        resource_client_id: str | None = None,
    ) -> ClaimsChallenge:
        """Conditional access: tokens of `user` for `resource_client_id` (None: any resource)
        need MFA, and a password is not MFA.

        - On-Behalf-Of for this user and resource fails with `interaction_required`
          (AADSTS50076) and this challenge's `claims` unless the incoming assertion shows MFA
          (`amr` has `mfa`); so does one whose own `claims` carry this challenge.
        - The password grant (ROPC) is refused with AADSTS50076 for a resource the policy
          covers, and for any resource when its `claims` carry this challenge, as Entra refuses
          ROPC when MFA is required. A refresh token whose sign-in showed no MFA cannot add it
          (`interaction_required`).
        - Only an interactive sign-in satisfies it: the device code page or the authorization
          endpoint's page ask for their MFA step when the policy covers the resource or the
          app sent this challenge's claims; the tokens then have `amr` with `mfa`, whatever
          resource the challenge is scoped to, and On-Behalf-Of tokens exchanged from them keep
          it hop after hop.
        """
        challenge = ClaimsChallenge(
            user=user,
            claims=claims or DEFAULT_CHALLENGE,
            resource_client_id=resource_client_id,
        )
        with self._lock:
            self._challenges.append(challenge)
        return challenge

    def challenge_for(self, user: RequestInfo, resource_client_id: str) -> ClaimsChallenge | None:
        """The first challenge that tokens of `user` for this resource must satisfy."""
        return next(
            (
                challenge
                for challenge in self.challenges_of(user)
                if challenge.resource_client_id in (None, resource_client_id)
            ),
            None,
        )

    def challenges_of(self, user: RequestInfo) -> list[ClaimsChallenge]:
        """Every challenge set for `user`, whatever its resource, oldest first."""
        with self._lock:
            return [
                challenge
                for challenge in self._challenges
                if FaultRule(kind="status", endpoint="any", user=challenge.user).matches(user)
            ]

    def take(self, info: RequestInfo) -> FaultRule | None:
        """The first rule matching this request, consuming one of its `times`."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(info):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self._rules.remove(rule)
                    return rule
        return None

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._challenges.clear()
            self.latency = 0.0
            self.jwks_down = False


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the authority saw it. Holds no secret: no password, secret or token."""

    at: float
    method: str
    path: str
    endpoint: Endpoint
    status: int
    grant: str | None = None
    client_id: str | None = None
    user_oid: str | None = None
    username: str | None = None
    scopes: tuple[str, ...] = ()
    error: str | None = None
    error_code: int | None = None
    fault: str | None = None


@dataclass
class RequestLog:
    """Every request the authority answered, for tests to count and inspect.

    Iterating (`for entry in authority.requests`, `list(...)`, `len(...)`) reads a snapshot:
    requests answered meanwhile are not seen by a loop already running.
    """

    _entries: list[LoggedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._entries.append(entry)

    @property
    def entries(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._entries)

    def __iter__(self) -> Iterator[LoggedRequest]:
        return iter(self.entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def matching(
        self,
        *,
        endpoint: Endpoint | None = None,
        grant: str | None = None,
        client_id: str | None = None,
        user: str | None = None,
        status: int | None = None,
        ok: bool | None = None,
    ) -> list[LoggedRequest]:
        """The logged requests that match every given filter (`user`: oid or username)."""
        wanted_user = user.lower() if user else None

        def keep(e: LoggedRequest) -> bool:
            if endpoint is not None and e.endpoint != endpoint:
                return False
            if grant is not None and e.grant != grant:
                return False
            if client_id is not None and e.client_id != client_id:
                return False
            if status is not None and e.status != status:
                return False
            if ok is not None and (e.status == 200) != ok:
                return False
            if wanted_user is not None:
                names = {(e.user_oid or "").lower(), (e.username or "").lower()}
                if e.username:
                    names.add(e.username.split("@", 1)[0].lower())
                if wanted_user not in names:
                    return False
            return True

        return [e for e in self.entries if keep(e)]

    def count(
        self,
        *,
        endpoint: Endpoint | None = None,
        grant: str | None = None,
        client_id: str | None = None,
        user: str | None = None,
        status: int | None = None,
        ok: bool | None = None,
    ) -> int:
        """How many logged requests match every given filter (`user`: oid or username)."""
        return len(
            self.matching(
                endpoint=endpoint,
                grant=grant,
                client_id=client_id,
                user=user,
                status=status,
                ok=ok,
            )
        )

    def by_grant(self) -> Counter[str]:
        return Counter(e.grant for e in self.entries if e.grant)

    @staticmethod
    def now() -> float:
        return time.time()
