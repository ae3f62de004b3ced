"""The Entra access-token rules: pure functions from signature-verified claims to an `Identity`.

No I/O and no clock of their own (`now` is an argument), so each rule is a unit test away.
Order matters for the answer a caller gets: first "is this a valid token for this API at all"
(`TokenValidationError`, UNAUTHENTICATED), only then "may this principal call us"
(`AccessDeniedError`: tenant and client allow-lists, PERMISSION_DENIED).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from grpc_obo._errors import (
    ClientNotAllowedError,
    ExpiredTokenError,
    InvalidAudienceError,
    InvalidClaimError,
    InvalidIssuerError,
    NotAnAccessTokenError,
    NotYetValidError,
    TenantNotAllowedError,
)
from grpc_obo._identity import Identity, IdentityKind, SecretToken
from grpc_obo._validation._jwks import SigningKey
from grpc_obo._validation._options import GRAPH_AUDIENCES, ValidatorOptions, is_guid

__all__ = ["check_claims", "check_times", "classify"]

_TENANT_PLACEHOLDER = "{tenantid}"

# NOTE: past 2**53 an int is no longer exact as a float, and past ~1.8e308 float() overflows:
# `exp + leeway` would end as an OverflowError (INTERNAL) instead of a refused token.
_TIME_LIMIT = 2**53

# Claims that name a person. Entra's client-credentials tokens carry none of them ("applications
# don't have names"), so any of them marks a token as a user's.
_USER_NAME_CLAIMS = (
    "preferred_username",
    "upn",
    "unique_name",
    "name",
    "given_name",
    "family_name",
    "email",
)


# NOTE: a verified identity lives in the verified-token cache until its token expires, for every
# active user: what all users of a tenant and application have in common is shared, not copied
# per token (memory per cached token, issue 23). Strings go through sys.intern (entries leave
# the intern table when the last identity holding them goes); sets of scopes, roles and client
# capabilities through this bounded table, emptied when full (it only ever misses then).
# NOTE: not grpc_obo._common.LRU, on purpose: only verified tokens reach it, a deployment's
# distinct scope and role sets are far fewer than 1024, and emptying it costs at most one
# more copy of each set for the identities cached after that. Three lookups per cold
# validation through an LRU cost ~0.3 µs more (see `_HEADERS` in `_jose` for the measurement).
_SHARED_SETS: dict[object, frozenset[str]] = {}
_MAX_SHARED_SETS = 1024
_EMPTY: frozenset[str] = frozenset()


def _shared_set(key: object, items: list[str]) -> frozenset[str]:
    known = _SHARED_SETS.get(key)
    if known is None:
        if len(_SHARED_SETS) >= _MAX_SHARED_SETS:
            _SHARED_SETS.clear()
        known = _SHARED_SETS[key] = frozenset(sys.intern(item) for item in items)
    return known


def _claim_error(claim: str, message: str, reason: str = "bad_claim") -> InvalidClaimError:
    return InvalidClaimError(message, reason=reason, claim=claim)


def _optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None and name not in claims:
        return None
    if not isinstance(value, str):
        raise _claim_error(name, f"claim '{name}' must be a string")
    return value


def _int_claim(claims: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    if name not in claims:
        if required:
            raise _claim_error(name, f"claim '{name}' is missing", "missing_claim")
        return None
    value = claims[name]
    # NOTE: `type(...) is int` refuses bool (True == 1), floats and numeric strings, all of
    # which PyJWT would accept for exp/nbf/iat.
    if type(value) is not int:
        raise _claim_error(name, f"claim '{name}' must be an integer")
    if not 0 <= value < _TIME_LIMIT:
        raise _claim_error(name, f"claim '{name}' is out of range")
    return value


def check_times(
    claims: Mapping[str, Any], *, now: float, leeway: float, max_lifetime: float | None = None
) -> int:
    """Check `exp`, `nbf` and `iat` against `now` with `leeway`; return `exp`.

    Each is an integer in 0 <= t < 2**53. Then, in this order: expired, not yet valid, `iat`
    after `exp` (refused whatever the leeway), and with `max_lifetime`, `exp - iat` too long.
    """
    exp = _int_claim(claims, "exp", required=True)
    nbf = _int_claim(claims, "nbf", required=False)
    iat = _int_claim(claims, "iat", required=True)
    assert exp is not None and iat is not None
    # Expiry first: "expired" is the answer a client can act on (get a new token), and a token
    # past its `exp` is refused whatever else is wrong with its times.
    if now > exp + leeway:
        raise ExpiredTokenError("token expired")
    if nbf is not None and now + leeway < nbf:
        raise NotYetValidError("token is not valid yet")
    if now + leeway < iat:
        raise NotYetValidError("token was issued in the future")
    if iat > exp:
        raise _claim_error("iat", "token was issued after it expires")
    if max_lifetime is not None and exp - iat > max_lifetime:
        raise _claim_error("exp", "token lifetime is longer than accepted", "lifetime_too_long")
    return exp


def _check_issuer(
    claims: Mapping[str, Any], version: str, tid: str, key: SigningKey, options: ValidatorOptions
) -> str:
    issuer = claims.get("iss")
    if not isinstance(issuer, str):
        raise InvalidIssuerError("token has no issuer", reason="bad_issuer")
    # Single tenant: the issuer and `tid` are fixed by configuration. Multi-tenant: the issuer
    # is templated with the token's own GUID `tid`, and still compared exactly; either way the
    # issuer and `tid` (which the Identity is keyed by) cannot disagree.
    if not options.is_multi_tenant and tid != options.tenant:
        raise InvalidIssuerError("token is from another tenant")
    if issuer != options.issuer_for(version, tid):
        raise InvalidIssuerError("token issuer is not accepted")
    if key.issuer is not None:
        # The JWKS binds keys to issuers (Entra: `.../{tenantid}/v2.0`; a consumer-account key
        # names the MSA tenant). A key set serves both token versions, so the key's issuer may
        # be in either version's form, but it must name this authority and the token's tenant.
        key_issuer = key.issuer.replace(_TENANT_PLACEHOLDER, tid)
        if key_issuer not in (options.issuer_for("2.0", tid), options.issuer_for("1.0", tid)):
            raise InvalidIssuerError(
                "token issuer does not match its signing key", reason="key_issuer_mismatch"
            )
    return issuer


def _check_audience(claims: Mapping[str, Any], options: ValidatorOptions) -> str:
    audience = claims.get("aud")
    if not isinstance(audience, str):
        # PyJWT accepts a list containing ours; an access token for us has exactly one audience.
        raise InvalidAudienceError("token audience must be a single string")
    if audience in GRAPH_AUDIENCES:
        raise InvalidAudienceError("token is for Microsoft Graph", reason="graph_token")
    if audience not in options.audiences:
        raise InvalidAudienceError("token is not for this API")
    return audience


def _looks_like_a_user(claims: Mapping[str, Any]) -> bool:
    if any(name in claims for name in _USER_NAME_CLAIMS):
        return True
    # Entra app-only tokens carry the service principal's object id as both `oid` and `sub` (a
    # recorded client-credentials token carries neither); a user's `sub` is pairwise per
    # application, never its `oid`.
    return claims.get("oid") != claims.get("sub")


def _kind(claims: Mapping[str, Any]) -> IdentityKind | None:
    """USER, APP, or None when a token without `scp` or `idtyp` looks like a user's."""
    idtyp = claims.get("idtyp")
    scp = claims.get("scp")
    if idtyp is not None or "idtyp" in claims:
        if idtyp == "app":
            if scp is not None:
                raise _claim_error("idtyp", "an app-only token cannot carry delegated scopes")
            return IdentityKind.APP
        if idtyp == "user":
            return IdentityKind.USER
        raise _claim_error("idtyp", "claim 'idtyp' has an unknown value")
    if scp is not None:
        return IdentityKind.USER
    return None if _looks_like_a_user(claims) else IdentityKind.APP


def _ambiguous() -> InvalidClaimError:
    return _claim_error(
        "idtyp",
        "token has no 'scp' or 'idtyp' and looks like a user's: app-only or delegated is unclear",
        "ambiguous_token_kind",
    )


def classify(claims: Mapping[str, Any]) -> IdentityKind:
    """Delegated (USER) or app-only (APP).

    `idtyp` decides when present (the only exact answer: request it as an optional claim). Without
    it, `scp` means delegated; no `scp` means app-only only for an app-shaped token (`oid == sub`,
    no name claims). A token without `scp` that looks like a user's (a user with app roles and no
    delegated scope) is refused as ambiguous rather than taken for an application.
    """
    kind = _kind(claims)
    if kind is None:
        raise _ambiguous()
    return kind


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    if "scp" not in claims:
        return _EMPTY
    scp = claims["scp"]
    if not isinstance(scp, str) or not scp.strip():
        raise _claim_error("scp", "claim 'scp' must be a non-empty space-separated string")
    return _shared_set(scp, scp.split())


def _string_list(claims: Mapping[str, Any], name: str, *, allow_string: bool) -> frozenset[str]:
    if name not in claims:
        return _EMPTY
    value = claims[name]
    if allow_string and isinstance(value, str):
        return _shared_set((value,), [value])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _claim_error(name, f"claim '{name}' must be an array of strings")
    return _shared_set(tuple(value), value) if value else _EMPTY


def _guid_claim(claims: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = claims.get(name)
    if value is None and name not in claims:
        if required:
            raise _claim_error(name, f"claim '{name}' is missing", "missing_claim")
        return None
    if not is_guid(value):
        raise _claim_error(name, f"claim '{name}' must be a GUID")
    assert isinstance(value, str)
    return value


def check_claims(
    claims: Mapping[str, Any],
    *,
    key: SigningKey,
    options: ValidatorOptions,
    now: float,
    token: str,
) -> Identity:
    """Apply every Entra rule to signature-verified `claims`; return who the token is for."""
    version = claims.get("ver")
    if version not in ("1.0", "2.0"):
        raise _claim_error("ver", 'claim \'ver\' must be "1.0" or "2.0"')
    assert isinstance(version, str)
    if version not in options.versions:
        # Names the version (one of two fixed strings) and the option, never a claim value.
        accepted = ", ".join(f'"{v}"' for v in sorted(options.versions))
        raise _claim_error(
            "ver",
            f"token version {version} is not accepted (ValidatorOptions versions={{{accepted}}})",
            "version_not_accepted",
        )
    tid = _guid_claim(claims, "tid", required=True)
    assert tid is not None
    issuer = _check_issuer(claims, version, tid, key, options)
    audience = _check_audience(claims, options)
    exp = check_times(claims, now=now, leeway=options.leeway, max_lifetime=options.max_lifetime)

    kind = _kind(claims)
    scopes = _scopes(claims)
    roles = _string_list(claims, "roles", allow_string=False)
    client_id = _optional_str(claims, "azp" if version == "2.0" else "appid")
    if not scopes and not roles:
        # An ID token, or an app token that grants nothing. The latter exists (a client with
        # no app role assignment) and is accepted only when the options say so.
        tolerated = (
            options.accept_app_tokens_without_roles
            and kind is IdentityKind.APP
            and client_id is not None
            and "nonce" not in claims
        )
        if not tolerated and kind is IdentityKind.APP and client_id and "nonce" not in claims:
            # An access token all the same: say what the calling app lacks, not "not a token".
            raise NotAnAccessTokenError(
                "app-only tokens need an app role of this API; this one carries none (assign "
                "one to the calling application)",
                reason="app_token_without_roles",
            )
        if not tolerated:
            raise NotAnAccessTokenError("token is not an access token for this API")
    if kind is None:
        # After the test above: a user-shaped token granting nothing is an ID token first.
        raise _ambiguous()

    oid = _guid_claim(claims, "oid", required=kind is IdentityKind.USER)
    sub = _optional_str(claims, "sub")
    if kind is IdentityKind.USER and not sub:
        raise _claim_error("sub", "claim 'sub' is missing", "missing_claim")
    if version == "2.0":
        username = _optional_str(claims, "preferred_username")
    else:
        username = _optional_str(claims, "upn") or _optional_str(claims, "unique_name")

    # Access decisions last: the token is valid, the question is whether it may call us.
    if options.allowed_tenants is not None and tid not in options.allowed_tenants:
        raise TenantNotAllowedError("the caller's tenant is not allowed")
    if options.allowed_client_ids is not None and (
        client_id is None or client_id.lower() not in options.allowed_client_ids
    ):
        raise ClientNotAllowedError("the calling application is not allowed")

    intern = sys.intern
    return Identity(
        tid=intern(tid),
        oid=oid,
        sub=sub or oid or client_id or "",
        kind=kind,
        scopes=scopes,
        roles=roles,
        client_id=None if client_id is None else intern(client_id),
        audience=intern(audience),
        issuer=intern(issuer),
        token_version="2.0" if version == "2.0" else "1.0",
        expires_at=exp,
        name=_optional_str(claims, "name"),
        username=username,
        client_capabilities=_string_list(claims, "xms_cc", allow_string=True),
        auth_contexts=_string_list(claims, "acrs", allow_string=False),
        token=SecretToken(token),
    )
