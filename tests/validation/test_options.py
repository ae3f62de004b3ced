"""ValidatorOptions: misconfiguration fails at construction with ConfigurationError."""

from __future__ import annotations

from typing import Any

import pytest

import grpc_obo
from grpc_obo import ValidatorOptions
from tests.validation.tokens import API_CLIENT_ID, OTHER_TENANT, TENANT, jwk, jwks

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
        {"http_timeout": 0},
        {"clock": 5},
        {"ssl_context": "yes"},
        {"allowed_client_ids": {"not-a-guid"}},
        {"allowed_client_ids": frozenset()},
        {"authority_host": "login.microsoftonline.com"},
        {"authority_host": "http://login.microsoftonline.com"},
        {"authority_host": "https://login.microsoftonline.com/tenant"},
        {"authority_host": "https://user:pw@login.microsoftonline.com"},
        {"v1_issuer_host": "sts.windows.net"},
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
    with pytest.raises(TypeError):
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
