"""Outbound HTTP: an `httpx.Auth` over the same exchanger core as the gRPC channels.

    obo.http_auth(scopes=[...])            (OnBehalfOf: the current user, never an app fallback)
      └── async_auth_flow(request)
            ├── token from the exchanger: same cache (memory or Redis), single flight,
            │   retries, telemetry as a gRPC channel of the same `OnBehalfOf`
            ├── 401 with a claims challenge (CAE `nbf`, step-up `acrs`): evict the token on
            │   every level, exchange again with the claims, replay the request once
            └── the exchange needs the user (revoked session, MFA): `ClaimsChallengeError`,
                which ends the incoming call with UNAUTHENTICATED and a rebuilt challenge

The claims memory is the exchanger core's: a challenge met here goes into the next exchange of
the same `OnBehalfOf`'s gRPC channels too, and theirs into this one's. `AppOnly.http_auth` sends
the service's own token: no user, no claims, and a refusal recorded as the service's, not the
caller's (`grpc_obo._relay`). httpx reads the request body before the flow starts
(`requires_request_body`), so every request can be replayed. One instance serves every user and
every concurrent request: the user is read from the context of the request being sent. Only
`httpx.AsyncClient` is supported (the exchange is async). httpx is imported here only: install
`grpc-obo[http]`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncGenerator, Generator, Sequence

import httpx

from grpc_obo._common import is_loopback
from grpc_obo._errors import ClaimsChallengeError, ConfigurationError
from grpc_obo._errors._checks import a_number
from grpc_obo._exchange._exchanger import Exchanger
from grpc_obo._identity import SecretToken, current_identity
from grpc_obo._relay import (
    Challenge,
    Code,
    Failures,
    challenge_values,
    choose_challenge,
    claims_of,
    recording,
)

__all__ = ["http_auth"]

_log = logging.getLogger("grpc_obo.http")


class _HttpAuth(httpx.Auth):
    """Attaches an exchanged token; on a claims challenge, exchanges again and replays once."""

    requires_request_body = True

    def __init__(
        self, exchanger: Exchanger, *, scopes: tuple[str, ...], timeout: float | None
    ) -> None:
        self._exchanger = exchanger
        self._scopes = scopes
        self._timeout = timeout
        self._as_user = exchanger.grant.as_user

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
        # As the user: the identity in context (None: the exchanger raises MissingIdentityError,
        # never an app token). As the service: nobody.
        identity = current_identity() if self._as_user else None
        exchanger, scopes = self._exchanger, self._scopes
        # Claims a downstream asked for (here or on a gRPC channel) go with this exchange.
        token = await exchanger.acquire(scopes, identity=identity, timeout=self._timeout)
        _authorize(request, token)
        response = yield request
        challenge = _challenge(response)
        claims = claims_of(challenge) if response.status_code == 401 else None
        if claims is None or identity is None or not identity.is_user:
            self._record(failures, response, challenge)
            return
        # NOTE: the downstream refused a token it accepted before (a revoked session, a
        # location change: CAE) or wants more (authentication context). Whatever level holds
        # that token (this process, Redis, other replicas) must drop it before the new one.
        _log.info("HTTP downstream %s sent a claims challenge: evicting", _where(request.url))
        await exchanger.challenged(scopes, identity, claims)
        # Raises ClaimsChallengeError when only the user can satisfy the claims (they must
        # sign in again): the incoming call ends with UNAUTHENTICATED and these claims.
        token = await exchanger.acquire(
            scopes, identity=identity, claims=claims, timeout=self._timeout
        )
        _authorize(request, token)
        response = yield request
        challenge = _challenge(response)
        again = claims_of(challenge) if response.status_code == 401 else None
        if again is not None:
            raise ClaimsChallengeError(
                "a downstream API still asks for claims the user must satisfy by signing in again",
                claims=again,
            )
        self._record(failures, response, challenge)

    def _record(
        self, failures: Failures | None, response: httpx.Response, challenge: Challenge | None
    ) -> None:
        """A failed answer, recorded for the relay: when the handler does not catch what
        follows (`raise_for_status()`), the incoming call ends with the relay's status and
        challenge (as the service's own failure for an app-only token)."""
        if failures is None:
            return
        code = Code.from_http(response.status_code)
        if code is not Code.OK:
            failures.record(code, challenge, as_user=self._as_user)


def _authorize(request: httpx.Request, token: SecretToken) -> None:
    request.headers["Authorization"] = f"Bearer {token.reveal()}"


def _challenge(response: httpx.Response) -> Challenge | None:
    """*The* challenge of a refusal, chosen as the gRPC side chooses (grpc_obo._relay)."""
    if response.status_code < 400:
        return None
    return choose_challenge(challenge_values(response.headers))


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


def http_auth(
    exchanger: Exchanger, *, scopes: Sequence[str], timeout: float | None = None
) -> httpx.Auth:
    """An `httpx.Auth` sending `exchanger`'s token for `scopes`: the current user's
    (On-Behalf-Of) or the service's own (client credentials), as its grant says."""
    if timeout is not None:
        a_number("timeout", timeout, above=True)
    return _HttpAuth(exchanger, scopes=exchanger.scopes(scopes), timeout=timeout)
