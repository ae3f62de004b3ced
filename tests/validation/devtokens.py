"""Helpers for testing `TokenValidator` against the dev authority over HTTPS.

Every token minted through `record()` lands in `MINTED`, so the no-leak checks can search logs,
exception texts, status details and trailing metadata for each token and for its payload and
signature segments. `ShiftedClock` drives the validator's refresh timing without sleeping.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterable
from typing import Any

import jwt

from grpc_obo import ValidatorOptions
from grpc_obo.devauthority import CONTOSO, FABRIKAM, DevAuthority

__all__ = [
    "CONTOSO",
    "FABRIKAM",
    "MINTED",
    "ShiftedClock",
    "dev_options",
    "kid_of",
    "leaked",
    "record",
    "tampered",
    "with_kid",
]

MINTED: list[str] = []
"""Every token these tests minted (good and bad)."""


def record(token: str) -> str:
    MINTED.append(token)
    return token


class ShiftedClock:
    """Wall-clock time plus an offset the test moves forward (tokens are minted in real time)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def dev_options(
    authority: DevAuthority,
    api: str = "original",
    *,
    multi_tenant: bool = False,
    **overrides: Any,
) -> ValidatorOptions:
    """Options for `api` fetching keys from `authority` over HTTPS (its own CA trusted)."""
    app = authority.world.app(api)
    audiences = {app.client_id}
    if app.app_id_uri:
        audiences.add(app.app_id_uri)
    settings: dict[str, Any] = {
        "tenant": "organizations" if multi_tenant else authority.tenant_id,
        "audiences": frozenset(audiences),
        "authority_host": authority.base_url,
        "v1_issuer_host": authority.base_url,
        "ssl_context": authority.client_ssl_context(),
        "versions": frozenset({"1.0", "2.0"}),
        "http_timeout": 5.0,
    }
    if multi_tenant:
        settings["allowed_tenants"] = frozenset({CONTOSO, FABRIKAM})
    settings.update(overrides)
    return ValidatorOptions(**settings)


def kid_of(token: str) -> str:
    kid = jwt.get_unverified_header(token)["kid"]
    assert isinstance(kid, str)
    return kid


def with_kid(authority: DevAuthority, token: str, kid: str | None = None) -> str:
    """`token`'s claims signed again by the authority's signing key, naming another `kid`."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return record(authority.minter.sign(claims, headers={"kid": kid or secrets.token_hex(12)}))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def tampered(token: str, **changes: Any) -> str:
    """`token` with its payload changed and its signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return record(f"{header}.{_b64(json.dumps(claims).encode())}.{signature}")


def leaked(texts: Iterable[str], tokens: Iterable[str] | None = None) -> list[str]:
    """Which tokens (whole, or their payload or signature segment) appear in `texts`."""
    blob = "\n".join(texts)
    found = []
    for token in MINTED if tokens is None else tokens:
        pieces = [token, *(p for p in token.split(".")[1:] if len(p) >= 16)]
        if any(piece in blob for piece in pieces):
            found.append(token[:12] + "...")
    return found
