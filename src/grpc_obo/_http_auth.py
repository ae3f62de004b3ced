"""Outbound HTTP On-Behalf-Of: an `httpx.Auth` over the same exchangers as the gRPC channels.

    obo.http_auth(scopes=[...])            (OnBehalfOf: the current user, never an app fallback)
      └── async_auth_flow(request)
            ├── token from the exchanger: same cache (memory or Redis), single flight,
            │   retries, telemetry as a gRPC channel of the same `OnBehalfOf`
            ├── 401 with a claims challenge (CAE `nbf`, step-up `acrs`): evict the token on
            │   every level, exchange again with the claims, replay the request once
            └── the exchange needs the user (revoked session, MFA): `ClaimsChallengeError`,
                which ends the incoming call with UNAUTHENTICATED and a rebuilt challenge

httpx reads the request body before the flow starts (`requires_request_body`), so every
request can be replayed. One instance serves every user and every concurrent request: the
user is read from the context of the request being sent. Only `httpx.AsyncClient` is
supported (the exchange is async). httpx is imported here only: install `grpc-obo[http]`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator, Sequence
from typing import Any

import httpx

from grpc_obo._common import is_loopback
from grpc_obo._errors import ClaimsChallengeError, ConfigurationError
from grpc_obo._exchange._exchanger import AppOnlyExchanger, OboExchanger
from grpc_obo._identity import Identity, SecretToken, current_identity
from grpc_obo._relay import (
    Challenge,
    ClaimsMemory,
    Code,
    Failures,
    choose_challenge,
    claims_of,
    recording,
)

__all__ = ["app_only_http_auth", "obo_http_auth"]

_log = logging.getLogger("grpc_obo.http")

_Acquire = Callable[[Identity | None, "str | None"], Coroutine[Any, Any, SecretToken]]
_Evict = Callable[[Identity, "str | None"], Coroutine[Any, Any, None]]


class _HttpAuth(httpx.Auth):
    """Attaches an exchanged token; on a claims challenge, exchanges again and replays once."""

    requires_request_body = True

    def __init__(
        self,
        *,
        scopes: tuple[str, ...],
        who: Callable[[], Identity | None],
        acquire: _Acquire,
        evict: _Evict | None,
        claims_for: ClaimsMemory | None,
    ) -> None:
        self._scopes = scopes
        self._who = who
        self._acquire = acquire
        self._evict = evict
        self._claims = claims_for

    def __repr__(self) -> str:
        return f"HttpAuth(scopes={self._scopes!r})"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise ConfigurationError(
            "grpc_obo's HTTP auth exchanges tokens asynchronously: use it with httpx.AsyncClient"
        )

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        _check_transport(request.url)
        await request.aread()
        failures = recording()  # the served call's, if any: read now, in the caller's context
        identity = self._who()
        remembered = self._remembered(identity)
        token = await self._acquire(identity, remembered)
        self._met(identity, remembered)
        _authorize(request, token)
        response = yield request
        challenge = _challenge(response)
        claims = claims_of(challenge) if response.status_code == 401 else None
        if claims is None or self._evict is None or identity is None:
            _record(failures, response, challenge)
            return
        # NOTE: the downstream refused a token it accepted before (a revoked session, a
        # location change: CAE) or wants more (authentication context). Whatever level holds
        # that token (this process, Redis, other replicas) must drop it before the new one.
        _log.info("HTTP downstream %s sent a claims challenge: evicting", _where(request.url))
        await self._evict(identity, remembered)
        if self._claims is not None:
            self._claims.put(identity, self._scopes, claims)
        # Raises ClaimsChallengeError when only the user can satisfy the claims (they must
        # sign in again): the incoming call ends with UNAUTHENTICATED and these claims.
        token = await self._acquire(identity, claims)
        self._met(identity, claims)
        _authorize(request, token)
        response = yield request
        challenge = _challenge(response)
        again = claims_of(challenge) if response.status_code == 401 else None
        if again is not None:
            raise ClaimsChallengeError(
                "a downstream API still asks for claims the user must satisfy by signing in again",
                claims=again,
            )
        _record(failures, response, challenge)

    def _remembered(self, identity: Identity | None) -> str | None:
        return self._claims.get(identity, self._scopes) if self._claims is not None else None

    def _met(self, identity: Identity | None, claims: str | None) -> None:
        # An exchange carrying the claims succeeded: they are met, stop asking for them.
        if claims is not None and self._claims is not None:
            self._claims.forget(identity, self._scopes, claims)


def _authorize(request: httpx.Request, token: SecretToken) -> None:
    request.headers["Authorization"] = f"Bearer {token.reveal()}"


def _challenge(response: httpx.Response) -> Challenge | None:
    """*The* challenge of a refusal, chosen as the gRPC side chooses (grpc_obo._relay)."""
    if response.status_code < 400:
        return None
    return choose_challenge(response.headers.get_list("www-authenticate"))


def _record(
    failures: Failures | None, response: httpx.Response, challenge: Challenge | None
) -> None:
    """A failed answer, recorded for the relay: when the handler does not catch what follows
    (`raise_for_status()`), the incoming call ends with the relay's status and challenge."""
    if failures is None:
        return
    code = Code.from_http(response.status_code)
    if code is not Code.OK:
        failures.record(code, challenge)


def _check_transport(url: httpx.URL) -> None:
    # A bearer token over plaintext is readable on the network: only loopback may use http.
    if url.scheme == "https":
        return
    if url.scheme != "http" or not _is_loopback(url.host):
        raise ConfigurationError(
            f"refusing to send a bearer token to {url.scheme}://{url.host}: use https "
            "(plain http only to loopback)"
        )


@functools.lru_cache(maxsize=256)
def _is_loopback(host: str) -> bool:
    # NOTE: cached: parsing an address costs more than the rest of a cached call's auth flow.
    return is_loopback(host, by_name=True)


def _where(url: httpx.URL) -> str:
    # Host and path only: a query string may carry anything.
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}{url.path}"


def _check_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(scopes, str) or not scopes or not all(isinstance(s, str) and s for s in scopes):
        raise ConfigurationError("scopes must be a non-empty list of scope strings")
    return tuple(scopes)


# -- the two factories behind OnBehalfOf.http_auth / AppOnly.http_auth ---------------------------


def obo_http_auth(
    exchanger: OboExchanger, *, scopes: Sequence[str], timeout: float | None = None
) -> httpx.Auth:
    """An `httpx.Auth` sending the current user's token for `scopes`, exchanged On-Behalf-Of."""
    wanted = _check_scopes(scopes)

    async def acquire(identity: Identity | None, claims: str | None) -> SecretToken:
        # Identity None: the exchanger raises MissingIdentityError (never an app token).
        return await exchanger.acquire(wanted, identity=identity, claims=claims, timeout=timeout)

    async def evict(identity: Identity, claims: str | None) -> None:
        await exchanger.invalidate(wanted, identity=identity, claims=claims)

    return _HttpAuth(
        scopes=wanted,
        who=current_identity,
        acquire=acquire,
        evict=evict,
        claims_for=ClaimsMemory(),
    )


def app_only_http_auth(
    exchanger: AppOnlyExchanger, *, scopes: Sequence[str], timeout: float | None = None
) -> httpx.Auth:
    """An `httpx.Auth` sending this service's own (client-credentials) token for `scopes`."""
    wanted = _check_scopes(scopes)

    async def acquire(identity: Identity | None, claims: str | None) -> SecretToken:
        return await exchanger.acquire(wanted, timeout=timeout)

    # App-only tokens act for nobody: no user to challenge, nothing to remember per user.
    return _HttpAuth(scopes=wanted, who=lambda: None, acquire=acquire, evict=None, claims_for=None)
