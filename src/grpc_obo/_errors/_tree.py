"""The classes of grpc_obo's one exception tree (drawn in `grpc_obo._errors`), with the decisions
about each as class attributes: `service_fault`, `log_level`, `message`, `reason`.

Messages are fixed, human-readable sentences. They never contain a token, a secret or key
material: every class takes only the specific context (`reason`, `claim`, authority error codes)
as keyword attributes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import ClassVar

import grpc

__all__ = [
    "AccessDeniedError",
    "AppTokenNotAllowedError",
    "AuthContextRequiredError",
    "AuthorityUnavailableError",
    "ClaimsChallengeError",
    "ClientNotAllowedError",
    "ConfigurationError",
    "ConsentRequiredError",
    "DownstreamError",
    "ExpiredTokenError",
    "GrpcOboError",
    "InsufficientScopeError",
    "InvalidAudienceError",
    "InvalidClaimError",
    "InvalidGrantError",
    "InvalidIssuerError",
    "InvalidSignatureError",
    "KeySourceUnavailableError",
    "MalformedTokenError",
    "MissingIdentityError",
    "MissingTokenError",
    "NotAnAccessTokenError",
    "NotYetValidError",
    "TenantNotAllowedError",
    "TokenExchangeError",
    "TokenValidationError",
    "UnknownKeyError",
    "UserTokenNotAllowedError",
    "ValidatorFailedError",
]


class GrpcOboError(Exception):
    """Root of every error grpc_obo raises on purpose."""

    default_reason: ClassVar[str | None] = None
    service_fault: ClassVar[bool] = True
    """Whose fault: True when the service (its configuration or dependencies) must act."""
    log_level: ClassVar[int] = logging.DEBUG
    """How loudly the server logs a call refused for this error."""

    def __init__(self, message: str = "grpc_obo failed", *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        """The fixed sentence a refused caller is told: never a token, secret or inner host."""
        self.reason = reason or self.default_reason
        """A bounded machine-readable name for the failure (telemetry's `reason`), or None."""


class ConfigurationError(GrpcOboError, ValueError):
    """Options that cannot work; raised at construction so start-up fails, not the first call."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
        """The option at fault (`tenant`, `authority_host`), when one is; `from_env()` names
        the variable it reads that option from."""


class MissingIdentityError(GrpcOboError):
    """Code asked for the caller's identity outside an authenticated RPC (never falls back)."""

    service_fault = False


class TokenValidationError(GrpcOboError):
    """The bearer token is missing, malformed, or fails an Entra rule."""

    default_reason = "invalid_token"
    service_fault = False

    def __init__(self, message: str, *, reason: str | None = None, claim: str | None = None):
        super().__init__(message, reason=reason)
        self.claim = claim


class MissingTokenError(TokenValidationError):
    """No usable `authorization: Bearer` metadata."""

    default_reason = "missing_token"


class MalformedTokenError(TokenValidationError):
    """Not a compact JWS we accept (size, segments, encoding, JSON, header parameters)."""

    default_reason = "malformed"


class InvalidSignatureError(TokenValidationError):
    """The signature does not verify with the key named by the token."""

    default_reason = "bad_signature"


class UnknownKeyError(TokenValidationError):
    """The token names a key the issuer does not publish (even after a refresh)."""

    default_reason = "unknown_key"


class ExpiredTokenError(TokenValidationError):
    """`exp` is in the past (beyond the leeway)."""

    default_reason = "expired"


class NotYetValidError(TokenValidationError):
    """`nbf` or `iat` is in the future (beyond the leeway)."""

    default_reason = "not_yet_valid"


class InvalidIssuerError(TokenValidationError):
    """`iss` is not exactly the issuer expected for this token version and tenant."""

    default_reason = "bad_issuer"


class InvalidAudienceError(TokenValidationError):
    """`aud` is not one of this API's identifiers."""

    default_reason = "bad_audience"


class InvalidClaimError(TokenValidationError):
    """A required claim is missing or has the wrong type or form."""

    default_reason = "bad_claim"


class NotAnAccessTokenError(TokenValidationError):
    """Neither `scp` nor `roles`: an ID token or something else that is not for this API."""

    default_reason = "not_access_token"


class AuthContextRequiredError(TokenValidationError):
    """The sign-in lacks a Conditional Access authentication context (`acrs`) the method needs.

    Answered with a claims challenge (`insufficient_claims`, claims
    `{"access_token":{"acrs":{"essential":true,"value":"c1"}}}`): the client app signs the user
    in again with those claims (step-up), as Entra's authentication context guide describes.
    """

    default_reason = "insufficient_claims"

    def __init__(self, message: str, *, auth_context: str) -> None:
        super().__init__(message, claim="acrs")
        self.auth_context = auth_context

    @property
    def claims(self) -> str:
        """The claims request a new sign-in must carry (JSON)."""
        return json.dumps(
            {"access_token": {"acrs": {"essential": True, "value": self.auth_context}}},
            separators=(",", ":"),
        )


class AccessDeniedError(GrpcOboError):
    """A valid token whose principal may not call this method."""

    default_reason = "access_denied"
    service_fault = False

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        required_scopes: Sequence[str] = (),
        required_roles: Sequence[str] = (),
    ):
        super().__init__(message, reason=reason)
        self.required_scopes = tuple(required_scopes)
        self.required_roles = tuple(required_roles)


class InsufficientScopeError(AccessDeniedError):
    """The token lacks the delegated scopes or app roles the method requires."""

    default_reason = "insufficient_scope"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        required_scopes: Sequence[str] = (),
        required_roles: Sequence[str] = (),
    ):
        # Roles are assigned by an administrator, never requested by a client: their own
        # reason, and (see www_authenticate_for) never in the challenge's `scope=`.
        if reason is None and required_roles and not required_scopes:
            reason = "insufficient_role"
        super().__init__(
            message, reason=reason, required_scopes=required_scopes, required_roles=required_roles
        )


class AppTokenNotAllowedError(AccessDeniedError):
    """An app-only token on a method that acts for a user."""

    default_reason = "app_token_not_allowed"


class UserTokenNotAllowedError(AccessDeniedError):
    """A delegated token on a method reserved for applications."""

    default_reason = "user_token_not_allowed"


class TenantNotAllowedError(AccessDeniedError):
    """The token's tenant is not on this API's allow-list."""

    default_reason = "tenant_not_allowed"


class ClientNotAllowedError(AccessDeniedError):
    """The calling client app (`azp`/`appid`) is not allowed to call this API."""

    default_reason = "client_not_allowed"


class KeySourceUnavailableError(GrpcOboError):
    """Signing keys could not be fetched and no earlier good key set is cached."""

    log_level = logging.WARNING

    def __init__(
        self,
        message: str = "signing keys are unavailable",
        *,
        url: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        """The discovery or JWKS URL whose fetch failed last (public; never a secret)."""
        self.detail = detail

    def __str__(self) -> str:
        # NOTE: `str()` (logs, tracebacks, the CLI) names the URL that failed and how; `message`,
        # which a refused caller gets as the status details, stays the fixed sentence.
        if self.url:
            return f"{self.message} ({self.detail or 'failed'}: {self.url})"
        return self.message


class TokenExchangeError(GrpcOboError):
    """The authority refused or failed a token request. Carries Entra's error fields, no token."""

    # NOTE: an exchange refused for the service's own reasons gets one WARNING line an operator
    # can take to Entra (its error codes, correlation id and hint); the user's own are DEBUG.
    log_level = logging.WARNING

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        suberror: str | None = None,
        error_codes: Sequence[int] = (),
        correlation_id: str | None = None,
        claims: str | None = None,
        hint: str | None = None,
    ):
        super().__init__(message)
        self.hint = hint
        """For the operator: which setting or variable to check (never a secret's value)."""
        self.error = error
        self.suberror = suberror
        self.error_codes = tuple(error_codes)
        self.correlation_id = correlation_id
        self.claims = claims
        """A claims challenge (JSON) the client must satisfy by signing in again, if any."""

    def __str__(self) -> str:
        # NOTE: `str()` (logs, tracebacks, start-up) adds the hint naming the setting to fix;
        # `message`, which a refused caller gets as the status details, stays the fixed sentence.
        return f"{self.message}: {self.hint}" if self.hint else self.message


class ClaimsChallengeError(TokenExchangeError):
    """The user must sign in again to satisfy a claims challenge (MFA, conditional access, CAE)."""

    service_fault = False
    log_level = logging.DEBUG


class InvalidGrantError(TokenExchangeError):
    """The incoming assertion cannot be exchanged (expired, revoked, not consented)."""

    service_fault = False
    log_level = logging.DEBUG


class ConsentRequiredError(InvalidGrantError):
    """The user or an administrator has not consented to the downstream API (AADSTS65001)."""

    # An administrator must act: the operator hears of it, though the call is refused as usual.
    log_level = logging.WARNING


class DownstreamError(GrpcOboError):
    """An outbound On-Behalf-Of call failed in a way the original caller must see.

    Relayed by the server interceptor when the handler does not catch the downstream's
    `AioRpcError`: the status from `grpc_obo._relay`'s table, the downstream's challenge rebuilt
    from an allow-list (claims kept), a fixed message instead of the downstream's details
    (which may name inner hosts).
    """

    def __init__(self, message: str, *, code: grpc.StatusCode, challenge: str | None = None):
        super().__init__(message)
        self.code = code
        self.challenge = challenge


class AuthorityUnavailableError(TokenExchangeError):
    """The authority did not answer usably within the call's deadline (5xx, 429, network)."""


class ValidatorFailedError(GrpcOboError):
    """The validator raised something unexpected; the client learns nothing more (INTERNAL)."""

    def __init__(self, message: str = "token validation failed") -> None:
        super().__init__(message)
