"""Test tokens: our own RSA keys, JWKS documents, and tokens with full control over every byte.

`mint()` signs normal tokens with PyJWT; `sign_segments()` signs arbitrary header/payload bytes so
malicious shapes (duplicate keys, odd headers) still carry a *valid* signature and fail for the
reason under test. Every token made here is recorded in `MINTED`, so the leak test can search
logs and exception texts for all of them.
"""

from __future__ import annotations

import base64
import functools
import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
API_CLIENT_ID = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
APP_ID_URI = "api://contoso-orders"
CALLER_APP = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
USER_OID = "00000000-0000-0000-66f3-3332eca7ea81"
AUTHORITY = "https://login.microsoftonline.com"
NOW = 1_700_000_000

MINTED: list[str] = []
"""Every token this module produced (for the no-leak checks)."""


def _record(token: str) -> str:
    MINTED.append(token)
    return token


def rsa_key(name: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """A private key per name, generated once per test session (generation is the slow part)."""
    return _rsa_key(name, bits)


@functools.cache
def _rsa_key(name: str, bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def jwk(name: str, *, kid: str | None = None, bits: int = 2048, **extra: Any) -> dict[str, Any]:
    """The public JWK for `rsa_key(name)`; `kid` defaults to the name. `extra` overrides members."""
    numbers = rsa_key(name, bits).public_key().public_numbers()
    key: dict[str, Any] = {
        "kty": "RSA",
        "use": "sig",
        "kid": kid if kid is not None else name,
        "x5t": kid if kid is not None else name,
        "n": _int_b64(numbers.n),
        "e": _int_b64(numbers.e),
    }
    key.update(extra)
    return {k: v for k, v in key.items() if v is not None}


def jwks(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(keys)}


def v2_claims(now: int = NOW, *, authority: str = AUTHORITY, **overrides: Any) -> dict[str, Any]:
    """A delegated v2 access token for the API from `authority`, issued `now`, valid an hour."""
    claims: dict[str, Any] = {
        "aud": API_CLIENT_ID,
        "iss": f"{authority}/{TENANT}/v2.0",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "azp": CALLER_APP,
        "azpacr": "0",
        "name": "Megan Bowen",
        "oid": USER_OID,
        "preferred_username": "megan@contoso.example",
        "scp": "Orders.Read Orders.Write",
        "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        "tid": TENANT,
        "uti": "AbCdEf",
        "ver": "2.0",
        "xms_cc": ["cp1"],
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def v2_app_claims(
    now: int = NOW, *, authority: str = AUTHORITY, **overrides: Any
) -> dict[str, Any]:
    """An app-only (client credentials) v2 token with an app role."""
    base = v2_claims(
        now,
        authority=authority,
        scp=None,
        name=None,
        preferred_username=None,
        xms_cc=None,
        oid="a4b3c2d1-0000-4000-8000-000000000001",
        sub="a4b3c2d1-0000-4000-8000-000000000001",
        roles=["Orders.ReadAll"],
        idtyp="app",
    )
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def v1_claims(now: int = NOW, **overrides: Any) -> dict[str, Any]:
    """A delegated v1 access token whose audience is the App ID URI."""
    base = v2_claims(
        now,
        aud=APP_ID_URI,
        iss=f"https://sts.windows.net/{TENANT}/",
        ver="1.0",
        azp=None,
        azpacr=None,
        preferred_username=None,
        appid=CALLER_APP,
        appidacr="0",
        upn="megan@contoso.example",
        unique_name="megan@contoso.example",
    )
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def mint(
    claims: dict[str, Any],
    *,
    key: str = "key-a",
    kid: str | None = None,
    headers: dict[str, Any] | None = None,
) -> str:
    """A normal RS256 token signed by `rsa_key(key)` with header `kid` (default: the key name)."""
    header: dict[str, Any] = {"typ": "JWT", "kid": kid if kid is not None else key}
    header.update(headers or {})
    header = {k: v for k, v in header.items() if v is not None}
    token = jwt.encode(claims, rsa_key(key), algorithm="RS256", headers=header)
    return _record(token)


def sign_segments(
    header: bytes | dict[str, Any], payload: bytes | dict[str, Any], *, key: str = "key-a"
) -> str:
    """Sign arbitrary header/payload bytes (dicts become JSON) with RS256: a valid signature."""
    raw_header = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw_payload = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64url(raw_header)}.{b64url(raw_payload)}".encode()
    signature = rsa_key(key).sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return _record(f"{signing_input.decode()}.{b64url(signature)}")


def record(token: str) -> str:
    """Register a hand-built token for the no-leak checks."""
    return _record(token)


def random_kid() -> str:
    return uuid.uuid4().hex


class FakeClock:
    """A clock the test moves by hand: `clock()` is the current epoch second."""

    def __init__(self, now: float = NOW) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wall_now() -> int:
    return int(time.time())
