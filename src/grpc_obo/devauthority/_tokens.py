"""Minting tokens shaped like Entra's (v2 and v1 access tokens, ID tokens) and reading back our own.

Claims follow the Microsoft identity platform's access-token claims reference: `aud` is the API's
client id (v2) or the identifier the client asked for (v1), `sub` is pairwise per app, `azp`/`appid`
names the calling client, `idtyp=app` marks app-only tokens, `xms_cc` lists client capabilities.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from grpc_obo.devauthority._keys import KeyRing
from grpc_obo.devauthority._registrations import GRAPH_APP_ID, App, User, pairwise_sub


@dataclass(frozen=True)
class Issued:
    token: str
    expires_at: int


class TokenMinter:
    """Builds and signs tokens for one authority base URL with the key ring's signing key."""

    def __init__(
        self,
        *,
        base_url: Callable[[], str],
        keys: KeyRing,
        clock: Callable[[], float] = time.time,
        lifetime: int = 3600,
    ) -> None:
        self._base_url = base_url
        self.keys = keys
        self.clock = clock
        self.lifetime = lifetime

    def issuer(self, tenant_id: str, version: int = 2) -> str:
        base = self._base_url()
        return f"{base}/{tenant_id}/v2.0" if version == 2 else f"{base}/{tenant_id}/"

    def sign(self, claims: Mapping[str, Any], *, headers: Mapping[str, Any] | None = None) -> str:
        key = self.keys.signing_key
        header: dict[str, Any] = {"typ": "JWT", "kid": key.kid, "x5t": key.x5t}
        header.update(headers or {})
        return jwt.encode(dict(claims), key.private_key, algorithm="RS256", headers=header)

    def _times(self, lifetime: int | None) -> tuple[int, int]:
        now = int(self.clock())
        return now, now + (self.lifetime if lifetime is None else lifetime)

    def access_token(
        self,
        *,
        client: App,
        resource: App | None,
        tenant_id: str,
        user: User | None = None,
        scopes: Iterable[str] = (),
        roles: Iterable[str] = (),
        version: int | None = None,
        client_auth: str = "1",
        capabilities: Iterable[str] = (),
        amr: Iterable[str] = ("pwd",),
        audience: str | None = None,
        lifetime: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Issued:
        """An access token for `resource` (None means Microsoft Graph) requested by `client`.

        With `user` it is delegated (`scp`), without it app-only (`roles`, `idtyp=app`).
        """
        iat, exp = self._times(lifetime)
        if user is not None and user.tokens_valid_from > iat:
            # NOTE: `iat` counts whole seconds; a token issued in the same second as a
            # revocation (after it) would read as issued before it. Stamp it with the next whole
            # second, as the revocation's claims challenge asks (`nbf` >= that second).
            shift = math.ceil(user.tokens_valid_from) - iat
            iat, exp = iat + shift, exp + shift
        resource_id = resource.client_id if resource else GRAPH_APP_ID
        ver = version or (resource.access_token_version if resource else 1)
        claims: dict[str, Any] = {
            "aud": audience or resource_id,
            "iss": self.issuer(tenant_id, ver),
            "iat": iat,
            "nbf": iat,
            "exp": exp,
            "aio": base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("="),
            "rh": "0.dev." + secrets.token_urlsafe(8),
            "tid": tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "2.0" if ver == 2 else "1.0",
        }
        if ver == 2:
            claims["azp"] = client.client_id
            claims["azpacr"] = client_auth
        else:
            claims["appid"] = client.client_id
            claims["appidacr"] = client_auth
        if user is not None:
            claims["oid"] = user.oid
            claims["sub"] = pairwise_sub(user.oid, resource_id, tenant_id)
            claims["name"] = user.display_name
            claims["scp"] = " ".join(sorted(set(scopes)))
            claims["amr"] = list(amr)
            if ver == 2:
                claims["preferred_username"] = user.username
            else:
                claims["upn"] = user.username
                claims["unique_name"] = user.username
            user_roles = sorted(user.app_roles.get(resource_id, frozenset()))
            if user_roles:
                claims["roles"] = user_roles
        else:
            # An app-only token's oid and sub are the client's service principal.
            sp_oid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{tenant_id}:{client.client_id}"))
            claims["oid"] = sp_oid
            claims["sub"] = sp_oid
            claims["idtyp"] = "app"
            granted = sorted(set(roles))
            if granted:
                claims["roles"] = granted
        caps = sorted(set(capabilities))
        if caps:
            claims["xms_cc"] = caps
        claims.update(extra or {})
        # Graph access tokens carry a `nonce` header; validators must refuse them by audience.
        graph = resource is None or resource.client_id == GRAPH_APP_ID
        headers = {"nonce": secrets.token_urlsafe(16)} if graph else None
        return Issued(self.sign(claims, headers=headers), exp)

    def id_token(self, *, user: User, client: App, tenant_id: str, nonce: str | None = None) -> str:
        iat, exp = self._times(None)
        claims: dict[str, Any] = {
            "aud": client.client_id,
            "iss": self.issuer(tenant_id, 2),
            "iat": iat,
            "nbf": iat,
            "exp": exp,
            "name": user.display_name,
            "oid": user.oid,
            "preferred_username": user.username,
            "sub": pairwise_sub(user.oid, client.client_id, tenant_id),
            "tid": tenant_id,
            "ver": "2.0",
        }
        if nonce:
            claims["nonce"] = nonce
        return self.sign(claims)

    def read_own(self, token: str, *, leeway: int = 300) -> dict[str, Any]:
        """Verify a token this authority signed (any published key) and return its claims.

        Raises `jwt.InvalidTokenError` (or a subclass) when it is not ours or not valid now.
        Audience is left to the caller, which knows who is presenting the token.
        """
        header = jwt.get_unverified_header(token)
        kid = header.get("kid")
        key = self.keys.find(kid) if isinstance(kid, str) else None
        if key is None:
            raise jwt.InvalidSignatureError("signed by a key this authority does not publish")
        claims: dict[str, Any] = jwt.decode(
            token,
            key.private_key.public_key(),
            algorithms=["RS256"],
            options={
                "verify_aud": False,
                # PyJWT's time checks use the wall clock; ours may be fixed or shifted in tests.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "require": ["exp", "iat", "iss", "tid"],
            },
        )
        now = self.clock()
        if not isinstance(claims["exp"], int) or claims["exp"] + leeway < now:
            raise jwt.ExpiredSignatureError("assertion expired")
        nbf = claims.get("nbf", claims["iat"])
        if not isinstance(nbf, int) or nbf - leeway > now:
            raise jwt.ImmatureSignatureError("assertion not yet valid")
        return claims


def client_info(user: User, tenant_id: str) -> str:
    """MSAL's `client_info`: base64url JSON of the user's uid/utid (Entra sends it unpadded)."""
    raw = json.dumps({"uid": user.oid, "utid": tenant_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
