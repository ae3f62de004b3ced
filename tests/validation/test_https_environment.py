"""The key fetch trusts exactly the given `ssl_context`, whatever the environment says.

aiohttp runs with `trust_env=False` (its default), so it never reads proxy variables, and an
`ssl.create_default_context(cafile=...)` never loads OpenSSL's default paths, which are what
SSL_CERT_FILE / SSL_CERT_DIR change. requests' CA variables are not aiohttp's business at all.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import certifi
import pytest

from grpc_obo import KeySourceUnavailableError, TokenValidator
from grpc_obo.devauthority import DevAuthority
from tests.https_environment import CA_VARIABLES, DEAD_PROXY, clear_environment, hashed_ca_dir
from tests.validation.devtokens import dev_options, record

MakeValidator = Callable[..., TokenValidator]


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_environment(monkeypatch)


@pytest.fixture
async def make_validator() -> AsyncIterator[MakeValidator]:
    """`make(authority, **options)`, built after the test set its environment; closed after."""
    made: list[TokenValidator] = []

    def make(authority: DevAuthority, **overrides: Any) -> TokenValidator:
        validator = TokenValidator(dev_options(authority, **overrides))
        made.append(validator)
        return validator

    yield make
    for validator in made:
        await validator.close()


@pytest.mark.parametrize("variable", CA_VARIABLES)
@pytest.mark.parametrize("value", ["missing", "another CA"])
async def test_a_bogus_ca_bundle_in_the_environment_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
    grpc_obo_authority: DevAuthority,
    make_validator: MakeValidator,
    variable: str,
    value: str,
) -> None:
    monkeypatch.setenv(variable, "/nonexistent/ca.pem" if value == "missing" else certifi.where())
    # dev_options builds its ssl_context now, after the environment changed.
    validator = make_validator(grpc_obo_authority)
    identity = await validator.validate(record(grpc_obo_authority.mint_user_token("alice")))
    assert identity.username == "alice@contoso.example"


@pytest.mark.parametrize("variable", CA_VARIABLES)
async def test_the_environment_cannot_add_trust_to_an_explicit_context(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    grpc_obo_authority: DevAuthority,
    make_validator: MakeValidator,
    variable: str,
) -> None:
    """The context trusts a CA that does not sign the authority; the environment names one that
    does. Keys must stay unavailable."""
    authority = grpc_obo_authority
    trusted = (
        hashed_ca_dir(tmp_path, authority.ca_file)
        if variable == "SSL_CERT_DIR"
        else str(authority.ca_file)
    )
    monkeypatch.setenv(variable, trusted)
    context = ssl.create_default_context(cafile=certifi.where())
    validator = make_validator(authority, ssl_context=context)
    with pytest.raises(KeySourceUnavailableError):
        await validator.validate(record(authority.mint_user_token("alice")))
    assert authority.requests.count(endpoint="jwks") == 0


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])
async def test_proxy_variables_are_not_used_for_the_key_fetch(
    monkeypatch: pytest.MonkeyPatch,
    grpc_obo_authority: DevAuthority,
    make_validator: MakeValidator,
    variable: str,
) -> None:
    monkeypatch.setenv(variable, DEAD_PROXY)
    validator = make_validator(grpc_obo_authority)
    assert await validator.validate(record(grpc_obo_authority.mint_user_token("alice")))
    assert grpc_obo_authority.requests.count(endpoint="jwks") == 1
