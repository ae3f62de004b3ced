"""MFA is not answered by a password: the password grant is refused (AADSTS50076, with the
challenge's claims) when the user's conditional access wants MFA for the resource or the request
carries a pending challenge's claims; MFA is satisfied only on the sign-in page, by its MFA step.
Wrong passwords lock an account for a while (smart lockout, AADSTS50053)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import jwt
import pytest

from grpc_obo.devauthority import DevAuthority
from tests.devauthority.conftest import (
    Http,
    Msal,
    SignInPage,
    assert_entra_error,
    ropc_form,
    scope,
)


def _amr(token: str) -> list[str]:
    amr: list[str] = jwt.decode(token, options={"verify_signature": False})["amr"]
    return amr


@pytest.mark.parametrize("on", ["original", None], ids=["this-resource", "every-resource"])
def test_password_grant_is_refused_when_the_policy_wants_mfa(
    authority: DevAuthority, http: Http, on: str | None
) -> None:
    resource = authority.world.app(on).client_id if on else None
    challenge = authority.faults.require_claims("alice", resource_client_id=resource)
    body = assert_entra_error(
        http.token(ropc_form(authority)),
        status=400,
        error="invalid_grant",
        code=50076,
        suberror="basic_action",
    )
    assert body["claims"] == challenge.claims
    # Bob has no such policy.
    assert http.token(ropc_form(authority, "bob")).status_code == 200


def test_password_grant_with_a_pending_challenges_claims_is_refused(
    authority: DevAuthority, http: Http
) -> None:
    """The policy is on downstream; the client signs in to original with the claims it was
    sent back: a password cannot answer them (before: it got `amr` with `mfa`)."""
    downstream = authority.world.app("downstream").client_id
    challenge = authority.faults.require_claims("alice", resource_client_id=downstream)
    assert http.token(ropc_form(authority)).status_code == 200  # original needs no MFA
    body = assert_entra_error(
        http.token(ropc_form(authority, claims=challenge.claims)),
        status=400,
        error="invalid_grant",
        code=50076,
    )
    assert body["claims"] == challenge.claims


def test_the_device_code_page_asks_for_the_mfa_step(
    authority: DevAuthority, http: Http, msal_apps: Msal
) -> None:
    authority.faults.require_claims("alice")  # MFA for every resource
    app = msal_apps.public()
    flow = app.initiate_device_flow(scopes=[scope(authority, "original")])
    page = SignInPage(authority)
    try:
        page.open(f"{flow['verification_uri']}?code={flow['user_code']}")
        assert "Signing in to <b>client</b>" in page.text  # the page names the app
        page.submit(code=flow["user_code"], **page.credentials("alice"))
        assert page.asks_for_mfa and page.response is not None
        assert page.response.status_code == 200
        # Until the step is approved, the code is still pending.
        pending = http.token(
            {
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "client_id": authority.world.app("client").client_id,
                "device_code": flow["device_code"],
            }
        )
        assert_entra_error(pending, status=400, error="authorization_pending", code=70016)
        page.submit()
        assert "You have signed in as alice@contoso.example" in page.text
    finally:
        page.close()
    result = app.acquire_token_by_device_flow(flow)
    assert _amr(result["access_token"]) == ["pwd", "mfa"]
    # The refresh token remembers the MFA: a silent refresh keeps it.
    later = app.acquire_token_silent(
        [scope(authority, "original")], account=app.get_accounts()[0], force_refresh=True
    )
    assert later is not None and _amr(later["access_token"]) == ["pwd", "mfa"]


def test_an_mfa_ticket_serves_only_its_own_sign_in(authority: DevAuthority, http: Http) -> None:
    authority.faults.require_claims("alice")
    codes = []
    for _ in range(2):
        started = http.post(
            f"{authority.authority_url}/oauth2/v2.0/devicecode",
            data={
                "client_id": authority.world.app("client").client_id,
                "scope": scope(authority, "original"),
            },
        )
        codes.append(started.json()["user_code"])
    page = SignInPage(authority)
    try:
        page.open(f"{authority.base_url}/devicelogin")
        page.submit(code=codes[0], **page.credentials("alice"))
        assert page.asks_for_mfa
        page.submit(code=codes[1])  # the first sign-in's ticket, another code
        assert page.response is not None and page.response.status_code == 400
        assert "AADSTS50089" in page.text
    finally:
        page.close()


def test_a_refresh_cannot_add_mfa(authority: DevAuthority, http: Http) -> None:
    signed_in = http.token(ropc_form(authority)).json()
    authority.faults.require_claims("alice")
    refreshed = http.token(
        {
            "grant_type": "refresh_token",
            "client_id": authority.world.app("client").client_id,
            "refresh_token": signed_in["refresh_token"],
        }
    )
    assert_entra_error(refreshed, status=400, error="interaction_required", code=50076)


@pytest.fixture
def shifted_clock(authority: DevAuthority) -> Iterator[list[float]]:
    offset = [0.0]
    authority.minter.clock = lambda: time.time() + offset[0]
    yield offset
    authority.minter.clock = time.time


def test_smart_lockout_after_ten_wrong_passwords(
    authority: DevAuthority, http: Http, shifted_clock: list[float]
) -> None:
    user = authority.world.add_user("locked@contoso.example")
    try:
        for _ in range(10):
            wrong = http.token(ropc_form(authority, user.username, password="wrong"))
            assert_entra_error(wrong, status=400, error="invalid_grant", code=50126)
        # Locked: even the right password is refused, on the page too.
        assert_entra_error(
            http.token(ropc_form(authority, user.username)),
            status=400,
            error="invalid_grant",
            code=50053,
        )
        shifted_clock[0] = 61
        assert http.token(ropc_form(authority, user.username)).status_code == 200
    finally:
        authority.world.users.remove(user)
