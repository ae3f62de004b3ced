"""Tokens for the server tests: one RSA key, its JWKS, and Entra-shaped v2 tokens minted with PyJWT.

Every token minted here is recorded in `MINTED` so the no-leak checks can search logs, status
details, trailing metadata and exception texts for each of them.
"""

from __future__ import annotations

import base64
import functools
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
API_CLIENT_ID = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
CALLER_APP = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
ISSUER = f"https://login.microsoftonline.com/{TENANT}/v2.0"
KID = "server-test-key"

MINTED: list[str] = []
"""Every token this module produced."""


def private_key(name: str = KID) -> rsa.RSAPrivateKey:
    """One key per name for the session (generation is the slow part)."""
    return _private_key(name)


@functools.cache
def _private_key(name: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def jwks() -> dict[str, Any]:
    numbers = private_key().public_key().public_numbers()
    key = {"kty": "RSA", "use": "sig", "kid": KID, "n": _b64(numbers.n), "e": _b64(numbers.e)}
    return {"keys": [key]}


def user_oid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def principal(n: int) -> str:
    return f"{TENANT}/{user_oid(n)}"


def _mint(claims: dict[str, Any], key: str = KID) -> str:
    token = jwt.encode(claims, private_key(key), algorithm="RS256", headers={"kid": KID})
    MINTED.append(token)
    return token


def user_token(
    user: int = 1,
    *,
    scopes: str | None = "Echo.Read",
    roles: list[str] | None = None,
    lifetime: int = 3600,
    key: str = KID,
) -> str:
    """A delegated v2 token for user number `user`; `lifetime < 0` gives an expired one."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "aud": API_CLIENT_ID,
        "iss": ISSUER,
        "iat": min(now, now + lifetime) - 60,
        "nbf": min(now, now + lifetime) - 60,
        "exp": now + lifetime,
        "azp": CALLER_APP,
        "oid": user_oid(user),
        "sub": f"sub-{user}",
        "tid": TENANT,
        "ver": "2.0",
        "uti": uuid.uuid4().hex,
        "name": f"User {user}",
    }
    if scopes is not None:
        claims["scp"] = scopes
    if roles is not None:
        claims["roles"] = roles
    return _mint(claims, key)


def app_token(*, roles: list[str] | None = None) -> str:
    """An app-only (client credentials) v2 token."""
    now = int(time.time())
    app_oid = "a4b3c2d1-0000-4000-8000-000000000001"
    claims: dict[str, Any] = {
        "aud": API_CLIENT_ID,
        "iss": ISSUER,
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + 3600,
        "azp": CALLER_APP,
        "oid": app_oid,
        "sub": app_oid,
        "tid": TENANT,
        "ver": "2.0",
        "idtyp": "app",
        "roles": roles if roles is not None else ["Echo.All"],
        "uti": uuid.uuid4().hex,
    }
    return _mint(claims)


def forged_token(user: int = 1) -> str:
    """A well-formed token signed by a key the JWKS does not hold (same `kid`)."""
    return user_token(user, key="forger")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)
