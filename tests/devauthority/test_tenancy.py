"""Tenancy: a single-tenant app exists only in its own tenant and signs in only its users.

One check serves every grant and the device-code endpoint: a path naming another tenant is
AADSTS700016 (the app is not in that directory), a user of another tenant AADSTS50020.
Multi-tenant apps (the default) keep working everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from grpc_obo.devauthority import CONTOSO, FABRIKAM, App, DevAuthority
from tests.devauthority.conftest import Http, assert_entra_error, obo_form, scope


@pytest.fixture(scope="module")
def single(authority: DevAuthority) -> Iterator[dict[str, App]]:
    """A single-tenant public client, daemon and middle tier, all registered in Contoso."""
    world = authority.world
    apps = {
        "cli": world.add_app(
            "st-cli",
            public_client=True,
            multi_tenant=False,
            api_permissions={"original": ["access_as_user"]},
        ),
        "daemon": world.add_app(
            "st-daemon", multi_tenant=False, app_role_assignments={"downstream": ["Data.Read.All"]}
        ),
        "middle": world.add_app(
            "st-middle",
            multi_tenant=False,
            scopes=["access_as_user"],
            api_permissions={"downstream": ["Data.Read"]},
        ),
    }
    try:
        yield apps
    finally:
        for app in apps.values():
            world.remove_app(app.client_id)


def _ropc(authority: DevAuthority, client: App, user: str) -> dict[str, str]:
    found = authority.world.user(user)
    return {
        "grant_type": "password",
        "client_id": client.client_id,
        "username": found.username,
        "password": found.password,
        "scope": scope(authority, "original"),
    }


def test_a_single_tenant_daemon_gets_no_token_in_another_tenant(
    authority: DevAuthority, http: Http, single: dict[str, App]
) -> None:
    daemon = single["daemon"]
    form = {
        "grant_type": "client_credentials",
        "client_id": daemon.client_id,
        "client_secret": daemon.secrets[0],
        "scope": f"{authority.world.app('downstream').app_id_uri}/.default",
    }
    assert http.token(form, tenant=CONTOSO).status_code == 200
    body = assert_entra_error(
        http.token(form, tenant=FABRIKAM), status=400, error="unauthorized_client", code=700016
    )
    assert daemon.client_id in body["error_description"]
    assert FABRIKAM in body["error_description"]


def test_a_single_tenant_client_signs_in_only_its_own_tenants_users(
    authority: DevAuthority, http: Http, single: dict[str, App]
) -> None:
    cli = single["cli"]
    assert http.token(_ropc(authority, cli, "alice")).status_code == 200
    # carol is Fabrikam's: through Fabrikam's endpoint the app does not exist there...
    assert_entra_error(
        http.token(_ropc(authority, cli, "carol"), tenant=FABRIKAM),
        status=400,
        error="unauthorized_client",
        code=700016,
    )
    # ...and through the multi-tenant endpoints she is a stranger to the app's tenant.
    for path in ("organizations", "common", CONTOSO):
        body = assert_entra_error(
            http.token(_ropc(authority, cli, "carol"), tenant=path),
            status=400,
            error="invalid_grant",
            code=50020,
        )
        assert "carol@fabrikam.example" in body["error_description"]
    # A multi-tenant client (the demo's) still signs carol in.
    multi = authority.world.app("client")
    assert http.token(_ropc(authority, multi, "carol"), tenant=FABRIKAM).status_code == 200


def test_a_single_tenant_middle_tier_exchanges_only_its_tenants_users(
    authority: DevAuthority, http: Http, single: dict[str, App]
) -> None:
    middle = single["middle"]
    alice = authority.mint_user_token("alice", audience="st-middle")
    carol = authority.mint_user_token("carol", audience="st-middle")
    assert http.token(obo_form(authority, alice, client="st-middle")).status_code == 200
    assert_entra_error(
        http.token(obo_form(authority, carol, client="st-middle"), tenant="organizations"),
        status=400,
        error="invalid_grant",
        code=50020,
    )
    assert_entra_error(
        http.token(obo_form(authority, carol, client="st-middle"), tenant=FABRIKAM),
        status=400,
        error="unauthorized_client",
        code=700016,
    )
    assert middle.multi_tenant is False


def test_the_device_code_endpoint_and_page_check_tenancy(
    authority: DevAuthority, http: Http, single: dict[str, App]
) -> None:
    cli = single["cli"]
    form = {"client_id": cli.client_id, "scope": scope(authority, "original")}
    refused = http.post(f"{authority.authority_for(FABRIKAM)}/oauth2/v2.0/devicecode", data=form)
    assert_entra_error(refused, status=400, error="unauthorized_client", code=700016)
    started = http.post(f"{authority.base_url}/organizations/oauth2/v2.0/devicecode", data=form)
    assert started.status_code == 200, started.text
    carol = authority.world.user("carol")
    page = http.post(
        "/devicelogin",
        data={
            "code": started.json()["user_code"],
            "username": carol.username,
            "password": carol.password,
        },
    )
    assert page.status_code == 400
    assert "AADSTS50020" in page.text or "does not exist in tenant" in page.text


def test_the_authorization_endpoint_checks_tenancy(
    authority: DevAuthority, http: Http, single: dict[str, App]
) -> None:
    import base64
    import hashlib
    import urllib.parse

    from tests.devauthority.conftest import SignInPage

    cli = single["cli"]
    cli.redirect_uris = ("http://localhost",)
    verifier = "v" * 43
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode()
    query = {
        "client_id": cli.client_id,
        "response_type": "code",
        "redirect_uri": "http://localhost:5000",
        "scope": scope(authority, "original"),
        "code_challenge": challenge.rstrip("="),
        "code_challenge_method": "S256",
    }

    def url(tenant: str) -> str:
        base = f"{authority.base_url}/{tenant}/oauth2/v2.0/authorize"
        return f"{base}?{urllib.parse.urlencode(query)}"

    elsewhere = http.get(url(FABRIKAM), allow_redirects=False)
    assert elsewhere.status_code == 400 and "AADSTS700016" in elsewhere.text
    page = SignInPage(authority)
    try:
        page.open(url("organizations"))
        answer = page.submit(**page.credentials("carol"))
        assert answer.status_code == 400 and "AADSTS50020" in answer.text
        answer = page.submit(**page.credentials("alice"))
        assert answer.status_code == 302 and "code=" in answer.headers["Location"]
    finally:
        page.close()
