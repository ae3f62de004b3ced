"""ValidatorOptions: misconfiguration fails at construction with ConfigurationError."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import grpc_obo
from grpc_obo import ValidatorOptions
from grpc_obo.devauthority._tls import write_tls_files
from tests.validation.conftest import KeyServer
from tests.validation.tokens import (
    API_CLIENT_ID,
    OTHER_TENANT,
    TENANT,
    jwk,
    jwks,
    mint,
    v1_claims,
    v2_claims,
)

BASE: dict[str, Any] = {"tenant": TENANT, "audiences": frozenset({API_CLIENT_ID})}


def test_defaults() -> None:
    options = ValidatorOptions(**BASE)
    assert options.authority_host == "https://login.microsoftonline.com"
    assert options.versions == {"2.0"}
    assert options.leeway == 60
    assert options.key_refresh_interval == 86400
    assert options.unknown_kid_refresh_interval == 300
    assert options.new_kid_refresh_interval == 30
    assert (options.key_fetch_backoff_initial, options.key_fetch_backoff_max) == (1, 30)
    assert options.max_lifetime is None
    assert options.discovery_url == (
        f"https://login.microsoftonline.com/{TENANT}/v2.0/.well-known/openid-configuration"
    )
    assert options.issuer_for("2.0", TENANT) == f"https://login.microsoftonline.com/{TENANT}/v2.0"
    assert options.issuer_for("1.0", TENANT) == f"https://sts.windows.net/{TENANT}/"


def test_non_microsoft_authority_templates() -> None:
    options = ValidatorOptions(
        **BASE, authority_host="https://127.0.0.1:8443/", v1_issuer_host="https://127.0.0.1:8443"
    )
    assert options.issuer_for("2.0", TENANT) == f"https://127.0.0.1:8443/{TENANT}/v2.0"
    assert options.issuer_for("1.0", TENANT) == f"https://127.0.0.1:8443/{TENANT}/"


def test_guids_are_normalised_to_lowercase() -> None:
    options = ValidatorOptions(tenant=TENANT.upper(), audiences={API_CLIENT_ID.upper()})
    assert options.tenant == TENANT
    assert options.audiences == {API_CLIENT_ID}


@pytest.mark.parametrize(
    "changes",
    [
        {"tenant": "contoso.onmicrosoft.com"},
        {"tenant": "consumers"},
        {"tenant": ""},
        {"tenant": "organizations"},  # neither allowed_tenants nor allow_all_tenants
        {"tenant": "common", "allowed_tenants": frozenset()},
        {"tenant": "common", "allowed_tenants": {TENANT}, "allow_all_tenants": True},
        {"tenant": "common", "allowed_tenants": {"contoso"}},
        {"allow_all_tenants": True},  # single tenant
        {"allowed_tenants": {OTHER_TENANT}},  # single tenant, another tenant
        {"audiences": frozenset()},
        {"audiences": API_CLIENT_ID},  # a bare string, not a collection
        {"audiences": {"https://graph.microsoft.com"}},
        {"audiences": {"00000003-0000-0000-c000-000000000000"}},
        {"versions": frozenset()},
        {"versions": {"3.0"}},
        {"leeway": -1},
        {"leeway": 301},
        {"leeway": True},
        {"max_token_bytes": 100},
        {"max_token_bytes": 1 << 20},
        {"key_refresh_interval": 2 * 86400},
        {"key_refresh_interval": 0},
        {"unknown_kid_refresh_interval": 0},
        {"key_refresh_interval": 60, "unknown_kid_refresh_interval": 120},
        {"new_kid_refresh_interval": 0},
        {"new_kid_refresh_interval": 2 * 86400},
        {"key_fetch_backoff_initial": 0},
        {"key_fetch_backoff_initial": True},
        {"key_fetch_backoff_max": 0},
        {"key_fetch_backoff_max": 7200},
        {"key_fetch_backoff_initial": 10, "key_fetch_backoff_max": 5},
        {"max_lifetime": 0},
        {"max_lifetime": -3600},
        {"max_lifetime": True},
        {"max_lifetime": "28h"},
        {"max_lifetime": 365 * 86400},
        {"verified_cache_size": -1},
        {"verified_cache_bytes": 0},
        {"verified_cache_bytes": 1024},
        {"verified_cache_bytes": 1.5 * 2**20},
        {"verified_cache_bytes": True},
        {"verified_cache_bytes": 2**50},
        {"http_timeout": 0},
        {"clock": 5},
        {"ssl_context": "yes"},
        {"allowed_client_ids": {"not-a-guid"}},
        {"allowed_client_ids": frozenset()},
        {"authority_host": "http://login.microsoftonline.com"},
        {"authority_host": "ftp://login.microsoftonline.com"},
        {"authority_host": "  "},
        {"authority_host": "https://login.microsoftonline.com/tenant"},
        {"authority_host": "https://user:pw@login.microsoftonline.com"},
        {"v1_issuer_host": "ftp://sts.windows.net"},
        {"ca_file": ""},
        {"ca_file": "/nonexistent/ca.pem"},
        {"jwks": {"keys": []}},
        {"jwks": {"keys": [jwk("small", bits=1024)]}},
        {"jwks": {"nokeys": 1}},
        {"jwks": "{}"},
    ],
)
def test_misconfiguration_fails_at_construction(changes: dict[str, Any]) -> None:
    with pytest.raises(grpc_obo.ConfigurationError):
        ValidatorOptions(**(BASE | changes))


def test_options_are_frozen_and_repr_hides_keys() -> None:
    options = ValidatorOptions(**BASE, jwks=jwks(jwk("key-a")))
    with pytest.raises(AttributeError):
        options.tenant = OTHER_TENANT  # type: ignore[misc]
    assert "key-a" not in repr(options)


def test_validator_takes_options_only() -> None:
    with pytest.raises(grpc_obo.ConfigurationError):
        grpc_obo.TokenValidator({"tenant": TENANT})  # type: ignore[arg-type]


def test_max_lifetime_and_key_fetch_timings_accept_sensible_values() -> None:
    options = ValidatorOptions(
        **BASE,
        max_lifetime=28 * 3600,  # the longest Entra access tokens (CAE) live about 28 h
        new_kid_refresh_interval=10,
        key_fetch_backoff_initial=0.5,
        key_fetch_backoff_max=60,
    )
    assert options.max_lifetime == 28 * 3600
    assert options.new_kid_refresh_interval == 10
    assert (options.key_fetch_backoff_initial, options.key_fetch_backoff_max) == (0.5, 60)


# -- configuration parity with azure-identity ---------------------------------------------------


def test_a_bare_authority_host_means_https_as_in_azure_identity() -> None:
    options = ValidatorOptions(
        **BASE, authority_host="login.microsoftonline.us/", v1_issuer_host="sts.windows.net"
    )
    assert options.authority_host == "https://login.microsoftonline.us"
    assert options.issuer_for("2.0", TENANT) == f"https://login.microsoftonline.us/{TENANT}/v2.0"
    assert options.issuer_for("1.0", TENANT) == f"https://sts.windows.net/{TENANT}/"
    assert options.discovery_url.startswith("https://login.microsoftonline.us/")


def _ca_pem(tmp_path: Path) -> Path:
    tls = write_tls_files(tmp_path / "tls")
    return tls.ca_file


def test_ca_file_trusts_exactly_that_ca(tmp_path: Path) -> None:
    ca_file = _ca_pem(tmp_path)
    options = ValidatorOptions(**BASE, ca_file=str(ca_file))
    assert options.ssl_context is not None
    subjects = [dict(x[0] for x in ca["subject"]) for ca in options.ssl_context.get_ca_certs()]
    assert [s["commonName"] for s in subjects] == ["grpc_obo dev authority CA"]
    # A Path works, and replace() keeps working (the derived context is not "both given").
    again = dataclasses.replace(ValidatorOptions(**BASE, ca_file=ca_file), leeway=30)  # type: ignore[arg-type]
    assert again.ca_file == str(ca_file) and again.ssl_context is not None


def test_ca_file_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing-ca.pem"
    with pytest.raises(grpc_obo.ConfigurationError, match=r"missing-ca\.pem.*does not exist"):
        ValidatorOptions(**BASE, ca_file=str(missing))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(grpc_obo.ConfigurationError, match=r"garbage\.pem.*not a readable PEM"):
        ValidatorOptions(**BASE, ca_file=str(garbage))
    with pytest.raises(grpc_obo.ConfigurationError, match="not both"):
        ValidatorOptions(
            **BASE, ca_file=str(_ca_pem(tmp_path)), ssl_context=ssl.create_default_context()
        )


ENV = {"AZURE_TENANT_ID": TENANT, "AZURE_CLIENT_ID": API_CLIENT_ID}


def test_from_env_reads_the_azure_identity_names() -> None:
    options = ValidatorOptions.from_env(ENV)
    assert options.tenant == TENANT
    assert options.audiences == {API_CLIENT_ID, f"api://{API_CLIENT_ID}"}
    assert options.authority_host == "https://login.microsoftonline.com"
    assert options.versions == {"2.0"}
    assert options.ssl_context is None


def test_from_env_reads_grpc_obo_variables_and_keywords_win(tmp_path: Path) -> None:
    ca_file = _ca_pem(tmp_path)
    env = {
        **ENV,
        "AZURE_AUTHORITY_HOST": "login.microsoftonline.us",
        "GRPC_OBO_AUDIENCES": f"{API_CLIENT_ID}, api://custom-uri",
        "GRPC_OBO_TOKEN_VERSIONS": "1.0 2.0",
        "GRPC_OBO_CA_FILE": str(ca_file),
        "GRPC_OBO_V1_ISSUER_HOST": "https://127.0.0.1:8443",
    }
    options = ValidatorOptions.from_env(env, leeway=10, versions=frozenset({"1.0"}))
    assert options.authority_host == "https://login.microsoftonline.us"
    assert options.audiences == {API_CLIENT_ID, "api://custom-uri"}
    assert options.versions == {"1.0"}  # the keyword wins
    assert options.leeway == 10
    assert options.ca_file == str(ca_file) and options.ssl_context is not None
    assert options.v1_issuer_host == "https://127.0.0.1:8443"


def test_from_env_multi_tenant_with_allowed_tenants() -> None:
    env = {**ENV, "AZURE_TENANT_ID": "organizations", "GRPC_OBO_ALLOWED_TENANTS": TENANT}
    options = ValidatorOptions.from_env(env)
    assert options.is_multi_tenant and options.allowed_tenants == {TENANT}


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"AZURE_CLIENT_ID": API_CLIENT_ID}, "AZURE_TENANT_ID"),
        ({"AZURE_TENANT_ID": TENANT}, "AZURE_CLIENT_ID"),
        ({**ENV, "AZURE_TENANT_ID": "s3cret-looking-value"}, "AZURE_TENANT_ID"),
        ({**ENV, "AZURE_AUTHORITY_HOST": "http://s3cret-looking-value"}, "AZURE_AUTHORITY_HOST"),
        ({**ENV, "GRPC_OBO_TOKEN_VERSIONS": "3.0"}, "GRPC_OBO_TOKEN_VERSIONS"),
        ({**ENV, "GRPC_OBO_CA_FILE": "/nonexistent/ca.pem"}, "GRPC_OBO_CA_FILE"),
        ({**ENV, "GRPC_OBO_AUDIENCES": "https://graph.microsoft.com"}, "GRPC_OBO_AUDIENCES"),
        ({**ENV, "GRPC_OBO_ALLOWED_TENANTS": "s3cret-looking-value"}, "GRPC_OBO_ALLOWED_TENANTS"),
        (
            {**ENV, "AZURE_TENANT_ID": "s3cret-looking-value", "GRPC_OBO_ALLOWED_TENANTS": TENANT},
            "AZURE_TENANT_ID",
        ),
        (
            {**ENV, "GRPC_OBO_V1_ISSUER_HOST": "ftp://s3cret-looking-value"},
            "GRPC_OBO_V1_ISSUER_HOST",
        ),
    ],
)
def test_from_env_errors_name_the_variable_not_its_value(
    env: dict[str, str], variable: str | None
) -> None:
    """The variable comes from the error's `setting`, whatever its message says."""
    with pytest.raises(grpc_obo.ConfigurationError) as caught:
        ValidatorOptions.from_env(env)
    if variable is not None:
        assert str(caught.value).startswith(variable)
        assert caught.value.setting == variable
    assert "s3cret-looking-value" not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"tenant": "contoso.com"}, "tenant"),
        ({"audiences": frozenset()}, "audiences"),
        ({"audiences": frozenset({"https://graph.microsoft.com"})}, "audiences"),
        ({"versions": frozenset({"3.0"})}, "versions"),
        ({"leeway": 9999}, "leeway"),
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file"),
        ({"authority_host": "ftp://login"}, "authority_host"),
        ({"allowed_tenants": frozenset({"not-a-guid"})}, "allowed_tenants"),
        ({"clock": None}, "clock"),
    ],
    ids=str,
)
def test_option_errors_name_their_setting(options: dict[str, Any], setting: str) -> None:
    with pytest.raises(grpc_obo.ConfigurationError) as caught:
        ValidatorOptions(**{"tenant": TENANT, "audiences": frozenset({API_CLIENT_ID}), **options})
    assert caught.value.setting == setting


async def test_a_refused_version_says_which_and_names_the_option(
    make_validator: Callable[..., grpc_obo.TokenValidator],
) -> None:
    validator = make_validator(versions=frozenset({"2.0"}))
    with pytest.raises(grpc_obo.InvalidClaimError) as caught:
        await validator.validate(mint(v1_claims()))
    assert caught.value.reason == "version_not_accepted"
    assert "1.0" in caught.value.message and 'versions={"2.0"}' in caught.value.message


async def test_key_source_unavailable_names_the_url_but_callers_get_the_fixed_message(
    key_server: KeyServer, make_remote_validator: Callable[..., grpc_obo.TokenValidator]
) -> None:
    key_server.down = True
    validator = make_remote_validator()
    with pytest.raises(grpc_obo.KeySourceUnavailableError) as caught:
        await validator.start()
    error = caught.value
    discovery = validator.options.discovery_url
    assert error.url == discovery
    assert discovery in str(error) and "HTTP 503" in str(error)
    assert error.message == "signing keys are unavailable"  # what a refused caller is told
    with pytest.raises(grpc_obo.KeySourceUnavailableError, match="HTTP 503"):
        await validator.validate(mint(v2_claims()))


def test_from_env_allowed_tenants_make_a_guid_tenant_multi_tenant() -> None:
    """AZURE_TENANT_ID stays the API's home tenant (ConfidentialClient.from_env reads it too);
    an allow-list of tenants makes the validator multi-tenant."""
    env = {**ENV, "GRPC_OBO_ALLOWED_TENANTS": f"{TENANT},{OTHER_TENANT}"}
    options = ValidatorOptions.from_env(env)
    assert options.tenant == "organizations"
    assert options.allowed_tenants == {TENANT, OTHER_TENANT}
    with pytest.raises(grpc_obo.ConfigurationError) as caught:
        ValidatorOptions.from_env({**env, "GRPC_OBO_ALLOWED_TENANTS": "contoso"})
    assert str(caught.value).startswith("GRPC_OBO_ALLOWED_TENANTS:")


@pytest.mark.parametrize("allowed", [None, TENANT])
@pytest.mark.parametrize("tenant", ["northwind", "contoso.onmicrosoft.com", "consumers", "{tid}"])
def test_from_env_refuses_a_tenant_that_is_not_a_guid_also_with_allowed_tenants(
    tenant: str, allowed: str | None
) -> None:
    """AZURE_TENANT_ID is the API's home tenant even when GRPC_OBO_ALLOWED_TENANTS makes the
    validator multi-tenant: a value Entra would not take stops the service at start-up. (A
    domain name is refused too: issuers carry the tenant GUID.)"""
    env = {**ENV, "AZURE_TENANT_ID": tenant}
    if allowed is not None:
        env["GRPC_OBO_ALLOWED_TENANTS"] = allowed
    with pytest.raises(grpc_obo.ConfigurationError) as caught:
        ValidatorOptions.from_env(env)
    assert str(caught.value).startswith("AZURE_TENANT_ID:")
    assert "GUID" in str(caught.value)


@pytest.mark.parametrize("tenant", [TENANT.upper(), "organizations", "common"])
def test_from_env_with_allowed_tenants_takes_a_guid_or_a_multi_tenant_name(tenant: str) -> None:
    env = {**ENV, "AZURE_TENANT_ID": tenant, "GRPC_OBO_ALLOWED_TENANTS": TENANT}
    options = ValidatorOptions.from_env(env)
    assert options.is_multi_tenant and options.allowed_tenants == {TENANT}
