"""Federated identity credentials at the token endpoint: a client assertion from another issuer.

An app with federated credentials (`World.add_federated_credential`, `federated_credentials` in
a world file) authenticates with a token from an external OIDC issuer (a Kubernetes cluster's
service-account issuer, a managed identity's tenant) instead of a secret or certificate, as
Entra does: the assertion's `iss`, `sub` and `aud` are matched against the app's credentials,
and its signature is checked with keys from the issuer's discovery document and JWKS, fetched
over HTTPS (trusting the dev CA), never from an issuer no credential names.

The fetch is async (`prefetch`, awaited by the HTTP layer before the grant runs: the issuer may
be served by this very event loop); the decision (`check`) is sync, like the grants (`_grants/`).
Refusals use Entra's AADSTS codes and wording and name the presented issuer, subject and
audience, never the assertion.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

import aiohttp
import jwt

from grpc_obo.devauthority._registrations import App, FederatedCredential
from grpc_obo.devauthority._world import World

__all__ = ["Federation", "FederationRefusal"]

logger = logging.getLogger("grpc_obo.devauthority")

_ALGORITHMS = ["RS256"]
_CLOCK_SKEW = 300  # seconds: Entra's tolerance for exp/nbf
_REFETCH_AFTER = 300.0  # keys are refreshed after this long, or on an unknown kid ...
_MIN_REFETCH = 10.0  # ... but at most this often per issuer
_MAX_DOCUMENT = 64 * 1024


class FederationRefusal(Exception):
    """A refusal in Entra's shape; `_grants` turns it into its `OAuthError`."""

    def __init__(self, error: str, code: int, description: str, status: int = 400) -> None:
        super().__init__(f"AADSTS{code}: {description}")
        self.error = error
        self.code = code
        self.description = description
        self.status = status


@dataclass
class _IssuerKeys:
    keys: dict[str, Any]
    """kid -> public key"""
    fetched_at: float
    error: str | None = None


def unverified_claims(assertion: str) -> dict[str, Any] | None:
    """The assertion's claims without any check (to route it), or None if it is no JWT."""
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except (jwt.InvalidTokenError, ValueError, TypeError):
        return None
    return claims if isinstance(claims, dict) else None


class Federation:
    """Checks federated client assertions for one authority."""

    def __init__(
        self,
        *,
        world: World,
        base_url: Callable[[], str],
        ssl_context: Callable[[], ssl.SSLContext],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.world = world
        self._base_url = base_url
        self._ssl_context = ssl_context
        self.clock = clock
        self._issuers: dict[str, _IssuerKeys] = {}
        # NOTE: one lock per event loop: an authority stopped and started again (or run from
        # another thread) serves from a new loop, and an asyncio.Lock is bound to its first.
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    # -- which assertions are federated --------------------------------------------------

    def resolve(self, credential: FederatedCredential) -> str:
        """The credential's issuer with `{authority_host}` filled in."""
        return credential.issuer.replace("{authority_host}", self._base_url())

    def is_federated(self, assertion: str, client: App) -> bool:
        """A certificate assertion is issued by the client itself (`iss` = client id); anything
        else presented by an app with federated credentials is a federated assertion."""
        claims = unverified_claims(assertion)
        if claims is None:
            return False
        return bool(client.federated_credentials) and claims.get("iss") != client.client_id

    # -- keys: fetched before the grant runs ------------------------------------------------

    async def prefetch(self, client_id: str | None, assertion: str | None) -> None:
        """Fetch (or refresh) the keys of the assertion's issuer if `client_id` federates it."""
        if not client_id or not assertion:
            return
        client = self.world.find_app(client_id)
        if client is None or not self.is_federated(assertion, client):
            return
        claims = unverified_claims(assertion) or {}
        issuer = claims.get("iss")
        if not isinstance(issuer, str) or issuer not in {
            self.resolve(f) for f in client.federated_credentials
        }:
            return  # never fetch from an issuer no credential names (`check` refuses it)
        try:
            kid = jwt.get_unverified_header(assertion).get("kid")
        except jwt.InvalidTokenError:
            return
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            self._locks = {k: v for k, v in self._locks.items() if not k.is_closed()}
            lock = self._locks[loop] = asyncio.Lock()
        async with lock:
            held = self._issuers.get(issuer)
            now = time.monotonic()
            stale = held is None or now - held.fetched_at > _REFETCH_AFTER
            unknown = held is not None and kid not in held.keys
            if held is not None and now - held.fetched_at < _MIN_REFETCH:
                return
            if stale or unknown:
                self._issuers[issuer] = await self._fetch(issuer, held)

    async def _fetch(self, issuer: str, held: _IssuerKeys | None) -> _IssuerKeys:
        timeout = aiohttp.ClientTimeout(total=10)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                discovery = await _get_json(
                    session, f"{issuer}/.well-known/openid-configuration", self._ssl_context()
                )
                if discovery.get("issuer") != issuer:
                    raise ValueError("the discovery document names another issuer")
                jwks_uri = discovery.get("jwks_uri")
                if not isinstance(jwks_uri, str) or not jwks_uri.startswith("https://"):
                    raise ValueError("the discovery document has no https jwks_uri")
                jwks = await _get_json(session, jwks_uri, self._ssl_context())
            keys: dict[str, Any] = {}
            for jwk in jwks.get("keys", []):
                if isinstance(jwk, dict) and jwk.get("kty") == "RSA" and jwk.get("kid"):
                    keys[str(jwk["kid"])] = jwt.PyJWK(jwk, algorithm="RS256").key
        except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWTError) as exc:
            logger.warning("federated issuer %s: keys not fetched (%s)", issuer, type(exc).__name__)
            if held is not None and held.keys:
                return _IssuerKeys(held.keys, time.monotonic())  # keep the last good set
            return _IssuerKeys({}, time.monotonic(), error=type(exc).__name__)
        return _IssuerKeys(keys, time.monotonic())

    # -- the decision -----------------------------------------------------------------------

    def check(self, client: App, assertion: str) -> None:
        """Accept `assertion` as `client`'s credential, or raise `FederationRefusal`."""
        claims = unverified_claims(assertion) or {}
        issuer, subject, audience = claims.get("iss"), claims.get("sub"), claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            audiences = []
        shown_aud = ",".join(audiences)[:200]
        shown_iss, shown_sub = str(issuer)[:200], str(subject)[:200]
        same_issuer = [f for f in client.federated_credentials if self.resolve(f) == issuer]
        same_subject = [f for f in same_issuer if f.subject == subject]
        if not same_issuer:
            raise FederationRefusal(
                "invalid_client",
                70021,
                "No matching federated identity record found for presented assertion. "
                f"Assertion Issuer: '{shown_iss}'. Assertion Subject: '{shown_sub}'. "
                f"Assertion Audience: '{shown_aud}'.",
                status=401,
            )
        if not same_subject:
            raise FederationRefusal(
                "invalid_client",
                700213,
                "No matching federated identity record found for presented assertion subject "
                f"'{shown_sub}'. Please check your federated identity credential Subject, "
                "Audience and Issuer against the presented assertion.",
                status=401,
            )
        if not any(a in f.audiences for f in same_subject for a in audiences):
            raise FederationRefusal(
                "invalid_client",
                700212,
                "No matching federated identity record found for presented assertion audience "
                f"'{shown_aud}'. Please check your federated identity credential Subject, "
                "Audience and Issuer against the presented assertion.",
                status=401,
            )
        self._verify(str(issuer), assertion)
        now = self.clock()
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat", 0))
        if not _is_number(exp) or not _is_number(nbf):
            raise FederationRefusal(
                "invalid_client", 700027, "Client assertion contains an invalid exp or nbf."
            )
        if exp < now - _CLOCK_SKEW or nbf > now + _CLOCK_SKEW:
            raise FederationRefusal(
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range. Current time: "
                f"{_iso(now)}, assertion valid from {_iso(nbf)}, expiry time of assertion "
                f"{_iso(exp)}.",
                status=401,
            )

    def _verify(self, issuer: str, assertion: str) -> None:
        held = self._issuers.get(issuer)
        if held is None or (not held.keys and held.error):
            raise FederationRefusal(
                "invalid_client",
                50166,
                f"Request to External OIDC endpoint failed. Issuer: '{issuer[:200]}'.",
                status=401,
            )
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.InvalidTokenError:
            header = {}
        key = held.keys.get(str(header.get("kid")))
        if key is None or header.get("alg") not in _ALGORITHMS:
            raise FederationRefusal(
                "invalid_client",
                700027,
                "Client assertion failed signature validation. [Reason - The key was not found.]",
                status=401,
            )
        try:
            jwt.decode(
                assertion,
                key,
                algorithms=_ALGORITHMS,
                # The claims were matched above; time is checked by the caller with Entra's
                # error for it. Only the signature is PyJWT's job here.
                options={
                    "verify_aud": False,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_iss": False,
                },
            )
        except jwt.InvalidTokenError:
            raise FederationRefusal(
                "invalid_client",
                700027,
                "Client assertion failed signature validation.",
                status=401,
            ) from None


async def _get_json(
    session: aiohttp.ClientSession, url: str, context: ssl.SSLContext
) -> dict[str, Any]:
    if not url.startswith("https://"):
        raise ValueError("issuer documents are fetched over https only")
    async with session.get(url, ssl=context, allow_redirects=False) as response:
        if response.status != 200:
            raise ValueError(f"HTTP {response.status}")
        body = await response.content.read(_MAX_DOCUMENT + 1)
    if len(body) > _MAX_DOCUMENT:
        raise ValueError("document too large")
    parsed = json.loads(body)
    if not isinstance(parsed, dict):
        raise ValueError("not a JSON object")
    return parsed


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _iso(value: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
