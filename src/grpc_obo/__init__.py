"""grpc_obo: Zero Trust service chains on asyncio gRPC with Microsoft Entra ID.

Server interceptors validate bearer tokens and put a verified `Identity` into the request
context; client interceptors exchange the caller's token On-Behalf-Of the user before outbound
calls. This module lists the whole public API.
"""

from grpc_obo._client import AppOnly, OnBehalfOf
from grpc_obo._errors import (
    AccessDeniedError,
    AppTokenNotAllowedError,
    AuthorityUnavailableError,
    ClaimsChallengeError,
    ClientNotAllowedError,
    ConfigurationError,
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
    status_for,
    www_authenticate_for,
)
from grpc_obo._exchange import (
    CachedToken,
    ClientCredential,
    ConfidentialClient,
    MemoryTokenStore,
    RedisTokenStore,
    TokenCache,
    TokenSealer,
    TokenStore,
)
from grpc_obo._exchange._retry import RetryPolicy
from grpc_obo._identity import (
    Identity,
    IdentityKind,
    SecretToken,
    current_identity,
    use_identity,
)
from grpc_obo._policy import Callers, MethodPolicy, Policy, requires
from grpc_obo._server import AuthServerInterceptor, TokenValidatorLike, server_interceptor
from grpc_obo._telemetry import Telemetry
from grpc_obo._validation import TokenValidator, ValidatorOptions
from grpc_obo._version import __version__

__all__ = [
    "AccessDeniedError",
    "AppOnly",
    "AppTokenNotAllowedError",
    "AuthServerInterceptor",
    "AuthorityUnavailableError",
    "CachedToken",
    "Callers",
    "ClaimsChallengeError",
    "ClientCredential",
    "ClientNotAllowedError",
    "ConfidentialClient",
    "ConfigurationError",
    "ExpiredTokenError",
    "GrpcOboError",
    "Identity",
    "IdentityKind",
    "InsufficientScopeError",
    "InvalidAudienceError",
    "InvalidClaimError",
    "InvalidGrantError",
    "InvalidIssuerError",
    "InvalidSignatureError",
    "KeySourceUnavailableError",
    "MalformedTokenError",
    "MemoryTokenStore",
    "MethodPolicy",
    "MissingIdentityError",
    "MissingTokenError",
    "NotAnAccessTokenError",
    "NotYetValidError",
    "OnBehalfOf",
    "Policy",
    "RedisTokenStore",
    "RetryPolicy",
    "SecretToken",
    "Telemetry",
    "TenantNotAllowedError",
    "TokenCache",
    "TokenExchangeError",
    "TokenSealer",
    "TokenStore",
    "TokenValidationError",
    "TokenValidator",
    "TokenValidatorLike",
    "UnknownKeyError",
    "UserTokenNotAllowedError",
    "ValidatorOptions",
    "__version__",
    "current_identity",
    "requires",
    "server_interceptor",
    "status_for",
    "use_identity",
    "www_authenticate_for",
]
