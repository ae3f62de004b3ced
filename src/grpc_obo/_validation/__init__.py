"""Bearer-token validation for Entra ID access tokens: no grpc import anywhere in this package.

_options.py    ValidatorOptions: typed, validated configuration
_jose.py       hardened compact-JWS parsing and RS256 verification
_keys.py       JWKS parsing, static and discovery-based key sources (refresh, single flight)
_rules.py      the Entra claim rules: pure functions from verified claims to an Identity
_cache.py      the bounded cache of verified tokens
_validator.py  TokenValidator: the async entry point that ties them together
"""

from grpc_obo._validation._jose import parse_compact
from grpc_obo._validation._options import ValidatorOptions
from grpc_obo._validation._validator import TokenValidator

# `parse_compact`: the strict parser, for `grpc-obo decode` to say what the validator refuses.
__all__ = ["TokenValidator", "ValidatorOptions", "parse_compact"]
