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

import base64
import functools
import ipaddress
import json
import logging
import re
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator, Sequence
from typing import Any

import httpx

from grpc_obo._errors import ClaimsChallengeError, ConfigurationError
from grpc_obo._exchange._exchanger import AppOnlyExchanger, OboExchanger
from grpc_obo._identity import Identity, SecretToken, current_identity

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
        claims_for: _ClaimsMemory | None,
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
        identity = self._who()
        remembered = self._claims.get(identity) if self._claims is not None else None
        token = await self._acquire(identity, remembered)
        _authorize(request, token)
        response = yield request
        claims = claims_challenge(response)
        if claims is None or self._evict is None or identity is None:
            return
        # NOTE: the downstream refused a token it accepted before (a revoked session, a
        # location change: CAE) or wants more (authentication context). Whatever level holds
        # that token (this process, Redis, other replicas) must drop it before the new one.
        _log.info("HTTP downstream %s sent a claims challenge: evicting", _where(request.url))
        await self._evict(identity, remembered)
        if self._claims is not None:
            self._claims.put(identity, claims)
        # Raises ClaimsChallengeError when only the user can satisfy the claims (they must
        # sign in again): the incoming call ends with UNAUTHENTICATED and these claims.
        token = await self._acquire(identity, claims)
        _authorize(request, token)
        response = yield request
        if claims_challenge(response) is not None:
            raise ClaimsChallengeError(
                "a downstream API still asks for claims the user must satisfy by signing in again",
                claims=claims,
            )


def _authorize(request: httpx.Request, token: SecretToken) -> None:
    request.headers["Authorization"] = f"Bearer {token.reveal()}"


class _ClaimsMemory:
    """Claims a downstream asked for, per user, bounded: oldest forgotten first."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._claims: dict[str, str] = {}

    def get(self, identity: Identity | None) -> str | None:
        if not self._claims or identity is None:
            return None
        return self._claims.get(identity.principal)

    def put(self, identity: Identity, claims: str) -> None:
        if len(self._claims) >= self._limit:
            del self._claims[next(iter(self._claims))]
        self._claims[identity.principal] = claims


# -- decisions about a response (pure) --------------------------------------------------------

_CLAIMS_PARAM = re.compile(r'(?:^|[\s,])claims="([A-Za-z0-9+/=_-]{1,11000})"')
_MAX_CLAIMS = 8192


def claims_challenge(response: httpx.Response) -> str | None:
    """The claims JSON of a 401 `Bearer error="insufficient_claims"` challenge, else None.

    Several `WWW-Authenticate` headers may come (RFC 7235): the first claims challenge counts.
    Anything malformed (not base64, not a JSON object, too long) is no challenge at all.
    """
    if response.status_code != 401:
        return None
    for value in response.headers.get_list("www-authenticate"):
        if "insufficient_claims" not in value:
            continue
        found = _CLAIMS_PARAM.search(value)
        claims = _decoded_claims(found.group(1)) if found else None
        if claims is not None:
            return claims
    return None


def _decoded_claims(encoded: str) -> str | None:
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_")
        text = raw.decode("utf-8")
        parsed = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(parsed, dict) or len(text) > _MAX_CLAIMS:
        return None
    return text


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
    name = host.lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


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
        claims_for=_ClaimsMemory(),
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
