"""Entra claim rules against a static JWKS: the good token passes, each bad one fails with the
right exception class and `reason`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import grpc_obo
from grpc_obo import Identity, IdentityKind, TokenValidator
from grpc_obo._validation._rules import check_times, classify
from tests.validation.tokens import (
    API_CLIENT_ID,
    APP_ID_URI,
    AUTHORITY,
    CALLER_APP,
    NOW,
    OTHER_TENANT,
    TENANT,
    USER_OID,
    FakeClock,
    jwk,
    jwks,
    mint,
    v1_claims,
    v2_app_claims,
    v2_claims,
)


async def test_good_v2_delegated_token_gives_the_user_identity(validator: TokenValidator) -> None:
    token = mint(v2_claims())
    identity = await validator.validate(token)
    assert isinstance(identity, Identity)
    assert identity.kind is IdentityKind.USER
    assert (identity.tid, identity.oid) == (TENANT, USER_OID)
    assert identity.scopes == {"Orders.Read", "Orders.Write"}
    assert identity.roles == frozenset()
    assert identity.client_id == CALLER_APP
    assert identity.username == "megan@contoso.example"
    assert identity.name == "Megan Bowen"
    assert identity.client_capabilities == {"cp1"}
    assert identity.audience == API_CLIENT_ID
    assert identity.issuer == f"{AUTHORITY}/{TENANT}/v2.0"
    assert identity.token_version == "2.0"
    assert identity.expires_at == NOW + 3600
    assert identity.token.reveal() == token


async def test_good_v1_token_uses_appid_and_upn(validator: TokenValidator) -> None:
    identity = await validator.validate(mint(v1_claims()))
    assert identity.kind is IdentityKind.USER
    assert identity.client_id == CALLER_APP
    assert identity.username == "megan@contoso.example"
    assert identity.audience == APP_ID_URI
    assert identity.token_version == "1.0"


async def test_v1_unique_name_is_the_username_fallback(validator: TokenValidator) -> None:
    identity = await validator.validate(mint(v1_claims(upn=None, unique_name="m@c.example")))
    assert identity.username == "m@c.example"


async def test_app_only_token_is_app_with_roles(validator: TokenValidator) -> None:
    identity = await validator.validate(mint(v2_app_claims()))
    assert identity.kind is IdentityKind.APP
    assert identity.roles == {"Orders.ReadAll"}
    assert identity.scopes == frozenset()


async def test_without_idtyp_no_scp_means_app_only(validator: TokenValidator) -> None:
    identity = await validator.validate(mint(v2_app_claims(idtyp=None)))
    assert identity.kind is IdentityKind.APP


async def test_user_token_with_app_roles_stays_a_user(validator: TokenValidator) -> None:
    identity = await validator.validate(mint(v2_claims(roles=["Admin"])))
    assert identity.kind is IdentityKind.USER
    assert identity.roles == {"Admin"}


async def test_x5t_only_header_finds_the_key(validator: TokenValidator) -> None:
    token = mint(v1_claims(), kid="", headers={"kid": None, "x5t": "key-b"}, key="key-b")
    identity = await validator.validate(token)
    assert identity.token_version == "1.0"


# Each case: claims (built from a good token), expected class, expected reason.
BAD_CLAIMS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("expired", v2_claims(exp=NOW - 61), grpc_obo.ExpiredTokenError, "expired"),
    ("nbf in future", v2_claims(nbf=NOW + 61), grpc_obo.NotYetValidError, "not_yet_valid"),
    ("iat in future", v2_claims(iat=NOW + 61), grpc_obo.NotYetValidError, "not_yet_valid"),
    ("exp string", v2_claims(exp=str(NOW + 3600)), grpc_obo.InvalidClaimError, "bad_claim"),
    ("exp float", v2_claims(exp=NOW + 3600.5), grpc_obo.InvalidClaimError, "bad_claim"),
    ("exp bool", v2_claims(exp=True), grpc_obo.InvalidClaimError, "bad_claim"),
    ("nbf string", v2_claims(nbf=str(NOW)), grpc_obo.InvalidClaimError, "bad_claim"),
    ("iat bool", v2_claims(iat=False), grpc_obo.InvalidClaimError, "bad_claim"),
    ("no exp", v2_claims(exp=None), grpc_obo.InvalidClaimError, "missing_claim"),
    ("no iat", v2_claims(iat=None), grpc_obo.InvalidClaimError, "missing_claim"),
    (
        "v1 issuer on v2 token",
        v2_claims(iss=f"https://sts.windows.net/{TENANT}/"),
        grpc_obo.InvalidIssuerError,
        "bad_issuer",
    ),
    (
        "issuer with trailing slash",
        v2_claims(iss=f"{AUTHORITY}/{TENANT}/v2.0/"),
        grpc_obo.InvalidIssuerError,
        "bad_issuer",
    ),
    (
        "issuer of another tenant",
        v2_claims(iss=f"{AUTHORITY}/{OTHER_TENANT}/v2.0", tid=OTHER_TENANT),
        grpc_obo.InvalidIssuerError,
        "bad_issuer",
    ),
    (
        "tid differs from issuer",
        v2_claims(tid=OTHER_TENANT),
        grpc_obo.InvalidIssuerError,
        "bad_issuer",
    ),
    ("no issuer", v2_claims(iss=None), grpc_obo.InvalidIssuerError, "bad_issuer"),
    (
        "v2 issuer on v1 token",
        v1_claims(iss=f"{AUTHORITY}/{TENANT}/v2.0"),
        grpc_obo.InvalidIssuerError,
        "bad_issuer",
    ),
    ("aud as list", v2_claims(aud=[API_CLIENT_ID]), grpc_obo.InvalidAudienceError, "bad_audience"),
    ("aud not ours", v2_claims(aud=OTHER_TENANT), grpc_obo.InvalidAudienceError, "bad_audience"),
    ("aud missing", v2_claims(aud=None), grpc_obo.InvalidAudienceError, "bad_audience"),
    (
        "Graph audience",
        v2_claims(aud="00000003-0000-0000-c000-000000000000"),
        grpc_obo.InvalidAudienceError,
        "graph_token",
    ),
    (
        "Graph URL audience",
        v1_claims(aud="https://graph.microsoft.com"),
        grpc_obo.InvalidAudienceError,
        "graph_token",
    ),
    (
        "ID token: no scp, no roles",
        v2_claims(scp=None),
        grpc_obo.NotAnAccessTokenError,
        "not_access_token",
    ),
    (
        "app token without roles",
        v2_app_claims(roles=None),
        grpc_obo.NotAnAccessTokenError,
        "app_token_without_roles",
    ),
    ("scp not a string", v2_claims(scp=["a"]), grpc_obo.InvalidClaimError, "bad_claim"),
    ("scp empty", v2_claims(scp=" "), grpc_obo.InvalidClaimError, "bad_claim"),
    (
        "roles a string",
        v2_app_claims(roles="Orders.ReadAll"),
        grpc_obo.InvalidClaimError,
        "bad_claim",
    ),
    ("roles with a number", v2_app_claims(roles=["a", 1]), grpc_obo.InvalidClaimError, "bad_claim"),
    ("user without oid", v2_claims(oid=None), grpc_obo.InvalidClaimError, "missing_claim"),
    ("oid not a GUID", v2_claims(oid="alice"), grpc_obo.InvalidClaimError, "bad_claim"),
    ("user without sub", v2_claims(sub=None), grpc_obo.InvalidClaimError, "missing_claim"),
    ("no tid", v2_claims(tid=None), grpc_obo.InvalidClaimError, "missing_claim"),
    ("tid not a GUID", v2_claims(tid="contoso"), grpc_obo.InvalidClaimError, "bad_claim"),
    ("tid uppercase", v2_claims(tid=TENANT.upper()), grpc_obo.InvalidClaimError, "bad_claim"),
    ("no ver", v2_claims(ver=None), grpc_obo.InvalidClaimError, "bad_claim"),
    ("ver 3.0", v2_claims(ver="3.0"), grpc_obo.InvalidClaimError, "bad_claim"),
    ("ver as number", v2_claims(ver=2.0), grpc_obo.InvalidClaimError, "bad_claim"),
    ("idtyp unknown", v2_claims(idtyp="device"), grpc_obo.InvalidClaimError, "bad_claim"),
    ("idtyp app with scp", v2_claims(idtyp="app"), grpc_obo.InvalidClaimError, "bad_claim"),
    ("azp not a string", v2_claims(azp=7), grpc_obo.InvalidClaimError, "bad_claim"),
    ("xms_cc of numbers", v2_claims(xms_cc=[1]), grpc_obo.InvalidClaimError, "bad_claim"),
]


@pytest.mark.parametrize(
    ("claims", "error", "reason"),
    [case[1:] for case in BAD_CLAIMS],
    ids=[case[0] for case in BAD_CLAIMS],
)
async def test_each_claim_rule_refuses_the_bad_token(
    validator: TokenValidator, claims: dict[str, Any], error: type[Exception], reason: str
) -> None:
    with pytest.raises(error) as caught:
        await validator.validate(mint(claims))
    assert getattr(caught.value, "reason", None) == reason


async def test_leeway_is_inclusive_at_its_edge(validator: TokenValidator, clock: FakeClock) -> None:
    token = mint(v2_claims(exp=NOW - 60, nbf=NOW - 3600, iat=NOW - 3600))
    assert (await validator.validate(token)).expires_at == NOW - 60
    token = mint(v2_claims(exp=NOW + 3600, nbf=NOW + 60, iat=NOW + 60))
    assert (await validator.validate(token)).expires_at == NOW + 3600
    clock.advance(-1)  # now + leeway is one second short of nbf
    with pytest.raises(grpc_obo.NotYetValidError):
        await validator.validate(mint(v2_claims(exp=NOW + 100, nbf=NOW + 60, iat=NOW)))


async def test_version_not_accepted(make_validator: Callable[..., TokenValidator]) -> None:
    validator = make_validator(versions=frozenset({"2.0"}))
    with pytest.raises(grpc_obo.InvalidClaimError) as caught:
        await validator.validate(mint(v1_claims()))
    assert caught.value.reason == "version_not_accepted"


async def test_multi_tenant_issuer_is_templated_with_a_guid_tid(
    make_validator: Callable[..., TokenValidator],
) -> None:
    validator = make_validator(tenant="organizations", allowed_tenants={TENANT, OTHER_TENANT})
    other = v2_claims(iss=f"{AUTHORITY}/{OTHER_TENANT}/v2.0", tid=OTHER_TENANT)
    assert (await validator.validate(mint(other))).tid == OTHER_TENANT
    assert (await validator.validate(mint(v2_claims()))).tid == TENANT
    # iss of one tenant with the tid of another: exact match against the template fails.
    with pytest.raises(grpc_obo.InvalidIssuerError):
        await validator.validate(mint(v2_claims(tid=OTHER_TENANT)))
    # A tid that is not a GUID cannot be templated into an issuer at all.
    with pytest.raises(grpc_obo.InvalidClaimError):
        await validator.validate(mint(v2_claims(iss=f"{AUTHORITY}/x/v2.0", tid="x")))


async def test_tenant_allow_list_refuses_other_tenants(
    make_validator: Callable[..., TokenValidator],
) -> None:
    validator = make_validator(tenant="common", allowed_tenants={TENANT})
    other = v2_claims(iss=f"{AUTHORITY}/{OTHER_TENANT}/v2.0", tid=OTHER_TENANT)
    with pytest.raises(grpc_obo.TenantNotAllowedError) as caught:
        await validator.validate(mint(other))
    assert caught.value.reason == "tenant_not_allowed"
    assert grpc_obo.status_for(caught.value).name == "PERMISSION_DENIED"


async def test_all_tenants_when_explicitly_chosen(
    make_validator: Callable[..., TokenValidator],
) -> None:
    validator = make_validator(tenant="organizations", allow_all_tenants=True)
    other = v2_claims(iss=f"{AUTHORITY}/{OTHER_TENANT}/v2.0", tid=OTHER_TENANT)
    assert (await validator.validate(mint(other))).tid == OTHER_TENANT


async def test_client_allow_list(make_validator: Callable[..., TokenValidator]) -> None:
    validator = make_validator(allowed_client_ids={CALLER_APP})
    assert (await validator.validate(mint(v2_claims()))).client_id == CALLER_APP
    assert (await validator.validate(mint(v1_claims()))).client_id == CALLER_APP
    with pytest.raises(grpc_obo.ClientNotAllowedError) as caught:
        await validator.validate(mint(v2_claims(azp=OTHER_TENANT)))
    assert caught.value.reason == "client_not_allowed"
    with pytest.raises(grpc_obo.ClientNotAllowedError):
        await validator.validate(mint(v2_claims(azp=None)))


async def test_invalid_token_is_reported_before_access_decisions(
    make_validator: Callable[..., TokenValidator],
) -> None:
    validator = make_validator(allowed_client_ids={CALLER_APP})
    with pytest.raises(grpc_obo.ExpiredTokenError):
        await validator.validate(mint(v2_claims(azp=OTHER_TENANT, exp=NOW - 3600)))


async def test_an_app_token_without_roles_is_told_it_needs_a_role(
    make_validator: Callable[..., TokenValidator],
) -> None:
    validator = make_validator()
    for claims in (v2_app_claims(roles=None), v2_app_claims(roles=None, idtyp=None)):
        with pytest.raises(grpc_obo.NotAnAccessTokenError) as caught:
            await validator.validate(mint(claims))
        assert caught.value.reason == "app_token_without_roles"
        assert "app-only tokens need an app role" in caught.value.message
        assert "not an access token" not in caught.value.message
    # An ID token is still "not an access token".
    with pytest.raises(grpc_obo.NotAnAccessTokenError) as caught:
        await validator.validate(mint(v2_claims(scp=None, azp=None)))
    assert caught.value.reason == "not_access_token"


async def test_app_token_without_roles_only_when_opted_in(
    make_validator: Callable[..., TokenValidator],
) -> None:
    validator = make_validator(accept_app_tokens_without_roles=True)
    identity = await validator.validate(mint(v2_app_claims(roles=None, idtyp=None)))
    assert identity.kind is IdentityKind.APP
    assert identity.roles == frozenset()
    # Still not an ID token: no client claim, or a nonce, keeps the refusal.
    with pytest.raises(grpc_obo.NotAnAccessTokenError):
        await validator.validate(mint(v2_app_claims(roles=None, azp=None)))
    with pytest.raises(grpc_obo.NotAnAccessTokenError):
        await validator.validate(mint(v2_app_claims(roles=None, nonce="n")))
    with pytest.raises(grpc_obo.NotAnAccessTokenError):
        # An ID token: no scp, no roles, no azp (v2 ID tokens never carry azp).
        await validator.validate(mint(v2_claims(scp=None, azp=None)))


async def test_key_issuer_property_is_honoured(
    make_validator: Callable[..., TokenValidator],
) -> None:
    tenant_key = jwk("key-a", issuer=f"{AUTHORITY}/{{tenantid}}/v2.0")
    msa_key = jwk("key-b", issuer=f"{AUTHORITY}/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0")
    validator = make_validator(jwks=jwks(tenant_key, msa_key))
    assert (await validator.validate(mint(v2_claims()))).tid == TENANT
    # v1 tokens: the key's (v2) issuer is compared with the v2 issuer of the same tenant.
    assert (await validator.validate(mint(v1_claims()))).tid == TENANT
    with pytest.raises(grpc_obo.InvalidIssuerError) as caught:
        await validator.validate(mint(v2_claims(), key="key-b"))
    assert caught.value.reason == "key_issuer_mismatch"


async def test_key_issuer_in_v1_form_binds_the_same_tenant(
    make_validator: Callable[..., TokenValidator],
) -> None:
    # A key set from a v1 keys endpoint templates `https://sts.windows.net/{tenantid}/`.
    v1_key = jwk("key-a", issuer="https://sts.windows.net/{tenantid}/")
    wrong_host = jwk("key-b", issuer="https://evil.example/{tenantid}/v2.0")
    validator = make_validator(jwks=jwks(v1_key, wrong_host))
    assert (await validator.validate(mint(v2_claims()))).token_version == "2.0"
    assert (await validator.validate(mint(v1_claims()))).token_version == "1.0"
    with pytest.raises(grpc_obo.InvalidIssuerError):
        await validator.validate(mint(v2_claims(), key="key-b"))


async def test_wrong_key_is_a_bad_signature(validator: TokenValidator) -> None:
    token = mint(v2_claims(), key="key-b", kid="key-a")
    with pytest.raises(grpc_obo.InvalidSignatureError) as caught:
        await validator.validate(token)
    assert caught.value.reason == "bad_signature"


async def test_unknown_kid_with_static_jwks(validator: TokenValidator) -> None:
    with pytest.raises(grpc_obo.UnknownKeyError) as caught:
        await validator.validate(mint(v2_claims(), kid="nope"))
    assert caught.value.reason == "unknown_key"


# -- time claims out of range, and token lifetime ---------------------------------------------

GOOD_TIMES: dict[str, Any] = {"iat": NOW, "nbf": NOW, "exp": NOW + 3600}


@pytest.mark.parametrize("value", [-1, 2**53, 10**30, 10**400], ids=["-1", "2^53", "1e30", "1e400"])
@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_time_claims_out_of_range_are_invalid_claims(claim: str, value: int) -> None:
    """Out of 0 <= t < 2**53 is a bad claim, never an OverflowError (an INTERNAL with a trace)."""
    with pytest.raises(grpc_obo.InvalidClaimError) as caught:
        check_times(GOOD_TIMES | {claim: value}, now=NOW, leeway=60.0)
    assert (caught.value.reason, caught.value.claim) == ("bad_claim", claim)


def test_time_claims_at_the_edges_of_the_range_are_accepted() -> None:
    assert check_times({"iat": 0, "exp": 2**53 - 1}, now=NOW, leeway=60.0) == 2**53 - 1


def test_iat_after_exp_is_refused_even_when_both_are_within_leeway() -> None:
    claims = {"iat": NOW + 30, "nbf": NOW, "exp": NOW + 10}
    with pytest.raises(grpc_obo.InvalidClaimError) as caught:
        check_times(claims, now=NOW, leeway=60.0)
    assert (caught.value.reason, caught.value.claim) == ("bad_claim", "iat")
    # Past its `exp` it is reported as expired, the answer a client acts on (a new token).
    with pytest.raises(grpc_obo.ExpiredTokenError):
        check_times({"iat": NOW, "exp": NOW - 120}, now=NOW, leeway=60.0)


def test_max_lifetime_refuses_longer_lived_tokens() -> None:
    claims = {"iat": NOW, "exp": NOW + 3601}
    assert check_times(claims, now=NOW, leeway=60.0) == NOW + 3601  # no limit by default
    assert check_times(claims, now=NOW, leeway=60.0, max_lifetime=3601) == NOW + 3601
    with pytest.raises(grpc_obo.InvalidClaimError) as caught:
        check_times(claims, now=NOW, leeway=60.0, max_lifetime=3600)
    assert (caught.value.reason, caught.value.claim) == ("lifetime_too_long", "exp")


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
async def test_signed_token_with_a_huge_time_claim_is_an_invalid_claim(
    validator: TokenValidator, claim: str
) -> None:
    token = mint(v2_claims(**{claim: 10**400}))
    with pytest.raises(grpc_obo.InvalidClaimError) as caught:
        await validator.validate(token)
    assert (caught.value.reason, caught.value.claim) == ("bad_claim", claim)
    assert grpc_obo.status_for(caught.value).name == "UNAUTHENTICATED"


async def test_max_lifetime_option_reaches_the_rules(
    make_validator: Callable[..., TokenValidator],
) -> None:
    validator = make_validator(max_lifetime=3600)
    assert await validator.validate(mint(v2_claims(exp=NOW + 3600)))
    with pytest.raises(grpc_obo.InvalidClaimError) as caught:
        await validator.validate(mint(v2_claims(exp=NOW + 3601)))
    assert caught.value.reason == "lifetime_too_long"


# -- app-only or delegated without `idtyp` ---------------------------------------------------

SP_OID = "a4b3c2d1-0000-4000-8000-000000000001"

# Tokens with no `scp` and no `idtyp` that look like a user's: classing them APP would let a user
# with an app role act as if a daemon called. Each is refused as ambiguous.
AMBIGUOUS: list[tuple[str, dict[str, Any]]] = [
    (
        "v2: sub differs from oid",
        v2_claims(scp=None, name=None, preferred_username=None, roles=["Orders.ReadAll"]),
    ),
    ("v2: sub without oid", v2_app_claims(idtyp=None, oid=None)),
    ("v2: oid without sub", v2_app_claims(idtyp=None, sub=None)),
    ("v2: preferred_username", v2_app_claims(idtyp=None, preferred_username="megan@c.example")),
    ("v2: name", v2_app_claims(idtyp=None, name="Megan Bowen")),
    ("v1: user with upn", v1_claims(scp=None, roles=["Orders.ReadAll"])),
    (
        "v1: sub == oid but unique_name",
        v1_claims(
            scp=None, upn=None, name=None, sub=USER_OID, roles=["Orders.ReadAll"], unique_name="m"
        ),
    ),
]


@pytest.mark.parametrize("claims", [c[1] for c in AMBIGUOUS], ids=[c[0] for c in AMBIGUOUS])
async def test_user_shaped_token_without_scp_or_idtyp_is_ambiguous(
    validator: TokenValidator, claims: dict[str, Any]
) -> None:
    with pytest.raises(grpc_obo.InvalidClaimError) as caught:
        await validator.validate(mint(claims))
    assert (caught.value.reason, caught.value.claim) == ("ambiguous_token_kind", "idtyp")
    with pytest.raises(grpc_obo.InvalidClaimError):
        classify(claims)


@pytest.mark.parametrize(
    "claims",
    [
        v2_app_claims(idtyp=None),  # oid == sub: Entra's documented app-only shape
        v2_app_claims(idtyp=None, oid=None, sub=None),  # the recorded v2 client-credentials shape
        v1_claims(
            scp=None,
            upn=None,
            unique_name=None,
            name=None,
            oid=SP_OID,
            sub=SP_OID,
            roles=["Orders.ReadAll"],
        ),
    ],
    ids=["v2 oid == sub", "v2 neither oid nor sub", "v1 oid == sub"],
)
async def test_app_shaped_token_without_idtyp_is_app(
    validator: TokenValidator, claims: dict[str, Any]
) -> None:
    identity = await validator.validate(mint(claims))
    assert identity.kind is IdentityKind.APP
    assert classify(claims) is IdentityKind.APP


async def test_idtyp_decides_when_present(validator: TokenValidator) -> None:
    # A user with an app role and no delegated scope: only `idtyp` can say so.
    claims = v2_claims(scp=None, roles=["Orders.ReadAll"], idtyp="user")
    identity = await validator.validate(mint(claims))
    assert identity.kind is IdentityKind.USER
    assert identity.roles == {"Orders.ReadAll"}
    # And `idtyp=app` wins over a user-looking shape.
    assert classify(v2_app_claims(name="Daemon", sub="other")) is IdentityKind.APP


async def test_user_shaped_token_with_neither_scp_nor_roles_is_not_an_access_token(
    make_validator: Callable[..., TokenValidator],
) -> None:
    """Even with `accept_app_tokens_without_roles`, a user's token without `scp` (an ID token
    or a delegated token granting nothing) is never taken for an app token."""
    validator = make_validator(accept_app_tokens_without_roles=True)
    with pytest.raises(grpc_obo.NotAnAccessTokenError):
        await validator.validate(mint(v2_claims(scp=None)))
