"""The device code grant, as Entra runs it: MSAL's `initiate_device_flow` gets a user code, the
person signs in on the authority's sign-in page (`/devicelogin`) and MSAL's polling then gets
the user's tokens. Codes are single-use, bound to their client, and expire; refusals answer with
Entra's errors; the page escapes what it shows; nothing logs the password.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
import requests

from grpc_obo.devauthority import DevAuthority
from tests.devauthority.conftest import TIMEOUT, Http, Msal, assert_entra_error, scope
from tests.waiting import eventually

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def start(authority: DevAuthority, http: Http, client: str = "client", **extra: str) -> Any:
    form = {
        "client_id": authority.world.app(client).client_id,
        "scope": scope(authority, "original"),
    }
    form.update(extra)
    response = http.post(f"{authority.authority_url}/oauth2/v2.0/devicecode", data=form)
    assert response.status_code == 200, response.text
    return response.json()


def sign_in(
    authority: DevAuthority, http: Http, code: str, user: str = "alice", password: str | None = None
) -> requests.Response:
    found = authority.world.user(user)
    return http.post(
        "/devicelogin",
        data={
            "code": code,
            "username": found.username,
            "password": found.password if password is None else password,
        },
    )


def redeem(authority: DevAuthority, http: Http, device_code: str, client: str = "client") -> Any:
    return http.token(
        {
            "grant_type": DEVICE_GRANT,
            "client_id": authority.world.app(client).client_id,
            "device_code": device_code,
        }
    )


def polled(authority: DevAuthority) -> int:
    """Device-code redemptions the authority has answered (pending or not)."""
    return authority.requests.count(endpoint="token", grant="device_code")


async def test_msal_device_flow_with_a_sign_in_on_the_page(
    authority: DevAuthority, http: Http, msal_apps: Msal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = msal_apps.public()
    flow = app.initiate_device_flow(scopes=[scope(authority, "original")])
    assert flow["verification_uri"] == f"{authority.base_url}/devicelogin"
    assert flow["user_code"] in flow["message"] and flow["interval"] == 1
    waiting = asyncio.create_task(asyncio.to_thread(app.acquire_token_by_device_flow, flow))
    # MSAL polls (every `interval` s, its own clock) and is told authorization_pending.
    await eventually(lambda: polled(authority) >= 1, within=TIMEOUT)
    assert not waiting.done()
    page = await asyncio.to_thread(http.get, "/devicelogin")
    assert page.status_code == 200 and 'name="password"' in page.text
    assert page.headers["Content-Type"].startswith("text/html")
    answer = await asyncio.to_thread(sign_in, authority, http, flow["user_code"])
    assert answer.status_code == 200 and "signed in as alice@contoso.example" in answer.text
    result = await asyncio.wait_for(waiting, timeout=TIMEOUT)
    assert "access_token" in result, result.get("error")
    assert "refresh_token" in result
    alice = authority.world.user("alice")
    claims = http.verify(result["access_token"], audience=authority.world.app("original").client_id)
    assert (claims["oid"], claims["scp"]) == (alice.oid, "access_as_user")
    assert claims["azp"] == authority.world.app("client").client_id
    log = authority.requests
    assert log.count(endpoint="devicecode", ok=True) == 1
    assert log.count(endpoint="devicelogin", user="alice", ok=True) == 1
    assert log.count(grant="device_code", ok=False) >= 1  # pending polls
    assert log.count(grant="device_code", user="alice", ok=True) == 1
    # MSAL's own DEBUG log shows the device code: what grpc_obo logs and keeps must not.
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("grpc_obo")]
    text = "\n".join(ours) + repr(list(log))
    assert "/devicelogin" in text
    for secret in (
        alice.password,
        result["access_token"],
        result["refresh_token"],
        flow["device_code"],
    ):
        assert secret not in text


def test_pending_until_signed_in_and_single_use(authority: DevAuthority, http: Http) -> None:
    flow = start(authority, http)
    assert_entra_error(
        redeem(authority, http, flow["device_code"]),
        status=400,
        error="authorization_pending",
        code=70016,
    )
    assert sign_in(authority, http, flow["user_code"], password="wrong").status_code == 400
    assert_entra_error(
        redeem(authority, http, flow["device_code"]),
        status=400,
        error="authorization_pending",
        code=70016,
    )
    # Another client presenting the code learns nothing and does not burn it.
    assert_entra_error(
        redeem(authority, http, flow["device_code"], client="original"),
        status=401,
        error="invalid_client",
        code=7000218,
    )
    assert sign_in(authority, http, flow["user_code"].lower()).status_code == 200
    body = redeem(authority, http, flow["device_code"]).json()
    assert "access_token" in body
    assert_entra_error(
        redeem(authority, http, flow["device_code"]), status=400, error="expired_token", code=70019
    )
    # A used code cannot be approved again.
    again = sign_in(authority, http, flow["user_code"])
    assert again.status_code == 400 and "unknown, used already or expired" in again.text


def test_another_public_client_cannot_redeem_the_code(authority: DevAuthority, http: Http) -> None:
    other = authority.world.add_app("other-cli", public_client=True)
    try:
        flow = start(authority, http)
        sign_in(authority, http, flow["user_code"])
        assert_entra_error(
            redeem(authority, http, flow["device_code"], client="other-cli"),
            status=400,
            error="bad_verification_code",
            code=70000,
        )
        assert "access_token" in redeem(authority, http, flow["device_code"]).json()
    finally:
        authority.world.remove_app(other.client_id)


def test_an_expired_code_is_refused(authority: DevAuthority, http: Http) -> None:
    flow = start(authority, http)
    authority.minter.clock = lambda: time.time() + 901
    try:
        assert sign_in(authority, http, flow["user_code"]).status_code == 400
        assert_entra_error(
            redeem(authority, http, flow["device_code"]),
            status=400,
            error="expired_token",
            code=70019,
        )
    finally:
        authority.minter.clock = time.time


def test_a_user_of_another_tenant_cannot_approve_a_tenant_code(
    authority: DevAuthority, http: Http
) -> None:
    flow = start(authority, http)  # the home tenant's authority
    assert sign_in(authority, http, flow["user_code"], user="carol").status_code == 400


def test_missing_consent_is_answered_at_redemption(authority: DevAuthority, http: Http) -> None:
    with authority.world.without_consent("client", "original"):
        flow = start(authority, http)
        sign_in(authority, http, flow["user_code"])
        assert_entra_error(
            redeem(authority, http, flow["device_code"]),
            status=400,
            error="invalid_grant",
            code=65001,
            suberror="consent_required",
        )


def test_unknown_resource_is_refused_at_start(authority: DevAuthority, http: Http) -> None:
    response = http.post(
        f"{authority.authority_url}/oauth2/v2.0/devicecode",
        data={
            "client_id": authority.world.app("client").client_id,
            "scope": "api://nowhere/Read",
        },
    )
    assert_entra_error(response, status=400, error="invalid_resource", code=500011)


def test_the_page_escapes_what_it_shows(authority: DevAuthority, http: Http) -> None:
    page = http.get("/devicelogin", params={"code": '"><script>x</script>'})
    assert "<script>x" not in page.text and "&lt;script&gt;" in page.text
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    refused = http.post(
        "/devicelogin", data={"code": "<b>X</b>", "username": "<i>u</i>", "password": "p"}
    )
    assert refused.status_code == 400
    assert "<b>X" not in refused.text and "<i>u" not in refused.text


def test_an_unknown_device_code_is_a_bad_verification_code(
    authority: DevAuthority, http: Http
) -> None:
    """Entra tells a code it never issued (`bad_verification_code`) from a used or expired
    one (`expired_token`)."""
    assert_entra_error(
        redeem(authority, http, "DAQABAAEAAAD.never-issued"),
        status=400,
        error="bad_verification_code",
        code=70000,
    )


def test_pending_flows_are_capped_per_client_and_pruned(
    authority: DevAuthority, http: Http
) -> None:
    from grpc_obo.devauthority._grants import MAX_DEVICE_FLOWS_PER_CLIENT

    cli = authority.world.add_app("greedy-cli", public_client=True)
    try:
        form = {"client_id": cli.client_id, "scope": "openid"}
        url = f"{authority.authority_url}/oauth2/v2.0/devicecode"
        for _ in range(MAX_DEVICE_FLOWS_PER_CLIENT):
            assert http.post(url, data=form).status_code == 200
        refused = http.post(url, data=form)
        assert_entra_error(refused, status=429, error="temporarily_unavailable", code=50196)
        assert refused.headers["Retry-After"] == "5"
        # Other clients are not starved by this one.
        assert start(authority, http)["user_code"]
        # Expired flows are pruned: the client may start again.
        authority.minter.clock = lambda: time.time() + 901
        assert http.post(url, data=form).status_code == 200
    finally:
        authority.minter.clock = time.time
        authority.world.remove_app(cli.client_id)
