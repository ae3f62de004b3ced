"""The one table of gRPC status codes for grpc_obo's errors (`status_for`), and the RFC 6750
challenges a refused client can act on (`www_authenticate_for`). Nothing else decides either.
"""

from __future__ import annotations

import base64

import grpc

from grpc_obo._errors._tree import (
    AccessDeniedError,
    AuthContextRequiredError,
    AuthorityUnavailableError,
    ClaimsChallengeError,
    ConfigurationError,
    ConsentRequiredError,
    DownstreamError,
    InvalidGrantError,
    KeySourceUnavailableError,
    MissingIdentityError,
    MissingTokenError,
    TokenExchangeError,
    TokenValidationError,
)

__all__ = ["status_for", "www_authenticate_for"]


# The one place that decides status codes. Order matters: first match wins, subclasses first.
_STATUS_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (TokenValidationError, grpc.StatusCode.UNAUTHENTICATED),
    (AccessDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (KeySourceUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (ClaimsChallengeError, grpc.StatusCode.UNAUTHENTICATED),
    (ConsentRequiredError, grpc.StatusCode.PERMISSION_DENIED),
    (InvalidGrantError, grpc.StatusCode.UNAUTHENTICATED),
    (AuthorityUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (TokenExchangeError, grpc.StatusCode.INTERNAL),
    (MissingIdentityError, grpc.StatusCode.INTERNAL),
    (ConfigurationError, grpc.StatusCode.INTERNAL),
)


def status_for(error: BaseException) -> grpc.StatusCode:
    """The gRPC status code for an error; anything unknown is INTERNAL."""
    if isinstance(error, DownstreamError):  # the downstream's own status, relayed
        return error.code
    for kind, code in _STATUS_TABLE:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _quote(value: str) -> str:
    # RFC 6750 auth-param values are quoted-strings: drop characters that would break the header.
    return value.replace("\\", "").replace('"', "'").replace("\r", " ").replace("\n", " ")


def www_authenticate_for(error: BaseException) -> str | None:
    """The RFC 6750 `www-authenticate` challenge a client can act on, or None."""
    if isinstance(error, MissingTokenError):
        # RFC 6750 §3.1: no error code when the request had no authentication at all.
        return "Bearer"
    if isinstance(error, AuthContextRequiredError):
        return _claims_challenge(error.message, error.claims)
    if isinstance(error, TokenValidationError):
        return f'Bearer error="invalid_token", error_description="{_quote(error.message)}"'
    if isinstance(error, AccessDeniedError):
        parts = [
            'Bearer error="insufficient_scope"',
            f'error_description="{_quote(error.message)}"',
        ]
        if error.required_scopes:  # scopes only: a role is not something a client can ask for
            parts.append(f'scope="{_quote(" ".join(error.required_scopes))}"')
        return ", ".join(parts)
    if isinstance(error, DownstreamError):
        return error.challenge
    if isinstance(error, ConsentRequiredError):
        return f'Bearer error="insufficient_scope", error_description="{_quote(error.message)}"'
    if isinstance(error, ClaimsChallengeError) and error.claims:
        return _claims_challenge(error.message, error.claims)
    if isinstance(error, InvalidGrantError):
        return f'Bearer error="invalid_token", error_description="{_quote(error.message)}"'
    return None


def _claims_challenge(message: str, claims: str) -> str:
    encoded = base64.b64encode(claims.encode("utf-8")).decode("ascii")
    return (
        'Bearer error="insufficient_claims", '
        f'error_description="{_quote(message)}", claims="{encoded}"'
    )
