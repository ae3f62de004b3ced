"""One exception tree for grpc_obo, and the single table that maps it to gRPC status codes.

    GrpcOboError
    ├── ConfigurationError                 bad options, found at construction
    ├── MissingIdentityError               no verified identity where one is needed
    ├── TokenValidationError (reason)      the bearer token is not acceptable -> UNAUTHENTICATED
    │   ├── MissingTokenError
    │   ├── MalformedTokenError
    │   ├── InvalidSignatureError
    │   ├── UnknownKeyError
    │   ├── ExpiredTokenError
    │   ├── NotYetValidError
    │   ├── InvalidIssuerError
    │   ├── InvalidAudienceError
    │   ├── InvalidClaimError
    │   ├── NotAnAccessTokenError
    │   └── AuthContextRequiredError       step-up: sign in again with the claims it names
    ├── AccessDeniedError (reason)         a valid token that may not call this -> PERMISSION_DENIED
    │   ├── InsufficientScopeError
    │   ├── AppTokenNotAllowedError
    │   ├── UserTokenNotAllowedError
    │   ├── TenantNotAllowedError
    │   └── ClientNotAllowedError
    ├── KeySourceUnavailableError          no usable signing keys -> UNAVAILABLE
    ├── TokenExchangeError                 the authority refused or failed an exchange
    │   ├── ClaimsChallengeError           interaction_required / claims -> UNAUTHENTICATED
    │   ├── InvalidGrantError              the assertion is no longer good -> UNAUTHENTICATED
    │   │   └── ConsentRequiredError       no consent for the downstream API -> PERMISSION_DENIED
    │   └── AuthorityUnavailableError      5xx, 429, timeouts after retries -> UNAVAILABLE
    ├── DownstreamError (code, challenge)  an On-Behalf-Of call failed: relayed by grpc_obo._relay's
    │                                      table, with a rebuilt challenge
    └── ValidatorFailedError               a validator raised something unexpected -> INTERNAL

Messages are fixed, human-readable sentences. They never contain a token, a secret or key
material: every class takes only the specific context (`reason`, `claim`, authority error codes)
as keyword attributes. Every class carries `message` (the fixed sentence a refused caller is
told) and `reason` (a bounded machine-readable name, or None).

The decisions about an error are class attributes, read here and nowhere inferred from names:
`service_fault` (the service must act, so a span is marked as an error; a refused token or a
missing permission is an answer, not a fault) and `log_level` (how loudly the server logs a
refusal). `_tree` holds the classes; `_status` the one table of status codes (`status_for`)
and the challenges (`www_authenticate_for`); `_checks` the checks constructors run on their
settings (a wrong type is a `ConfigurationError` naming the setting, never a `TypeError`).
"""

from grpc_obo._errors._status import status_for, www_authenticate_for
from grpc_obo._errors._tree import (
    AccessDeniedError,
    AppTokenNotAllowedError,
    AuthContextRequiredError,
    AuthorityUnavailableError,
    ClaimsChallengeError,
    ClientNotAllowedError,
    ConfigurationError,
    ConsentRequiredError,
    DownstreamError,
    ExpiredTokenError,
    GrpcOboError,
    InsufficientScopeError,
    InvalidAudienceError,
    InvalidClaimError,
    InvalidGrantError,
    InvalidIssuerError,
    InvalidSignatureError,
    KeySourceUnavailableError,
    MalformedTokenError,
    MissingIdentityError,
    MissingTokenError,
    NotAnAccessTokenError,
    NotYetValidError,
    TenantNotAllowedError,
    TokenExchangeError,
    TokenValidationError,
    UnknownKeyError,
    UserTokenNotAllowedError,
    ValidatorFailedError,
)

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
    "status_for",
    "www_authenticate_for",
]
