"""The authorization code flow with PKCE, as MSAL Python runs it (`initiate_auth_code_flow` /
`acquire_token_by_auth_code_flow`), the sign-in page posted over HTTP as a browser posts it:
S256 only (`plain` refused), registered redirect URIs, single-use codes bound to client,
redirect URI and verifier, `prompt`, `login_hint`, `claims`, `state` and `nonce` honoured, an
MFA step when the user's conditional access wants one. (tests/devauthority/test_browser.py
drives the same page with headless Chromium.)"""

from __future__ import annotations

import base64
import hashlib
import secrets
import urllib.parse
from typing import Any

import jwt
import pytest

from grpc_obo.devauthority import DevAuthority
from tests.devauthority.conftest import Http, Msal, SignInPage, assert_entra_error, scope

REDIRECT = "http://localhost:53117"


def _query(location: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def _sign_in_on_the_page(
    authority: DevAuthority, auth_uri: str, user: str = "alice", *, approve_mfa: bool = True
) -> dict[str, str]:
    """Open `auth_uri`, type the user's credentials, approve MFA if asked; return the query the
    browser brings to the redirect URI."""
    page = SignInPage(authority)
    try:
        opened = page.open(auth_uri, allow_redirects=False)
        assert opened.status_code == 200, opened.text
        answer = page.submit(**page.credentials(user))
        if page.asks_for_mfa and approve_mfa:
            answer = page.submit()
        if answer.status_code == 200:  # response_mode=form_post: the form the browser posts
            action, fields = page.form()
            assert action == REDIRECT, action
            assert "script-src 'sha256-" in answer.headers["Content-Security-Policy"]
            return fields
        assert answer.status_code == 302, answer.text
        location = answer.headers["Location"]
        assert location.startswith(REDIRECT.split("?")[0].rsplit(":", 1)[0])
        return _query(location)
    finally:
        page.close()


def _flow(msal_apps: Msal, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    app = msal_apps.public()
    # form_post is what MSAL recommends (it warns otherwise): the code travels in a POST body.
    flow = app.initiate_auth_code_flow(
        [scope(msal_apps.authority, "original")],
        redirect_uri=REDIRECT,
        response_mode="form_post",
        **kwargs,
    )
    return app, flow


def test_msal_auth_code_flow_with_pkce(
    authority: DevAuthority, http: Http, msal_apps: Msal
) -> None:
    app, flow = _flow(msal_apps, login_hint="alice@contoso.example")
    assert "code_challenge_method=S256" in flow["auth_uri"]
    page = SignInPage(authority)
    try:
        page.open(flow["auth_uri"])
        assert 'value="alice@contoso.example"' in page.text  # login_hint prefills
        assert "Signing in to <b>client</b>" in page.text
        csp = page.response.headers["Content-Security-Policy"] if page.response else ""
        assert "frame-ancestors 'none'" in csp and "script-src 'none'" in csp
        assert "form-action 'self' http://localhost:53117" in csp
    finally:
        page.close()
    returned = _sign_in_on_the_page(authority, flow["auth_uri"])
    assert returned["state"] == flow["state"]
    result = app.acquire_token_by_auth_code_flow(flow, returned)
    assert "access_token" in result, result
    claims = http.verify(result["access_token"], audience=authority.world.app("original").client_id)
    assert claims["oid"] == authority.world.user("alice").oid and claims["amr"] == ["pwd"]
    # MSAL checked the id token's nonce; it is there.
    id_claims = jwt.decode(result["id_token"], options={"verify_signature": False})
    assert id_claims["nonce"]
    assert "refresh_token" in result
    # The code is single-use.
    again = app.acquire_token_by_auth_code_flow(flow, returned)
    assert "access_token" not in again


def test_an_mfa_policy_or_a_challenges_claims_get_the_mfa_step(
    authority: DevAuthority, http: Http, msal_apps: Msal
) -> None:
    downstream = authority.world.app("downstream").client_id
    challenge = authority.faults.require_claims("alice", resource_client_id=downstream)
    app, flow = _flow(msal_apps, claims_challenge=challenge.claims)
    returned = _sign_in_on_the_page(authority, flow["auth_uri"])
    result = app.acquire_token_by_auth_code_flow(flow, returned)
    assert "access_token" in result, result
    assert http.verify(result["access_token"], audience=authority.world.app("original").client_id)[
        "amr"
    ] == ["pwd", "mfa"]
    # Without the claims the policy (on downstream only) asks nothing of original's sign-in.
    app, flow = _flow(msal_apps)
    page = SignInPage(authority)
    try:
        page.open(flow["auth_uri"])
        page.submit(**page.credentials("alice"))
        assert not page.asks_for_mfa
        assert "code" in page.form()[1]  # straight back to the app (form_post)
    finally:
        page.close()


# -- raw requests: the checks one by one ---------------------------------------------------------


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.decode().rstrip("=")


def _authorize_url(authority: DevAuthority, **params: str) -> str:
    query = {
        "client_id": authority.world.app("client").client_id,
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "scope": f"{scope(authority, 'original')} openid offline_access",
        "state": "s-123",
        **params,
    }
    return f"{authority.authority_url}/oauth2/v2.0/authorize?{urllib.parse.urlencode(query)}"


def _code(authority: DevAuthority, challenge: str, **params: str) -> str:
    url = _authorize_url(
        authority, code_challenge=challenge, code_challenge_method="S256", **params
    )
    return _sign_in_on_the_page(authority, url)["code"]


def _redeem(http: Http, authority: DevAuthority, code: str, verifier: str, **extra: str) -> Any:
    return http.token(
        {
            "grant_type": "authorization_code",
            "client_id": authority.world.app("client").client_id,
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
            **extra,
        }
    )


def test_plain_and_missing_pkce_are_refused_at_the_redirect_uri(
    authority: DevAuthority, http: Http
) -> None:
    verifier, _ = _pkce()
    for params, code in (
        ({"code_challenge": verifier[:43], "code_challenge_method": "plain"}, "50148"),
        ({}, "9002325"),
    ):
        answer = http.get(_authorize_url(authority, **params), allow_redirects=False)
        assert answer.status_code == 302, answer.text
        returned = _query(answer.headers["Location"])
        assert returned["error"] == "invalid_request" and returned["state"] == "s-123"
        assert returned["error_description"].startswith(f"AADSTS{code}:")


def test_an_unregistered_redirect_uri_or_client_is_shown_not_redirected(
    authority: DevAuthority, http: Http
) -> None:
    _, challenge = _pkce()
    for params, code in (
        ({"redirect_uri": "https://evil.example/cb"}, "AADSTS50011"),
        ({"redirect_uri": "http://localhost:8080/other"}, "AADSTS50011"),  # another path
        ({"redirect_uri": "http://evil.example@localhost:8080"}, "AADSTS50011"),
        ({"redirect_uri": "http://localhost:port"}, "AADSTS50011"),
        ({"redirect_uri": "http://localhost:8080\r\nSet-Cookie: x=1"}, "AADSTS50011"),
        ({"client_id": "00000000-0000-4000-8000-000000000000"}, "AADSTS700016"),
    ):
        url = _authorize_url(
            authority, code_challenge=challenge, code_challenge_method="S256", **params
        )
        answer = http.get(url, allow_redirects=False)
        assert answer.status_code == 400 and code in answer.text, answer.text
        assert "Location" not in answer.headers


def test_codes_are_single_use_and_bound_to_client_redirect_uri_and_verifier(
    authority: DevAuthority, http: Http
) -> None:
    verifier, challenge = _pkce()
    code = _code(authority, challenge)
    assert_entra_error(
        _redeem(http, authority, code, secrets.token_urlsafe(48)),
        status=400,
        error="invalid_grant",
        code=50148,
    )
    # The wrong verifier spent it: a code is tried once.
    assert_entra_error(
        _redeem(http, authority, code, verifier), status=400, error="invalid_grant", code=54005
    )
    code = _code(authority, challenge)
    assert_entra_error(
        _redeem(http, authority, code, verifier, redirect_uri="http://localhost:1"),
        status=400,
        error="invalid_grant",
        code=50011,
    )
    code = _code(authority, challenge)
    other = authority.world.add_app("other-spa", public_client=True)
    try:
        assert_entra_error(
            _redeem(http, authority, code, verifier, client_id=other.client_id),
            status=400,
            error="invalid_grant",
            code=70000,
        )
    finally:
        authority.world.remove_app(other.client_id)
    # ...which did not burn it for its owner.
    body = _redeem(http, authority, code, verifier)
    assert body.status_code == 200, body.text
    assert_entra_error(
        _redeem(http, authority, code, verifier), status=400, error="invalid_grant", code=54005
    )


def test_state_nonce_and_prompt(authority: DevAuthority, http: Http) -> None:
    verifier, challenge = _pkce()
    code = _code(authority, challenge, nonce="n-456", prompt="login")
    body = _redeem(http, authority, code, verifier).json()
    assert jwt.decode(body["id_token"], options={"verify_signature": False})["nonce"] == "n-456"
    silent = http.get(
        _authorize_url(
            authority, code_challenge=challenge, code_challenge_method="S256", prompt="none"
        ),
        allow_redirects=False,
    )
    returned = _query(silent.headers["Location"])
    assert returned["error"] == "login_required" and returned["state"] == "s-123"


@pytest.mark.parametrize("hint", ['"><script>alert(1)</script>', "</b><i>x"])
def test_the_page_escapes_what_it_reflects(authority: DevAuthority, http: Http, hint: str) -> None:
    _, challenge = _pkce()
    url = _authorize_url(
        authority, code_challenge=challenge, code_challenge_method="S256", login_hint=hint
    )
    page = http.get(url)
    assert page.status_code == 200
    assert hint not in page.text and html_escaped(hint) in page.text
    assert page.headers["X-Frame-Options"] == "DENY"


def html_escaped(text: str) -> str:
    import html

    return html.escape(text)


def test_a_wrong_password_stays_on_the_page(authority: DevAuthority) -> None:
    _, challenge = _pkce()
    page = SignInPage(authority)
    try:
        page.open(_authorize_url(authority, code_challenge=challenge, code_challenge_method="S256"))
        answer = page.submit(username="alice@contoso.example", password="wrong")
        assert answer.status_code == 400 and "AADSTS50126" in answer.text
        answer = page.submit(**page.credentials("alice"))
        assert answer.status_code == 302 and "code=" in answer.headers["Location"]
    finally:
        page.close()


def test_no_code_verifier_password_or_ticket_reaches_the_log(
    authority: DevAuthority, http: Http, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    authority.faults.require_claims("alice")  # the MFA step too
    verifier, challenge = _pkce()
    with caplog.at_level(logging.DEBUG):
        page = SignInPage(authority)
        try:
            page.open(
                _authorize_url(authority, code_challenge=challenge, code_challenge_method="S256")
            )
            page.submit(**page.credentials("alice"))
            ticket = page.form()[1]["mfa_ticket"]
            answer = page.submit()
        finally:
            page.close()
        code = _query(answer.headers["Location"])["code"]
        body = _redeem(http, authority, code, verifier).json()
    logged = caplog.text + "".join(repr(e) for e in authority.requests)
    for secret in (
        code,
        verifier,
        ticket,
        authority.world.user("alice").password,
        body["access_token"],
        body["refresh_token"],
    ):
        assert secret not in logged
    assert authority.requests.count(endpoint="authorize") == 3
    assert authority.requests.count(grant="authorization_code", user="alice", ok=True) == 1
