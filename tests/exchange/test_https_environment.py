"""The token exchange trusts exactly the configured CA, whatever the environment says.

MSAL talks to the authority through requests, which lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE
replace `verify` and routes through HTTPS_PROXY / ALL_PROXY. With `ca_file` given, none of that
applies: a bogus bundle changes nothing, a bundle that trusts the authority adds no trust, and
proxies are not used. An empty or missing `ca_file` is refused when the exchanger is built
(requests reads `verify=""` as "do not verify").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import certifi
import pytest

from grpc_obo import AuthorityUnavailableError, ConfigurationError, OnBehalfOf, TokenExchangeError
from grpc_obo._exchange._exchanger import Exchanger
from grpc_obo.devauthority import DevAuthority
from tests.exchange.conftest import Users, client_for
from tests.https_environment import (
    CA_VARIABLES,
    DEAD_PROXY,
    clear_environment,
    hashed_ca_dir,
)


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_environment(monkeypatch)


@pytest.mark.parametrize("variable", CA_VARIABLES)
@pytest.mark.parametrize("value", ["missing", "another CA"])
async def test_a_bogus_ca_bundle_in_the_environment_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
    users: Users,
    make_exchanger: Callable[..., Exchanger],
    downstream_scope: str,
    variable: str,
    value: str,
) -> None:
    monkeypatch.setenv(variable, "/nonexistent/ca.pem" if value == "missing" else certifi.where())
    exchanger = make_exchanger()
    token = await exchanger.acquire([downstream_scope], identity=await users.identity())
    assert token.reveal().count(".") == 2


@pytest.mark.parametrize("variable", CA_VARIABLES)
async def test_the_environment_cannot_add_trust_to_an_explicit_ca(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    authority: DevAuthority,
    users: Users,
    make_exchanger: Callable[..., Exchanger],
    downstream_scope: str,
    variable: str,
) -> None:
    """`ca_file` names a CA that does not sign the authority; the environment names one that
    does. The exchange must fail: the environment never widens an explicit trust."""
    trusted = (
        hashed_ca_dir(tmp_path, authority.ca_file)
        if variable == "SSL_CERT_DIR"
        else str(authority.ca_file)
    )
    monkeypatch.setenv(variable, trusted)
    identity = await users.identity()
    exchanger = make_exchanger(replace(client_for(authority), ca_file=certifi.where()))
    with pytest.raises(TokenExchangeError) as caught:
        await exchanger.acquire([downstream_scope], identity=identity)
    # A certificate failure is configuration, named as such (never retried as an outage).
    assert not isinstance(caught.value, AuthorityUnavailableError)
    assert "TLS certificate was not accepted" in str(caught.value)
    assert authority.requests.count(endpoint="token") == 0


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"])
async def test_proxy_variables_do_not_route_an_exchange_with_an_explicit_ca(
    monkeypatch: pytest.MonkeyPatch,
    users: Users,
    make_exchanger: Callable[..., Exchanger],
    downstream_scope: str,
    variable: str,
) -> None:
    monkeypatch.setenv(variable, DEAD_PROXY)
    token = await make_exchanger().acquire([downstream_scope], identity=await users.identity())
    assert token.reveal()


@pytest.mark.parametrize("ca_file", ["", "   ", "/nonexistent/ca.pem"])
def test_an_empty_or_missing_ca_file_is_refused_at_start_up(
    authority: DevAuthority, ca_file: str
) -> None:
    """requests treats `verify=""` as "skip verification": an unset variable read into
    `ca_file` must not switch TLS checking off (an empty one is refused by the
    `ConfidentialClient` already, a missing file when the exchanger is built)."""
    with pytest.raises(ConfigurationError, match="ca_file"):
        OnBehalfOf(replace(client_for(authority), ca_file=ca_file))
