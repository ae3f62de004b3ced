"""Credential sources in order, with fallback: `ConfidentialClient(credential=[...])` uses the
first source that works for each token request and logs one WARNING when it falls back;
`from_env()` builds the list from the standard variables; a federated token file is re-read
when it changes and never sent past its exp; no secret or assertion in any repr, log or error."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from grpc_obo import ClientCredential, ConfidentialClient, ConfigurationError, TokenExchangeError
from grpc_obo.devauthority import ClientCertificate, DevAuthority
from tests.exchange.conftest import Users
from tests.exchange.test_credentials import (
    MakeExchanger,
    base_env,
    certificate_of,
    client_assertion,
    exchange_as_alice,
)

_WARNINGS = "grpc_obo.exchange"


def client_for(authority: DevAuthority, credential: object) -> ConfidentialClient:
    """The Original API's confidential client with `credential` (one or a list)."""
    return ConfidentialClient(
        client_id=authority.world.app("original").client_id,
        tenant=authority.tenant_id,
        credential=credential,  # type: ignore[arg-type]
        authority_host=authority.base_url,
        ca_file=str(authority.ca_file),
    )


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == _WARNINGS and r.levelno == logging.WARNING
    ]


async def test_a_missing_token_file_falls_back_to_the_next_source_with_one_warning(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=_WARNINGS)
    token_file = tmp_path / "token"
    secret = authority.world.app("original").secrets[0]
    client = client_for(
        authority,
        [ClientCredential.federated_token_file(token_file), ClientCredential.secret(secret)],
    )
    exchanger = make_exchanger(client)
    for _ in range(3):
        claims = await exchange_as_alice(authority, users, exchanger, downstream_scope)
        assert claims["azpacr"] == "1"  # the secret
    (warning,) = _warnings(caplog)  # one, not one per request
    assert f"federated token file {str(token_file)!r} cannot be read" in warning
    assert "falling back to client secret" in warning
    # The file appears (the pod's volume is mounted): the first source is used again.
    token_file.write_text(client_assertion(authority), encoding="utf-8")
    claims = await exchange_as_alice(authority, users, exchanger, downstream_scope)
    assert claims["azpacr"] == "2"
    assert any("works again" in r.getMessage() for r in caplog.records)
    assert len(_warnings(caplog)) == 1
    assert secret not in caplog.text and token_file.read_text() not in caplog.text


async def test_a_token_file_is_reread_when_it_changes(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    stranger = ClientCertificate.generate("not-registered")
    token_file.write_text(client_assertion(authority, certificate=stranger), encoding="utf-8")
    exchanger = make_exchanger(
        client_for(authority, ClientCredential.federated_token_file(token_file))
    )
    with pytest.raises(TokenExchangeError) as caught:
        await exchange_as_alice(authority, users, exchanger, downstream_scope)
    assert caught.value.error_codes == (700027,)
    # The assertion in memory is still 10 minutes from its exp: only the file's change makes
    # the exchanger send the new one.
    token_file.write_text(client_assertion(authority), encoding="utf-8")
    claims = await exchange_as_alice(authority, users, exchanger, downstream_scope)
    assert claims["azpacr"] == "2"


async def test_an_expired_token_in_the_file_is_never_sent(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(client_assertion(authority, lifetime=-10), encoding="utf-8")
    exchanger = make_exchanger(
        client_for(authority, ClientCredential.federated_token_file(token_file))
    )
    with pytest.raises(TokenExchangeError) as caught:
        await exchange_as_alice(authority, users, exchanger, downstream_scope)
    assert caught.value.error == "credential_unavailable"
    assert "has expired" in caught.value.message
    assert authority.requests.count(grant="obo") == 0


async def test_when_no_source_works_the_error_names_each_and_quotes_none(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    tmp_path: Path,
) -> None:
    def failing() -> str:
        raise RuntimeError("vault said no: s3cr3t")

    client = client_for(
        authority,
        [
            ClientCredential.federated_token_file(tmp_path / "absent"),
            ClientCredential.assertion(failing),
        ],
    )
    exchanger = make_exchanger(client)
    with pytest.raises(TokenExchangeError) as caught:
        await exchange_as_alice(authority, users, exchanger, downstream_scope)
    message = caught.value.message
    assert "federated token file" in message and "assertion callback failed" in message
    assert "s3cr3t" not in message


def test_from_env_lists_every_credential_it_finds_secretless_first(
    authority: DevAuthority, tmp_path: Path
) -> None:
    cert = certificate_of(authority)
    assert cert.private_key_pem is not None
    pem = tmp_path / "original.pem"
    pem.write_bytes(cert.private_key_pem + cert.certificate_pem)
    env = {
        **base_env(authority),
        "AZURE_CLIENT_SECRET": authority.world.app("original").secrets[0],
        "AZURE_CLIENT_CERTIFICATE_PATH": str(pem),
        "GRPC_OBO_MANAGED_IDENTITY_CLIENT_ID": "0c0ffee0-0000-4000-8000-00000000000a",
        "AZURE_FEDERATED_TOKEN_FILE": str(tmp_path / "token"),
    }
    client = ConfidentialClient.from_env(env)
    assert [c.kind for c in client.credentials] == [
        "federated_token_file",
        "managed_identity",
        "certificate",
        "secret",
    ]
    shown = repr(client) + repr(client.credentials) + str(client.credentials)
    # What a source resolves to (MSAL's credential: the secret, the private key) too.
    secret_source = client.credentials[3].source(ca_file=None, timeout=1.0, clock=time.time)
    shown += repr(secret_source.resolve())
    assert env["AZURE_CLIENT_SECRET"] not in shown
    assert cert.private_key_pem.decode() not in shown


def test_from_env_names_a_bad_managed_identity_variable(authority: DevAuthority) -> None:
    env = {**base_env(authority), "GRPC_OBO_MANAGED_IDENTITY_CLIENT_ID": "not-a-guid"}
    with pytest.raises(ConfigurationError, match=r"^GRPC_OBO_MANAGED_IDENTITY_CLIENT_ID: "):
        ConfidentialClient.from_env(env)


@pytest.mark.parametrize("bad", [[], ["secret"], "secret", None, ()])
def test_the_credential_list_is_checked_at_construction(
    authority: DevAuthority, bad: object
) -> None:
    with pytest.raises(ConfigurationError, match="credential"):
        client_for(authority, bad)


def test_a_list_is_kept_as_a_tuple(authority: DevAuthority) -> None:
    secret = ClientCredential.secret("x")
    client = client_for(authority, [secret])
    assert client.credential == (secret,) and client.credentials == (secret,)


async def test_a_source_the_authority_refuses_falls_back_to_the_next(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """invalid_client for the first source (here an assertion signed with a certificate the
    app does not have): the same request is asked again with the next source, and the refused
    one is skipped for a while rather than refused again for every user."""
    caplog.set_level(logging.INFO, logger=_WARNINGS)
    token_file = tmp_path / "token"
    stranger = ClientCertificate.generate("not-registered")
    token_file.write_text(client_assertion(authority, certificate=stranger), encoding="utf-8")
    secret = authority.world.app("original").secrets[0]
    client = client_for(
        authority,
        [ClientCredential.federated_token_file(token_file), ClientCredential.secret(secret)],
    )
    exchanger = make_exchanger(client)
    for _ in range(3):
        claims = await exchange_as_alice(authority, users, exchanger, downstream_scope)
        assert claims["azpacr"] == "1"
    assert authority.requests.count(grant="obo", ok=False) == 1  # refused once, not per call
    (warning,) = _warnings(caplog)
    assert "was refused by the authority (AADSTS700027)" in warning
    assert "falling back to client secret" in warning
    assert token_file.read_text() not in caplog.text and secret not in caplog.text


async def test_two_secrets_in_order_the_refused_first_one_gives_way(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
) -> None:
    """A secret being rotated: the old value (already removed from the registration) first,
    the new one second."""
    secret = authority.world.app("original").secrets[0]
    client = client_for(
        authority,
        [ClientCredential.secret("removed-secret-value"), ClientCredential.secret(secret)],
    )
    exchanger = make_exchanger(client)
    claims = await exchange_as_alice(authority, users, exchanger, downstream_scope)
    assert claims["azpacr"] == "1"
    assert authority.requests.count(grant="obo", ok=False) == 1


async def test_the_last_source_refused_is_the_error(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
) -> None:
    exchanger = make_exchanger(client_for(authority, [ClientCredential.secret("wrong-value")]))
    with pytest.raises(TokenExchangeError) as caught:
        await exchange_as_alice(authority, users, exchanger, downstream_scope)
    assert caught.value.error_codes == (7000215,)
    assert "wrong-value" not in caught.value.message


async def test_a_source_that_works_again_takes_back_its_app_without_building_it_again(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    tmp_path: Path,
) -> None:
    """MSAL apps are kept per (tenant, credential version): a source that flaps (a token file
    that is briefly missing) costs no new app, hence no new discovery round trip, when it is
    back. Building one fetches the tenant's metadata: the authority counts them."""
    token_file = tmp_path / "token"
    # Tokens within 5 minutes of their exp: the file is looked at on every request (a fresher
    # one is looked at once a minute), so its removal is seen by the next request.
    token_file.write_text(client_assertion(authority, lifetime=240), encoding="utf-8")
    secret = authority.world.app("original").secrets[0]
    client = client_for(
        authority,
        [ClientCredential.federated_token_file(token_file), ClientCredential.secret(secret)],
    )
    exchanger = make_exchanger(client)
    for expected, present in (("2", True), ("1", False), ("2", True), ("1", False)):
        if present:
            token_file.write_text(client_assertion(authority, lifetime=240), encoding="utf-8")
        else:
            token_file.unlink()
        claims = await exchange_as_alice(authority, users, exchanger, downstream_scope)
        assert claims["azpacr"] == expected
    built = [
        e
        for e in authority.requests.matching(endpoint="discovery")
        if e.path.startswith(f"/{authority.tenant_id}/")  # the validator reads /organizations
    ]
    assert len(built) == 2  # one app per source, each built once
