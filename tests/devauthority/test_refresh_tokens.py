"""Refresh tokens live like Entra's: tied to the user's credential version (a password change or
"Revoke sessions" voids them: AADSTS50173), expiring after 90 days unused (AADSTS700082), and
rotated on every use (the successor comes back even without `offline_access`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from grpc_obo.devauthority import DevAuthority
from tests.devauthority.conftest import Http, Msal, assert_entra_error, ropc_form, scope


@pytest.fixture
def alice_password(authority: DevAuthority) -> Iterator[None]:
    """Put alice's password and clock back: the session's world is shared."""
    alice = authority.world.user("alice")
    before = alice.password
    yield
    alice.password = before
    authority.minter.clock = time.time


def _sign_in(authority: DevAuthority, http: Http) -> dict[str, Any]:
    response = http.token(ropc_form(authority))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _refresh(
    authority: DevAuthority, http: Http, token: str, **extra: str
) -> Any:  # requests.Response
    return http.token(
        {
            "grant_type": "refresh_token",
            "client_id": authority.world.app("client").client_id,
            "refresh_token": token,
            **extra,
        }
    )


@pytest.mark.usefixtures("alice_password")
def test_a_password_change_voids_refresh_tokens(authority: DevAuthority, http: Http) -> None:
    held = _sign_in(authority, http)["refresh_token"]
    authority.world.set_password("alice", "a-new-Passw0rd")
    body = assert_entra_error(
        _refresh(authority, http, held), status=400, error="invalid_grant", code=50173
    )
    assert "TokensValidFrom" in body["error_description"]
    # A password set directly (as tests do) counts as a change too.
    again = _sign_in(authority, http)["refresh_token"]
    authority.world.user("alice").password = "yet-another-Passw0rd"
    assert_entra_error(
        _refresh(authority, http, again), status=400, error="invalid_grant", code=50173
    )


@pytest.mark.usefixtures("alice_password")
def test_revoke_sessions_voids_refresh_tokens_until_the_user_signs_in_again(
    authority: DevAuthority, http: Http, msal_apps: Msal
) -> None:
    app = msal_apps.public()
    alice = authority.world.user("alice")
    first = app.acquire_token_by_username_password(
        alice.username, alice.password, scopes=[scope(authority, "original")]
    )
    assert "access_token" in first, first
    before = time.time()
    revoked = authority.world.revoke_sessions("alice")
    assert revoked is alice and alice.tokens_valid_from >= before
    # MSAL's silent refresh is refused with Entra's error: the app must sign the user in.
    silent = app.acquire_token_silent_with_error(
        [scope(authority, "original")], account=app.get_accounts()[0], force_refresh=True
    )
    assert silent is not None and 50173 in silent["error_codes"], silent
    fresh = _sign_in(authority, http)
    assert _refresh(authority, http, fresh["refresh_token"]).status_code == 200


@pytest.mark.usefixtures("alice_password")
def test_refresh_tokens_expire_after_ninety_days_unused(
    authority: DevAuthority, http: Http
) -> None:
    held = _sign_in(authority, http)["refresh_token"]
    authority.minter.clock = lambda: time.time() + 90 * 86400 + 1
    body = assert_entra_error(
        _refresh(authority, http, held), status=400, error="invalid_grant", code=700082
    )
    assert "inactive for 90." in body["error_description"]


def test_refresh_tokens_rotate_on_use(authority: DevAuthority, http: Http) -> None:
    first = _sign_in(authority, http)["refresh_token"]
    # Without offline_access in the request the successor still comes back...
    rotated = _refresh(authority, http, first, scope=scope(authority, "original"))
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["refresh_token"]
    assert second != first
    # ...the old one is spent, and the new one works (and rotates again).
    assert_entra_error(
        _refresh(authority, http, first), status=400, error="invalid_grant", code=9002313
    )
    third = _refresh(authority, http, second)
    assert third.status_code == 200 and third.json()["refresh_token"] not in (first, second)


def test_the_store_is_bounded_and_forgets_expired_tokens(authority: DevAuthority) -> None:
    from grpc_obo.devauthority._refresh import RefreshTokens

    now = [1_000.0]
    store = RefreshTokens(lambda: now[0], lifetime=10, limit=3)
    alice = authority.world.user("alice")

    def issue() -> str:
        return store.issue(
            alice,
            client_id="c",
            resource_client_id="r",
            resource_prefix="",
            scopes=frozenset({"x"}),
            amr=("pwd",),
        )

    tokens = [issue() for _ in range(5)]
    assert len(store) == 3  # the oldest two were forgotten
    assert store.owner(tokens[0]) is None and store.owner(tokens[4]) == alice.oid
    now[0] += 11
    issue()
    assert len(store) == 1  # the expired ones were pruned
