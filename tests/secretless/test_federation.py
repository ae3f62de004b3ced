"""The dev authority accepts a federated credential's assertion as an app's client credential
(workload identity federation), through unmodified MSAL, and refuses the wrong ones as Entra
does: AADSTS70021 (issuer), 700213 (subject), 700212 (audience), 700024 (time), 700027
(signature), never quoting the assertion."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from grpc_obo.devauthority import App, DevAuthority, load_world

from .conftest import ExternalIssuer, downstream_scope, msal_app, raw_token_request

SUBJECT = "system:serviceaccount:shop:orders"


@pytest.fixture
def federated(authority: DevAuthority, issuer: ExternalIssuer, middle_tier: App) -> App:
    authority.world.add_federated_credential(middle_tier.name, issuer=issuer.url, subject=SUBJECT)
    return middle_tier


def _claims(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


def test_client_credentials_with_a_federated_assertion(
    authority: DevAuthority, issuer: ExternalIssuer, federated: App
) -> None:
    app = msal_app(authority, federated, lambda: issuer.mint(SUBJECT))
    result = app.acquire_token_for_client([downstream_scope(authority, ".default")])
    assert "access_token" in result, result.get("error_description")
    claims = _claims(result["access_token"])
    assert claims["azp"] == federated.client_id
    assert claims["azpacr"] == "2"  # an assertion, as with a certificate
    assert claims["roles"] == ["Data.Read.All"]


def test_on_behalf_of_with_a_federated_assertion(
    authority: DevAuthority, issuer: ExternalIssuer, federated: App
) -> None:
    user_token = authority.mint_user_token("alice", audience=federated.name)
    app = msal_app(authority, federated, lambda: issuer.mint(SUBJECT))
    result = app.acquire_token_on_behalf_of(user_token, [downstream_scope(authority)])
    assert "access_token" in result, result.get("error_description")
    claims = _claims(result["access_token"])
    assert claims["oid"] == authority.world.user("alice").oid
    assert claims["azp"] == federated.client_id
    assert claims["scp"] == "Data.Read"


def _refused(authority: DevAuthority, app: App, assertion: str) -> dict[str, object]:
    result = msal_app(authority, app, assertion).acquire_token_for_client(
        [downstream_scope(authority, ".default")]
    )
    assert "access_token" not in result
    assert assertion not in str(result)
    return result


def test_an_issuer_no_credential_names_is_refused_with_70021_naming_what_was_presented(
    authority: DevAuthority, issuer: ExternalIssuer, federated: App
) -> None:
    stranger = "https://token.actions.githubusercontent.com"
    fetches = issuer.fetches
    assertion = issuer.mint("repo:contoso/shop:ref:refs/heads/main", issuer=stranger)
    result = _refused(authority, federated, assertion)
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [70021]
    description = str(result["error_description"])
    assert "No matching federated identity record found for presented assertion" in description
    assert f"Assertion Issuer: '{stranger}'" in description
    assert "Assertion Subject: 'repo:contoso/shop:ref:refs/heads/main'" in description
    assert "Assertion Audience: 'api://AzureADTokenExchange'" in description
    assert issuer.fetches == fetches  # nobody fetched keys from an issuer nobody trusts


def test_a_subject_that_is_not_federated_is_refused_with_700213(
    authority: DevAuthority, issuer: ExternalIssuer, federated: App
) -> None:
    result = _refused(authority, federated, issuer.mint("system:serviceaccount:shop:intruder"))
    assert result["error_codes"] == [700213]
    assert "'system:serviceaccount:shop:intruder'" in str(result["error_description"])


def test_a_wrong_audience_is_refused_with_700212(
    authority: DevAuthority, issuer: ExternalIssuer, federated: App
) -> None:
    result = _refused(authority, federated, issuer.mint(SUBJECT, audience="api://other"))
    assert result["error_codes"] == [700212]
    assert "'api://other'" in str(result["error_description"])


def test_an_audience_list_holding_the_exchange_audience_is_accepted(
    authority: DevAuthority, issuer: ExternalIssuer, federated: App
) -> None:
    # Kubernetes writes `aud` as a list.
    assertion = issuer.mint(SUBJECT, audience=["api://AzureADTokenExchange"])
    result = msal_app(authority, federated, assertion).acquire_token_for_client(
        [downstream_scope(authority, ".default")]
    )
    assert "access_token" in result, result.get("error_description")


@pytest.mark.parametrize("issued_ago", [7200, -7200])
def test_an_assertion_outside_its_valid_time_range_is_refused_with_700024(
    authority: DevAuthority, issuer: ExternalIssuer, federated: App, issued_ago: int
) -> None:
    assertion = issuer.mint(SUBJECT, issued_at=time.time() - issued_ago, lifetime=600)
    result = _refused(authority, federated, assertion)
    assert result["error_codes"] == [700024]
    assert "Client assertion is not within its valid time range" in str(result["error_description"])


def test_an_assertion_signed_by_another_key_is_refused_with_700027(
    authority: DevAuthority, issuer: ExternalIssuer, federated: App
) -> None:
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    result = _refused(authority, federated, issuer.mint(SUBJECT, key=forger))
    assert result["error_codes"] == [700027]


def test_the_assertion_type_is_required(
    authority: DevAuthority, issuer: ExternalIssuer, federated: App
) -> None:
    response = raw_token_request(
        authority,
        {
            "grant_type": "client_credentials",
            "client_id": federated.client_id,
            "client_assertion": issuer.mint(SUBJECT),
            "scope": downstream_scope(authority, ".default"),
        },
    )
    assert response.status_code == 400
    assert response.json()["error_codes"] == [50027]


def test_the_request_log_and_the_authority_log_hold_no_assertion(
    authority: DevAuthority,
    issuer: ExternalIssuer,
    federated: App,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    good, bad = issuer.mint(SUBJECT), issuer.mint("system:serviceaccount:x:y")
    for assertion in (good, bad):
        msal_app(authority, federated, assertion).acquire_token_for_client(
            [downstream_scope(authority, ".default")]
        )
    logged = caplog.text + repr(authority.requests.entries)
    assert good not in logged and bad not in logged
    assert [e.error_code for e in authority.requests.entries if e.endpoint == "token"] == [
        None,
        700213,
    ]


def test_world_helpers_check_what_they_are_given(authority: DevAuthority) -> None:
    world = authority.world
    with pytest.raises(ValueError, match="https"):
        world.add_federated_credential("downstream", issuer="http://x", subject="s")
    with pytest.raises(ValueError, match="public client"):
        world.add_federated_credential("client", issuer="https://x", subject="s")
    with pytest.raises(ValueError, match="audience"):
        world.add_federated_credential("downstream", issuer="https://x", subject="s", audiences=[])


def test_world_files_give_apps_federated_credentials(tmp_path: Path) -> None:
    world_file = tmp_path / "world.toml"
    world_file.write_text(
        """
[apps.orders]
scopes = ["Orders.Read"]
secrets = []

[[apps.orders.federated_credentials]]
issuer = "{authority_host}/workload/dev"
subject = "system:serviceaccount:shop:orders"

[[apps.orders.federated_credentials]]
name = "github"
issuer = "https://token.actions.githubusercontent.com"
subject = "repo:contoso/shop:environment:prod"
audiences = ["api://AzureADTokenExchange", "api://custom"]
"""
    )
    orders = load_world(world_file).app("orders")
    assert orders.secrets == [] and orders.certificates == []
    first, second = orders.federated_credentials
    assert (first.issuer, first.subject, first.audiences) == (
        "{authority_host}/workload/dev",
        "system:serviceaccount:shop:orders",
        ("api://AzureADTokenExchange",),
    )
    assert second.name == "github" and second.audiences[1] == "api://custom"


def test_world_file_errors_name_the_field(tmp_path: Path) -> None:
    from grpc_obo.devauthority import WorldFileError

    world_file = tmp_path / "world.toml"
    world_file.write_text(
        '[apps.orders]\n[[apps.orders.federated_credentials]]\nissuer = "https://x"\n'
    )
    with pytest.raises(WorldFileError, match=r"apps\.orders\.federated_credentials\[0\]\.subject"):
        load_world(world_file)
