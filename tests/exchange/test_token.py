"""`CachedToken`: built from MSAL results, redacted, lifetimes consistent."""

from __future__ import annotations

import pickle

import pytest

from grpc_obo import SecretToken
from grpc_obo._exchange import CachedToken

NOW = 1_700_000_000.0


def test_from_msal_uses_refresh_on_when_msal_gives_it() -> None:
    token = CachedToken.from_msal(
        {
            "access_token": "at",
            "expires_in": 3600,
            "refresh_on": int(NOW) + 1800,
            "token_type": "Bearer",
            "refresh_token": "rt",
        },
        now=NOW,
    )
    assert token.expires_on == NOW + 3600
    assert token.refresh_on == NOW + 1800
    assert token.token_type == "Bearer"
    assert token.access_token.reveal() == "at"


def test_from_msal_without_refresh_hint_refreshes_at_half_life() -> None:
    token = CachedToken.from_msal({"access_token": "at", "expires_in": "3600"}, now=NOW)
    assert token.refresh_on == NOW + 1800
    assert token.token_type == "Bearer"


def test_from_msal_accepts_raw_refresh_in() -> None:
    token = CachedToken.from_msal(
        {"access_token": "at", "expires_in": 3600, "refresh_in": 600}, now=NOW
    )
    assert token.refresh_on == NOW + 600


def test_refresh_on_never_after_expiry() -> None:
    token = CachedToken(access_token=SecretToken("at"), expires_on=NOW, refresh_on=NOW + 10)
    assert token.refresh_on == NOW


def test_repr_redacts_and_pickle_is_refused() -> None:
    token = CachedToken(access_token=SecretToken("sekrit-token"), expires_on=NOW, refresh_on=NOW)
    assert "sekrit" not in repr(token)
    assert "sekrit" not in str(token)
    with pytest.raises(TypeError):
        pickle.dumps(token)


def test_usable_respects_margin() -> None:
    token = CachedToken(access_token=SecretToken("at"), expires_on=NOW + 400, refresh_on=NOW)
    assert token.usable(NOW, 300)
    assert not token.usable(NOW + 100, 300)


def test_the_token_type_is_shared_not_copied_per_response() -> None:
    def result() -> dict[str, object]:
        return {"access_token": "t", "expires_in": 3600, "token_type": "".join(["Bea", "rer"])}

    first, second = CachedToken.from_msal(result()), CachedToken.from_msal(result())
    assert first.token_type == "Bearer"
    assert first.token_type is second.token_type
