"""Cache key derivation: canonical, order-insensitive for scopes, sensitive to everything else."""

from __future__ import annotations

import re

import pytest

from grpc_obo import ConfigurationError, SecretToken
from grpc_obo._exchange._keys import OBO_KEY_PREFIX, obo_cache_key

BASE = {
    "assertion": SecretToken("eyJ.user-token.sig"),
    "client_id": "11111111-1111-1111-1111-111111111111",
    "authority": "https://login.example.test/tenant",
    "scopes": ["api://downstream/read", "api://downstream/write"],
    "claims": None,
}


def key(**changes: object) -> str:
    return obo_cache_key(**{**BASE, **changes})  # type: ignore[arg-type]


def test_key_is_prefixed_sha256_hex_without_the_token() -> None:
    derived = key()
    assert re.fullmatch(re.escape(OBO_KEY_PREFIX) + "[0-9a-f]{64}", derived)
    assert "user-token" not in derived


def test_key_is_deterministic() -> None:
    assert key() == key()


def test_scope_order_and_duplicates_do_not_matter() -> None:
    assert key(scopes=["api://downstream/write", "api://downstream/read"]) == key()
    assert (
        key(scopes=("api://downstream/read", "api://downstream/write", "api://downstream/read"))
        == key()
    )
    assert key(scopes={"api://downstream/read", "api://downstream/write"}) == key()


@pytest.mark.parametrize(
    "change",
    [
        {"assertion": SecretToken("eyJ.other-user.sig")},
        {"client_id": "22222222-2222-2222-2222-222222222222"},
        {"authority": "https://login.example.test/other-tenant"},
        {"scopes": ["api://downstream/read"]},
        {"scopes": ["api://downstream/read", "api://downstream/write", "api://downstream/admin"]},
        {"claims": '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'},
        {"claims": ""},
    ],
)
def test_any_single_field_change_changes_the_key(change: dict[str, object]) -> None:
    assert key(**change) != key()


def test_field_boundaries_cannot_be_shifted() -> None:
    # With naive concatenation "ab"+"c" == "a"+"bc"; the JSON encoding keeps fields apart.
    first = key(client_id="ab", authority="c")
    second = key(client_id="a", authority="bc")
    assert first != second
    assert key(scopes=["a b"]) != key(scopes=["a", "b"])


def test_a_bare_string_or_no_scopes_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        key(scopes="api://downstream/read")
    with pytest.raises(ConfigurationError):
        key(scopes=[])
