"""Misconfiguration of the exchanging side is named, and found at start-up (real dev authority
over HTTPS, real MSAL): `start()` proves the tenant, the TLS trust and the credential; a CA that
does not sign the authority's certificate, or a host the certificate does not name, is not
retried as an outage; every credential refusal names the variable to fix, never a secret.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import certifi
import grpc
import pytest

from grpc_obo import (
    AppOnly,
    AuthorityUnavailableError,
    ClientCredential,
    ConfidentialClient,
    ConfigurationError,
    OnBehalfOf,
    RetryPolicy,
    TokenExchangeError,
    status_for,
)
from grpc_obo._exchange._exchanger import Exchanger
from grpc_obo._exchange._refusal import explain_refusal
from grpc_obo.devauthority import ClientCertificate, DevAuthority
from tests.exchangers import Counted

from .conftest import Users, client_for

MakeExchanger = Callable[..., Exchanger]

# Retries that would show: a transient classification would wait seconds between attempts.
SLOW_RETRY = RetryPolicy(max_attempts=4, base_delay=2.0, max_delay=2.0, budget=30.0)


def retried(caplog: pytest.LogCaptureFixture) -> bool:
    return any("failed transiently; retrying" in r.getMessage() for r in caplog.records)


async def test_start_proves_a_good_configuration_with_one_client_credentials_request(
    authority: DevAuthority, make_exchanger: MakeExchanger, users: Users, downstream_scope: str
) -> None:
    counted = Counted()
    exchanger = make_exchanger(observer=counted)
    await exchanger.start()
    assert authority.requests.count(endpoint="token") == 1
    assert authority.requests.count(grant="client_credentials", ok=True) == 1
    assert counted.exchanges == 0  # no user token was exchanged
    identity = await users.identity("alice")
    assert await exchanger.acquire([downstream_scope], identity=identity)


async def test_the_public_on_behalf_of_and_app_only_have_start_too(
    authority: DevAuthority,
) -> None:
    async with OnBehalfOf(client_for(authority)) as obo:
        await obo.start()
    daemon = authority.world.app("daemon")
    client = ConfidentialClient(
        client_id=daemon.client_id,
        tenant=authority.tenant_id,
        credential=ClientCredential.secret(daemon.secrets[0]),
        authority_host=authority.base_url,
        ca_file=str(authority.ca_file),
    )
    async with AppOnly(client) as app_only:
        await app_only.start(scope=f"{authority.world.app('downstream').app_id_uri}/.default")
    assert authority.requests.count(grant="client_credentials", ok=True) == 2


# -- TLS: a CA that does not sign the authority's certificate, a host it does not name -------


async def test_a_ca_file_that_does_not_sign_the_authority_is_named_and_not_retried(
    authority: DevAuthority,
    make_exchanger: MakeExchanger,
    users: Users,
    downstream_scope: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    exchanger = make_exchanger(
        dataclasses.replace(client_for(authority), ca_file=certifi.where()), retry=SLOW_RETRY
    )
    started = time.monotonic()
    with pytest.raises(TokenExchangeError) as caught:
        await exchanger.start()
    assert time.monotonic() - started < 1.5  # one attempt, no backoff
    error = caught.value
    assert not isinstance(error, AuthorityUnavailableError)
    text = str(error)
    assert "TLS certificate was not accepted" in text
    assert "unable to get local issuer certificate" in text
    assert "GRPC_OBO_CA_FILE" in text and certifi.where() in text
    # What a refused caller would read: the fixed sentence, no path.
    assert error.message == "the authority's TLS certificate was not accepted"
    assert status_for(error) is grpc.StatusCode.INTERNAL
    assert not retried(caplog)
    # A user's exchange meets the same error, as fast.
    identity = await users.identity("alice")
    with pytest.raises(TokenExchangeError, match="GRPC_OBO_CA_FILE"):
        await exchanger.acquire([downstream_scope], identity=identity)
    assert not retried(caplog)
    assert authority.requests.count() == 0  # nothing got past the handshake


async def test_without_a_ca_file_the_error_says_which_cas_are_trusted(
    authority: DevAuthority, make_exchanger: MakeExchanger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    exchanger = make_exchanger(
        dataclasses.replace(client_for(authority), ca_file=None), retry=SLOW_RETRY
    )
    with pytest.raises(TokenExchangeError) as caught:
        await exchanger.start()
    assert "no ca_file being set" in str(caught.value)
    assert "GRPC_OBO_CA_FILE" in str(caught.value)


async def test_a_host_the_certificate_does_not_name_is_named_and_not_retried(
    authority: DevAuthority, make_exchanger: MakeExchanger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # 127.1 reaches 127.0.0.1, but the certificate names 127.0.0.1, ::1 and localhost only.
    host = authority.base_url.replace("127.0.0.1", "127.1")
    exchanger = make_exchanger(
        dataclasses.replace(client_for(authority), authority_host=host), retry=SLOW_RETRY
    )
    with pytest.raises(TokenExchangeError) as caught:
        await exchanger.start()
    assert not isinstance(caught.value, AuthorityUnavailableError)
    assert "Hostname mismatch" in str(caught.value)
    assert "AZURE_AUTHORITY_HOST" in str(caught.value)
    assert not retried(caplog)


# -- credentials: every refusal names the variable ----------------------------------------------


def assert_names(error: TokenExchangeError, *words: str, never: str | None = None) -> None:
    text = str(error)
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"
    if never is not None:
        assert never not in text and never not in repr(error)


async def test_a_wrong_secret_is_found_at_start_up_naming_azure_client_secret(
    authority: DevAuthority, make_exchanger: MakeExchanger
) -> None:
    env = {
        "AZURE_TENANT_ID": authority.tenant_id,
        "AZURE_CLIENT_ID": authority.world.app("original").client_id,
        "AZURE_AUTHORITY_HOST": authority.base_url,
        "AZURE_CLIENT_SECRET": "dev-wrong-s3cret-value",
    }
    client = ConfidentialClient.from_env(env, ca_file=str(authority.ca_file))
    with pytest.raises(TokenExchangeError) as caught:
        await make_exchanger(client).start()
    assert caught.value.error == "invalid_client" and 7000215 in caught.value.error_codes
    assert_names(caught.value, "AZURE_CLIENT_SECRET", "AADSTS7000215", never="s3cret-value")
    assert "AZURE_CLIENT_SECRET" not in caught.value.message  # callers get the fixed sentence
    assert authority.requests.count(endpoint="token") == 1  # not retried


async def test_an_unregistered_certificate_names_azure_client_certificate_path(
    authority: DevAuthority, make_exchanger: MakeExchanger, tmp_path: Path
) -> None:
    stranger = ClientCertificate.generate("stranger")
    assert stranger.private_key_pem is not None
    path = tmp_path / "stranger.pem"
    path.write_bytes(stranger.private_key_pem + stranger.certificate_pem)
    credential = ClientCredential.certificate_file(path)
    with pytest.raises(TokenExchangeError) as caught:
        await make_exchanger(client_for(authority, credential)).start()
    assert_names(caught.value, "AZURE_CLIENT_CERTIFICATE_PATH", "AADSTS700027")


async def test_a_refused_federated_assertion_names_azure_federated_token_file(
    authority: DevAuthority, make_exchanger: MakeExchanger
) -> None:
    credential = ClientCredential.assertion(lambda: "not-a-signed-assertion")
    with pytest.raises(TokenExchangeError) as caught:
        await make_exchanger(client_for(authority, credential)).start()
    assert_names(caught.value, "AZURE_FEDERATED_TOKEN_FILE", "AADSTS700027")


async def test_an_unknown_client_id_names_azure_client_id(
    authority: DevAuthority, make_exchanger: MakeExchanger
) -> None:
    unknown = str(uuid.uuid4())
    client = ConfidentialClient(
        client_id=unknown,
        tenant=authority.tenant_id,
        credential=ClientCredential.secret("whatever-s3cret"),
        authority_host=authority.base_url,
        ca_file=str(authority.ca_file),
    )
    with pytest.raises(TokenExchangeError) as caught:
        await make_exchanger(client).start()
    assert_names(caught.value, "AZURE_CLIENT_ID", "AADSTS700016", unknown, never="whatever-s3cret")


async def test_an_unknown_tenant_names_azure_tenant_id(
    authority: DevAuthority, make_exchanger: MakeExchanger
) -> None:
    unknown = str(uuid.uuid4())
    client = dataclasses.replace(client_for(authority), tenant=unknown)
    with pytest.raises(TokenExchangeError) as caught:
        await make_exchanger(client).start()
    assert not isinstance(caught.value, AuthorityUnavailableError)
    assert_names(caught.value, "AZURE_TENANT_ID", "AADSTS90002", unknown)


async def test_start_needs_a_home_tenant(
    authority: DevAuthority, make_exchanger: MakeExchanger
) -> None:
    client = dataclasses.replace(client_for(authority), tenant="organizations")
    with pytest.raises(ConfigurationError, match="home tenant"):
        await make_exchanger(client).start()


def _unfederated_assertion(path: Path) -> None:
    """A well-formed assertion from an issuer no app trusts (signed by a key of its own)."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {
        "iss": "https://unknown-issuer.invalid/cluster",
        "sub": "system:serviceaccount:default:stranger",
        "aud": "api://AzureADTokenExchange",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    }
    path.write_text(jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"}))


async def test_a_refused_token_file_names_azure_federated_token_file(
    authority: DevAuthority, make_exchanger: MakeExchanger, tmp_path: Path
) -> None:
    # A token file as the only source: the refusal names its variable (the kind of the source
    # the request was made with), never the assertion.
    path = tmp_path / "token"
    _unfederated_assertion(path)
    credential = ClientCredential.federated_token_file(path)
    with pytest.raises(TokenExchangeError) as caught:
        await make_exchanger(client_for(authority, credential)).start()
    # The app has no federated credential: Entra reads the assertion as its own and refuses it.
    assert caught.value.error == "invalid_client" and 700027 in caught.value.error_codes
    assert_names(caught.value, "AZURE_FEDERATED_TOKEN_FILE", never=path.read_text())
    assert "AZURE_CLIENT_SECRET" not in str(caught.value)


async def test_the_refused_source_is_named_not_the_first_of_the_list(
    authority: DevAuthority, make_exchanger: MakeExchanger, tmp_path: Path
) -> None:
    # The first source cannot be used (no file), so the request is made with the second: the
    # hint names the second one's variable.
    missing = ClientCredential.federated_token_file(tmp_path / "absent")
    stranger = ClientCertificate.generate("stranger")
    assert stranger.private_key_pem is not None
    pem = tmp_path / "stranger.pem"
    pem.write_bytes(stranger.private_key_pem + stranger.certificate_pem)
    client = client_for(authority, [missing, ClientCredential.certificate_file(pem)])
    with pytest.raises(TokenExchangeError) as caught:
        await make_exchanger(client).start()
    assert_names(caught.value, "AZURE_CLIENT_CERTIFICATE_PATH", "AADSTS700027")
    assert "AZURE_FEDERATED_TOKEN_FILE" not in str(caught.value)


def test_a_refusal_of_the_clients_own_configuration_gets_a_hint_on_the_same_error(
    authority: DevAuthority,
) -> None:
    """The hint is set on the error the exchange raised, not on a rebuilt copy: its class,
    attributes and traceback stay; `message` (what a caller is told) stays the fixed sentence."""
    client = client_for(authority)
    try:
        raise TokenExchangeError(
            "the authority refused the token request",
            error="invalid_client",
            error_codes=[7000215],
            correlation_id="5d0e9c57-0000-4000-8000-000000000001",
        )
    except TokenExchangeError as raised:
        error = raised
    traceback = error.__traceback__
    explained = explain_refusal(client, error, client.tenant)
    assert explained is error
    assert error.__traceback__ is traceback
    assert error.message == "the authority refused the token request"
    assert error.hint is not None and "AZURE_CLIENT_SECRET" in error.hint
    assert "AADSTS7000215" in str(error)
    assert error.correlation_id == "5d0e9c57-0000-4000-8000-000000000001"
    # Not the client's configuration: no hint, nothing changed.
    other = TokenExchangeError("refused", error="invalid_grant", error_codes=[50013])
    assert explain_refusal(client, other, client.tenant) is other
    assert other.hint is None
