"""A stand-in validator until `grpc_obo.TokenValidator` lands: real RS256 verification with PyJWT
against the one static test key, mapped onto grpc_obo's error tree. Delete when switching."""

from __future__ import annotations

from typing import Any

import jwt

from grpc_obo import (
    ExpiredTokenError,
    Identity,
    IdentityKind,
    InvalidClaimError,
    InvalidSignatureError,
    KeySourceUnavailableError,
    MalformedTokenError,
    SecretToken,
    UnknownKeyError,
)
from tests.server.tokens import API_CLIENT_ID, ISSUER, KID, private_key


class StaticKeyValidator:
    def __init__(self, *, unavailable: bool = False) -> None:
        self._key = private_key().public_key()
        self._unavailable = unavailable

    async def validate(self, token: str) -> Identity:
        if self._unavailable:
            raise KeySourceUnavailableError()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise MalformedTokenError("the token is not a well-formed JWS") from None
        if header.get("kid") != KID:
            raise UnknownKeyError("the token names an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=["RS256"],
                audience=API_CLIENT_ID,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "nbf", "tid", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise ExpiredTokenError("the token has expired") from None
        except jwt.InvalidSignatureError:
            raise InvalidSignatureError("the token signature does not verify") from None
        except jwt.PyJWTError:
            raise InvalidClaimError("the token has an invalid claim") from None
        is_app = claims.get("idtyp") == "app" or "scp" not in claims
        return Identity(
            tid=claims["tid"],
            oid=claims.get("oid"),
            sub=claims["sub"],
            kind=IdentityKind.APP if is_app else IdentityKind.USER,
            scopes=frozenset(str(claims.get("scp", "")).split()),
            roles=frozenset(claims.get("roles", ())),
            client_id=claims.get("azp"),
            audience=API_CLIENT_ID,
            issuer=ISSUER,
            expires_at=int(claims["exp"]),
            token=SecretToken(token),
        )
