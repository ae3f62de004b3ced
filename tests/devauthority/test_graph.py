"""Microsoft Graph is a resource like any other: App ID URI `https://graph.microsoft.com` (the
prefixed and the unprefixed spelling name the same scopes), and only its basic delegated scopes
(`User.Read`, with openid, profile, email, offline_access) come without a consent grant."""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest

from grpc_obo.devauthority import GRAPH_APP_ID, DevAuthority, load_world
from tests.devauthority.conftest import Http, assert_entra_error, obo_form, ropc_form

GRAPH = "https://graph.microsoft.com"


@pytest.fixture(autouse=True)
def _graph_consents_restored(authority: DevAuthority) -> Iterator[None]:
    held = {a.name: dict(a.api_permissions) for a in authority.world.apps}
    yield
    for app in authority.world.apps:
        app.api_permissions = held.get(app.name, app.api_permissions)


def _claims(token: str) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(token, options={"verify_signature": False})
    return claims


@pytest.mark.parametrize("spelling", ["User.Read", f"{GRAPH}/User.Read", f"{GRAPH}//User.Read"])
def test_user_read_needs_no_consent_in_either_spelling(
    authority: DevAuthority, http: Http, spelling: str
) -> None:
    response = http.token(ropc_form(authority, scope=f"{spelling} openid offline_access"))
    assert response.status_code == 200, response.text
    body = response.json()
    token = body["access_token"]
    assert _claims(token)["aud"] == GRAPH_APP_ID
    assert _claims(token)["scp"] == "User.Read"
    assert "nonce" in jwt.get_unverified_header(token)
    # Refreshing keeps the resource and the spelling the client used.
    refreshed = http.token(
        {
            "grant_type": "refresh_token",
            "client_id": authority.world.app("client").client_id,
            "refresh_token": body["refresh_token"],
        }
    )
    assert refreshed.status_code == 200, refreshed.text
    assert _claims(refreshed.json()["access_token"])["aud"] == GRAPH_APP_ID


@pytest.mark.parametrize(
    "wanted", ["Directory.ReadWrite.All", "Mail.Send", f"{GRAPH}/Files.ReadWrite.All"]
)
def test_other_graph_scopes_need_consent_by_password_and_on_behalf_of(
    authority: DevAuthority, http: Http, wanted: str
) -> None:
    assert_entra_error(
        http.token(ropc_form(authority, scope=wanted)),
        status=400,
        error="invalid_grant",
        code=65001,
        suberror="consent_required",
    )
    assertion = authority.mint_user_token("alice")
    assert_entra_error(
        http.token(obo_form(authority, assertion, scope=wanted)),
        status=400,
        error="invalid_grant",
        code=65001,
        suberror="consent_required",
    )
    authority.world.grant_consent("original", "graph", [wanted.rsplit("/", 1)[-1]])
    granted = http.token(obo_form(authority, assertion, scope=wanted))
    assert granted.status_code == 200, granted.text
    assert _claims(granted.json()["access_token"])["scp"] == wanted.rsplit("/", 1)[-1]


def test_graph_default_scope_and_unknown_scopes(authority: DevAuthority, http: Http) -> None:
    assertion = authority.mint_user_token("alice")
    default = http.token(obo_form(authority, assertion, scope=f"{GRAPH}/.default"))
    assert default.status_code == 200, default.text
    assert _claims(default.json()["access_token"])["scp"] == "User.Read"
    assert_entra_error(
        http.token(obo_form(authority, assertion, scope=f"{GRAPH}/Nothing.Such")),
        status=400,
        error="invalid_scope",
        code=70011,
    )


def test_a_daemon_gets_graph_app_roles_only_when_assigned(
    authority: DevAuthority, http: Http
) -> None:
    daemon = authority.world.add_app("graph-daemon", app_role_assignments={"graph": ["Mail.Send"]})
    try:
        response = http.token(
            {
                "grant_type": "client_credentials",
                "client_id": daemon.client_id,
                "client_secret": daemon.secrets[0],
                "scope": f"{GRAPH}/.default",
            }
        )
        assert response.status_code == 200, response.text
        claims = _claims(response.json()["access_token"])
        assert claims["aud"] == GRAPH_APP_ID and claims["roles"] == ["Mail.Send"]
    finally:
        authority.world.remove_app(daemon.client_id)


def test_world_files_consent_to_graph_by_name(tmp_path: object) -> None:
    from pathlib import Path

    file = Path(str(tmp_path)) / "world.toml"
    file.write_text('[apps.mailer]\napi_permissions = { graph = ["Mail.Send"] }\n')
    world = load_world(file)
    assert world.app("mailer").api_permissions == {GRAPH_APP_ID: frozenset({"Mail.Send"})}
    assert [a.name for a in world.apps] == ["mailer"]  # Graph is not one of the world's apps
    assert world.resource_app(GRAPH) is world.graph
