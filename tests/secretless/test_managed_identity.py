"""A managed identity as the middle tier's credential: the dev endpoint speaks App Service's
protocol to MSAL's unmodified `ManagedIdentityClient` (IDENTITY_ENDPOINT + X-IDENTITY-HEADER)
and refuses a wrong header as the real one does; grpc_obo obtains the identity's token with MSAL
and presents it as the client assertion (a federated credential for the identity), for
On-Behalf-Of and app-only exchanges, with no secret or key anywhere in the middle tier."""

from __future__ import annotations

import logging

import jwt
import msal
import pytest
import requests

from grpc_obo import ClientCredential, TokenExchangeError, use_identity
from grpc_obo.devauthority import App, DevAuthority
from grpc_obo.devauthority._managed_identity import ManagedIdentity
from tests.exchangers import client_credentials, on_behalf_of

from .conftest import TIMEOUT, confidential_client, downstream_scope, user_identity, verified


@pytest.fixture
def identity(authority: DevAuthority, middle_tier: App) -> ManagedIdentity:
    return authority.managed_identities.add(f"mi-{middle_tier.name}", federate=middle_tier.name)


@pytest.fixture
def app_service(authority: DevAuthority, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process environment App Service gives: what MSAL's environment detection reads."""
    for name, value in authority.managed_identities.env(authority.base_url).items():
        monkeypatch.setenv(name, value)


def _get(authority: DevAuthority, headers: dict[str, str], **params: str) -> requests.Response:
    session = requests.Session()
    session.trust_env = False
    query = {"api-version": "2019-08-01", "resource": "api://AzureADTokenExchange", **params}
    return session.get(
        authority.managed_identities.env(authority.base_url)["IDENTITY_ENDPOINT"],
        params=query,
        headers=headers,
        verify=str(authority.ca_file),
        timeout=TIMEOUT,
    )


def test_the_endpoint_refuses_a_missing_or_wrong_identity_header(
    authority: DevAuthority, identity: ManagedIdentity
) -> None:
    for headers in ({}, {"X-IDENTITY-HEADER": "guessed"}):
        response = _get(authority, headers, client_id=identity.client_id)
        assert response.status_code == 401
        assert response.json()["statusCode"] == 401
        assert "access_token" not in response.text


def test_the_endpoint_refuses_an_unknown_identity_or_version(
    authority: DevAuthority, identity: ManagedIdentity
) -> None:
    header = {"X-IDENTITY-HEADER": authority.managed_identities.header}
    assert (
        _get(authority, header, client_id="00000000-0000-4000-8000-000000000001").status_code == 400
    )
    assert _get(authority, header).status_code == 400  # no system-assigned identity
    wrong = _get(authority, header, client_id=identity.client_id, **{"api-version": "2017-09-01"})
    assert wrong.status_code == 400


def test_msal_managed_identity_client_gets_the_identity_token(
    authority: DevAuthority, identity: ManagedIdentity, app_service: None
) -> None:
    client = msal.ManagedIdentityClient(
        msal.UserAssignedManagedIdentity(client_id=identity.client_id),
        http_client=authority.msal_http_client(),
    )
    assert msal.managed_identity.get_managed_identity_source() is msal.managed_identity.APP_SERVICE
    result = client.acquire_token_for_client(resource="api://AzureADTokenExchange")
    assert "access_token" in result, result
    claims = verified(authority, result["access_token"], "api://AzureADTokenExchange")
    assert claims["iss"] == authority.issuer(2)
    assert claims["sub"] == claims["oid"] == identity.principal_id
    assert claims["azp"] == identity.client_id and claims["idtyp"] == "app"


def test_msal_with_a_wrong_identity_header_gets_an_error(
    authority: DevAuthority,
    identity: ManagedIdentity,
    app_service: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")
    client = msal.ManagedIdentityClient(
        msal.UserAssignedManagedIdentity(client_id=identity.client_id),
        http_client=authority.msal_http_client(),
    )
    result = client.acquire_token_for_client(resource="api://AzureADTokenExchange")
    assert "access_token" not in result
    assert "401" in result["error_description"]


async def test_on_behalf_of_with_the_managed_identity_as_the_credential(
    authority: DevAuthority, middle_tier: App, identity: ManagedIdentity, app_service: None
) -> None:
    client = confidential_client(
        authority, middle_tier, ClientCredential.managed_identity(identity.client_id)
    )
    exchanger = on_behalf_of(client)
    try:
        served = authority.managed_identities.served
        with use_identity(user_identity(authority, middle_tier, "alice")):
            token = await exchanger.acquire([downstream_scope(authority)])
        with use_identity(user_identity(authority, middle_tier, "bob")):
            await exchanger.acquire([downstream_scope(authority)])
    finally:
        await exchanger.close()
    downstream = authority.world.app("downstream").client_id
    claims = verified(authority, token.reveal(), downstream)
    assert claims["oid"] == authority.world.user("alice").oid
    assert claims["azp"] == middle_tier.client_id and claims["azpacr"] == "2"
    # One managed identity token served both exchanges (cached until shortly before its exp).
    assert authority.managed_identities.served == served + 1


async def test_a_ca_bundle_in_the_environment_does_not_override_the_configured_ca(
    authority: DevAuthority,
    middle_tier: App,
    identity: ManagedIdentity,
    app_service: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """REQUESTS_CA_BUNDLE outranks a session's `verify` in requests (DESIGN.md): the managed
    identity's HTTP client must still trust exactly the CA it was given."""
    import certifi

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    monkeypatch.setenv("CURL_CA_BUNDLE", certifi.where())
    client = confidential_client(
        authority, middle_tier, ClientCredential.managed_identity(identity.client_id)
    )
    exchanger = on_behalf_of(client)
    try:
        with use_identity(user_identity(authority, middle_tier)):
            await exchanger.acquire([downstream_scope(authority)])
    finally:
        await exchanger.close()


async def test_app_only_with_the_managed_identity_as_the_credential(
    authority: DevAuthority, middle_tier: App, identity: ManagedIdentity, app_service: None
) -> None:
    client = confidential_client(
        authority, middle_tier, ClientCredential.managed_identity(identity.client_id)
    )
    exchanger = client_credentials(client)
    try:
        token = await exchanger.acquire([downstream_scope(authority, ".default")])
    finally:
        await exchanger.close()
    claims = jwt.decode(token.reveal(), options={"verify_signature": False})
    assert claims["roles"] == ["Data.Read.All"] and claims["azp"] == middle_tier.client_id


async def test_an_identity_the_app_does_not_federate_is_refused_with_700213(
    authority: DevAuthority, middle_tier: App, identity: ManagedIdentity, app_service: None
) -> None:
    other = authority.managed_identities.add(f"other-{middle_tier.name}")
    client = confidential_client(
        authority, middle_tier, ClientCredential.managed_identity(other.client_id)
    )
    exchanger = on_behalf_of(client)
    try:
        with (
            use_identity(user_identity(authority, middle_tier)),
            pytest.raises(TokenExchangeError) as caught,
        ):
            await exchanger.acquire([downstream_scope(authority)])
    finally:
        await exchanger.close()
    assert caught.value.error_codes == (700213,)


async def test_a_wrong_identity_header_makes_the_source_unavailable_without_leaking_it(
    authority: DevAuthority,
    middle_tier: App,
    identity: ManagedIdentity,
    app_service: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("IDENTITY_HEADER", "wrong-header-value")
    client = confidential_client(
        authority, middle_tier, ClientCredential.managed_identity(identity.client_id)
    )
    exchanger = on_behalf_of(client)
    try:
        with (
            use_identity(user_identity(authority, middle_tier)),
            pytest.raises(TokenExchangeError) as caught,
        ):
            await exchanger.acquire([downstream_scope(authority)])
    finally:
        await exchanger.close()
    assert caught.value.error == "credential_unavailable"
    assert f"managed identity '{identity.client_id}'" in caught.value.message
    for secret in ("wrong-header-value", authority.managed_identities.header):
        assert secret not in caught.value.message and secret not in caplog.text
    assert repr(ClientCredential.managed_identity(identity.client_id)).endswith("'**********')")


@pytest.mark.parametrize(
    "answer",
    [
        {"error": "invalid_request\nINJECTED eyJhbGciOi.eyJzdWIi.c2ln"},
        {"error": "\x1b[31m" + "x" * 100},
        {"error": {"nested": "object"}},
        "not a mapping",
    ],
)
def test_an_endpoint_error_is_quoted_only_as_an_error_code(answer: object) -> None:
    """The endpoint's refusal reaches a log line (the source is unavailable): only a word that
    can be an OAuth error code is quoted from it, never other text it sent."""
    from grpc_obo._exchange._source_kinds import ManagedIdentityAssertion, SourceUnavailable

    source = ManagedIdentityAssertion(
        "11111111-2222-4333-8444-555555555555", ca_file=None, timeout=1.0, clock=lambda: 0.0
    )
    source._client.acquire_token_for_client = lambda **_: answer  # type: ignore[method-assign]
    with pytest.raises(SourceUnavailable) as caught:
        source.resolve()
    assert str(caught.value).endswith("refused (no token)")
    assert "INJECTED" not in str(caught.value) and "\x1b" not in str(caught.value)


def test_an_endpoint_error_code_is_named() -> None:
    from grpc_obo._exchange._source_kinds import ManagedIdentityAssertion, SourceUnavailable

    source = ManagedIdentityAssertion(None, ca_file=None, timeout=1.0, clock=lambda: 0.0)
    source._client.acquire_token_for_client = lambda **_: {"error": "invalid_request"}  # type: ignore[method-assign]
    with pytest.raises(SourceUnavailable, match=r"refused \(invalid_request\)$"):
        source.resolve()
