"""Real Entra documents and (long expired) tokens from tests/data/entra, validated
with a fixed clock of `iat + 60 s` and the matching static JWKS."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

import grpc_obo
from grpc_obo import IdentityKind, TokenValidator, ValidatorOptions
from grpc_obo._validation._jwks import parse_jwks
from tests.validation.tokens import FakeClock, record

Load = Callable[[str], Any]

PANVA_2024_06 = "panva_entra_common_v2_jwks_40b442f0_2024-06-16.json"


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    result: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return result


async def validate_recorded(
    token: str, jwks: dict[str, Any], **overrides: Any
) -> grpc_obo.Identity:
    """Validate a recorded token as its own API would: its tenant, audience and version."""
    record(token)
    claims = claims_of(token)
    settings: dict[str, Any] = {
        "tenant": claims["tid"],
        "audiences": frozenset({claims["aud"]}),
        "versions": frozenset({claims["ver"]}),
        "clock": FakeClock(claims["iat"] + 60),
        "jwks": jwks,
    }
    settings.update(overrides)
    async with TokenValidator(ValidatorOptions(**settings)) as validator:
        return await validator.validate(token)


@pytest.mark.parametrize(
    "name",
    ["nav_v2_delegated_access_token_L1KfKFI.jwt", "nav_v2_delegated_access_token_MGLqj98.jwt"],
)
async def test_nav_v2_delegated_tokens_validate(recorded: Load, name: str) -> None:
    token = recorded(name)
    identity = await validate_recorded(token, recorded(PANVA_2024_06))
    claims = claims_of(token)
    assert identity.kind is IdentityKind.USER
    assert identity.tid == "966ac572-f5b7-4bbe-aa88-c76419c0f851"
    assert identity.oid == claims["oid"]
    assert identity.scopes == {"defaultaccess"}
    assert identity.client_id == "5f28c10f-ecd5-45ef-96b8-db4311802e89"
    assert identity.username == claims["preferred_username"]
    assert identity.token_version == "2.0"


async def test_nav_token_as_multi_tenant_api_with_templated_key_issuers(recorded: Load) -> None:
    # The panva keys carry `issuer: .../{tenantid}/v2.0`: templated with the token's tid.
    token = recorded("nav_v2_delegated_access_token_L1KfKFI.jwt")
    identity = await validate_recorded(
        token,
        recorded(PANVA_2024_06),
        tenant="organizations",
        allowed_tenants=frozenset({"966ac572-f5b7-4bbe-aa88-c76419c0f851"}),
    )
    assert identity.is_user


async def test_nav_token_with_the_all_keys_union(recorded: Load) -> None:
    token = recorded("nav_v2_delegated_access_token_MGLqj98.jwt")
    keys = recorded("panva_entra_common_all_keys_union_2024-06..10.json")
    assert (await validate_recorded(token, keys)).is_user


async def test_nav_token_expires_with_the_real_clock(recorded: Load) -> None:
    token = recorded("nav_v2_delegated_access_token_MGLqj98.jwt")
    with pytest.raises(grpc_obo.ExpiredTokenError):
        await validate_recorded(token, recorded(PANVA_2024_06), clock=lambda: 1_800_000_000.0)


async def test_nav_token_is_unknown_to_the_2022_key_set(recorded: Load) -> None:
    token = recorded("nav_v2_delegated_access_token_MGLqj98.jwt")
    with pytest.raises(grpc_obo.UnknownKeyError):
        await validate_recorded(token, recorded("dockyard_azure_common_v2_jwks_2022-11.json"))


async def test_nav_token_for_another_api_is_refused(recorded: Load) -> None:
    token = recorded("nav_v2_delegated_access_token_L1KfKFI.jwt")
    with pytest.raises(grpc_obo.InvalidAudienceError):
        await validate_recorded(
            token, recorded(PANVA_2024_06), audiences=frozenset({"api://something-else"})
        )


async def test_paad_v1_access_token_validates(recorded: Load) -> None:
    token = recorded("paad_v1_access_token_2016.jwt")
    identity = await validate_recorded(token, recorded("paad_derived_jwks.json"))
    assert identity.kind is IdentityKind.USER
    assert identity.audience == "spn:6514a8ca-d9e4-4155-b292-65258398f3aa"
    assert identity.client_id == "bebfad57-efd7-419b-b74b-4b9dab7bd470"
    assert identity.username == "robot@sijun.onmicrosoft.com"
    assert identity.scopes == {"user_impersonation"}
    assert identity.token_version == "1.0"


async def test_paad_v1_id_token_is_not_an_access_token(recorded: Load) -> None:
    token = recorded("paad_v1_id_token_2016.jwt")
    with pytest.raises(grpc_obo.NotAnAccessTokenError):
        await validate_recorded(token, recorded("paad_derived_jwks.json"))


async def test_paad_wrong_signature_fails(recorded: Load) -> None:
    # The recorded "wrong signature" differs from the good ID token in its last character only,
    # which leaves non-zero padding bits: the canonical-base64url rule already refuses it.
    token = recorded("paad_v1_id_token_wrong_signature_2016.jwt")
    with pytest.raises(grpc_obo.MalformedTokenError) as caught:
        await validate_recorded(token, recorded("paad_derived_jwks.json"))
    assert caught.value.reason == "bad_encoding"


async def test_paad_id_token_with_another_signature_is_a_bad_signature(recorded: Load) -> None:
    # A canonical spelling of a wrong signature reaches RSA verification and fails there.
    good = recorded("paad_v1_id_token_2016.jwt")
    head, body, sig = good.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[0] ^= 0x01
    forged = f"{head}.{body}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"
    with pytest.raises(grpc_obo.InvalidSignatureError):
        await validate_recorded(forged, recorded("paad_derived_jwks.json"))


async def test_im_v1_id_token_found_by_x5t_then_refused_as_id_token(recorded: Load) -> None:
    # Header has only x5t; the key is in Microsoft's tolerant-parsing JWKS (alg "SHA256",
    # padded standard base64 `n`). Reaching the access-token rule proves key lookup and
    # signature verification succeeded.
    token = recorded("im_v1_id_token_Cyrano_2014.jwt")
    with pytest.raises(grpc_obo.NotAnAccessTokenError):
        await validate_recorded(token, recorded("im_JsonWebKeySet.json"))


async def test_im_v1_graph_access_token_is_refused_by_audience(recorded: Load) -> None:
    # An Azure AD Graph token: no API of ours may list Graph as its audience...
    token = recorded("im_v1_access_token_OverClaims_2014.jwt")
    with pytest.raises(grpc_obo.ConfigurationError):
        await validate_recorded(token, recorded("im_JsonWebKeySet.json"))
    # ...and an API validating it for its own audience refuses it as Graph's, after the x5t-only
    # header found the key and the signature verified.
    with pytest.raises(grpc_obo.InvalidAudienceError) as caught:
        await validate_recorded(
            token, recorded("im_JsonWebKeySet.json"), audiences=frozenset({"api://ours"})
        )
    assert caught.value.reason == "graph_token"


async def test_v2_app_only_token_is_classified_app(recorded: Load) -> None:
    # Recorded client-credentials token: no scp, no roles, no oid, no sub. Refused by default
    # (neither scp nor roles), accepted as APP only with the explicit option.
    token = recorded("UNKNOWNREPO_v2_app_only_access_token_MGLqj98.jwt")
    with pytest.raises(grpc_obo.NotAnAccessTokenError):
        await validate_recorded(token, recorded(PANVA_2024_06))
    identity = await validate_recorded(
        token, recorded(PANVA_2024_06), accept_app_tokens_without_roles=True
    )
    assert identity.kind is IdentityKind.APP
    assert identity.oid is None
    assert identity.client_id == "876cca27-6e23-4218-be18-87a1d2d4f195"
    assert identity.sub == identity.client_id  # no sub claim: the client id stands in


async def test_v1_idtyp_app_token_is_classified_app(recorded: Load) -> None:
    token = recorded("UNKNOWNREPO_v1_app_only_idtyp_app_token_L1KfKFI.jwt")
    with pytest.raises(grpc_obo.NotAnAccessTokenError):
        await validate_recorded(token, recorded(PANVA_2024_06))
    # v1 issuer (sts.windows.net) + a key whose issuer template is the v2 one: same tenant.
    identity = await validate_recorded(
        token, recorded(PANVA_2024_06), accept_app_tokens_without_roles=True
    )
    assert identity.kind is IdentityKind.APP
    assert identity.client_id == "5f0ee1e3-c47e-44fb-a23f-dd1b4fbc7d7b"
    assert identity.oid == "9a431dd3-32c0-4fc4-a126-a142b7c20a78"
    assert identity.token_version == "1.0"


@pytest.mark.parametrize(
    ("name", "count"),
    [
        (PANVA_2024_06, 11),
        ("panva_entra_organizations_v2_jwks_e88dd5e2_2024-10-26.json", 6),
        ("panva_entra_common_all_keys_union_2024-06..10.json", 42),
        ("dockyard_azure_common_v2_jwks_2022-11.json", 10),
        ("im_JsonWebKeySet.json", 2),
        ("paad_derived_jwks.json", 1),
    ],
)
def test_real_jwks_documents_parse(recorded: Load, name: str, count: int) -> None:
    keys = parse_jwks(recorded(name))
    assert len(keys.keys) == count
    assert all(key.public_key.key_size >= 2048 for key in keys.keys)


def test_recorded_discovery_documents_name_https_jwks_uris(recorded: Load) -> None:
    for name in (
        "panva_entra_common_v2_openid-configuration_40b442f0.json",
        "panva_entra_organizations_v2_openid-configuration_e88dd5e2.json",
        "dockyard_azure_common_v2_openid-configuration_2022-11.json",
    ):
        document = recorded(name)
        assert document["jwks_uri"].startswith("https://login.microsoftonline.com/")
        assert document["issuer"] == "https://login.microsoftonline.com/{tenantid}/v2.0"


def test_recorded_data_is_in_the_repository() -> None:
    """Every recorded file the tests read ships in tests/data/entra (no shared/ beside a clone)."""
    from tests.validation.conftest import RECORDED_DIR

    names = {
        "im_JsonWebKeySet.json",
        "paad_derived_jwks.json",
        "nav_v2_delegated_access_token_MGLqj98.jwt",
        "UNKNOWNREPO_v2_app_only_access_token_MGLqj98.jwt",
        "panva_entra_common_all_keys_union_2024-06..10.json",
    }
    missing = sorted(n for n in names if not (RECORDED_DIR / n).is_file())
    assert not missing, f"recorded Entra data missing from {RECORDED_DIR}: {missing}"
    assert "expired" in (RECORDED_DIR / "README.md").read_text()
