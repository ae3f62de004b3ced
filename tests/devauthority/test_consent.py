"""Missing consent at any hop, switched at run time through the public `World` API, is answered
as Entra answers it: `invalid_grant`, suberror `consent_required`, AADSTS65001, naming the app
that asked; giving consent back (or leaving `without_consent`) restores the hop."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from grpc_obo.devauthority import DevAuthority
from tests.devauthority.conftest import Http, Msal, assert_entra_error, obo_form, ropc_form, scope


@pytest.fixture(autouse=True)
def _restore_permissions(authority: DevAuthority) -> Iterator[None]:
    """The session's world is shared: put every app's grants back after each test."""
    apps = authority.world.apps
    before = [(dict(a.api_permissions), dict(a.pre_authorized)) for a in apps]
    yield
    for app, (permissions, pre_authorized) in zip(apps, before, strict=True):
        app.api_permissions, app.pre_authorized = permissions, pre_authorized


def _assert_consent_required(result: dict[str, Any], client_id: str) -> None:
    """MSAL's view of the refusal (it returns the error body for a 400)."""
    assert result.get("error") == "invalid_grant", result
    assert result["suberror"] == "consent_required"
    assert result["error_codes"] == [65001]
    assert f"application with ID '{client_id}'" in result["error_description"]


def _hop_token(authority: DevAuthority, msal_apps: Msal, hop: str) -> dict[str, Any]:
    """Attempt one hop of client -> original -> downstream -> pricing for alice."""
    if hop == "client->original":
        found = authority.world.user("alice")
        result: dict[str, Any] = msal_apps.public().acquire_token_by_username_password(
            found.username, found.password, scopes=[scope(authority, "original")]
        )
        return result
    if hop == "original->downstream":
        assertion, middle, api = authority.mint_user_token("alice"), "original", "downstream"
    else:
        assertion = authority.mint_user_token("alice", audience="downstream", client="original")
        middle, api = "downstream", "pricing"
    result = msal_apps.confidential(middle).acquire_token_on_behalf_of(
        assertion, [scope(authority, api)]
    )
    return result


HOPS = [
    ("client->original", "client", "original"),
    ("original->downstream", "original", "downstream"),
    ("downstream->pricing", "downstream", "pricing"),
]


class TestEveryHop:
    @pytest.mark.parametrize(("hop", "client", "api"), HOPS)
    def test_revoked_consent_is_consent_required_until_granted_again(
        self, authority: DevAuthority, msal_apps: Msal, hop: str, client: str, api: str
    ) -> None:
        assert "access_token" in _hop_token(authority, msal_apps, hop)

        authority.world.revoke_consent(client, api)
        _assert_consent_required(
            _hop_token(authority, msal_apps, hop), authority.world.app(client).client_id
        )

        authority.world.grant_consent(client, api, [scope(authority, api).rsplit("/", 1)[1]])
        assert "access_token" in _hop_token(authority, msal_apps, hop)

    @pytest.mark.parametrize(("hop", "client", "api"), HOPS)
    def test_without_consent_restores_exactly_what_was_held(
        self, authority: DevAuthority, msal_apps: Msal, hop: str, client: str, api: str
    ) -> None:
        client_app, api_app = authority.world.app(client), authority.world.app(api)
        held = (
            dict(client_app.api_permissions),
            dict(api_app.pre_authorized),
        )
        with authority.world.without_consent(client, api):
            _assert_consent_required(_hop_token(authority, msal_apps, hop), client_app.client_id)
        assert (dict(client_app.api_permissions), dict(api_app.pre_authorized)) == held
        assert "access_token" in _hop_token(authority, msal_apps, hop)


class TestRawAnswers:
    def test_sign_in_without_consent(self, authority: DevAuthority, http: Http) -> None:
        # `client` holds access_as_user twice (consent and pre-authorization): both go.
        with authority.world.without_consent("client", "original"):
            body = assert_entra_error(
                http.token(ropc_form(authority)),
                status=400,
                error="invalid_grant",
                code=65001,
                suberror="consent_required",
            )
        client = authority.world.app("client")
        assert f"with ID '{client.client_id}' named 'client'" in body["error_description"]
        assert authority.requests.count(grant="password", status=400) == 1

    def test_obo_without_consent(self, authority: DevAuthority, http: Http) -> None:
        with authority.world.without_consent("original", "downstream", ["Data.Read"]):
            assert_entra_error(
                http.token(obo_form(authority, authority.mint_user_token("alice"))),
                status=400,
                error="invalid_grant",
                code=65001,
                suberror="consent_required",
            )

    def test_default_scope_with_nothing_consented(
        self, authority: DevAuthority, http: Http
    ) -> None:
        downstream = authority.world.app("downstream")
        form = obo_form(
            authority,
            authority.mint_user_token("alice"),
            scope=f"{downstream.app_id_uri}/.default",
        )
        with authority.world.without_consent("original", "downstream"):
            assert_entra_error(
                http.token(form),
                status=400,
                error="invalid_grant",
                code=65001,
                suberror="consent_required",
            )

    def test_refresh_after_consent_is_revoked(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        refresh_token = msal_apps.sign_in("alice")["refresh_token"]
        authority.world.revoke_consent("client", "original")
        response = http.token(
            {
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": authority.world.app("client").client_id,
                "scope": scope(authority, "original"),
            }
        )
        assert_entra_error(
            response, status=400, error="invalid_grant", code=65001, suberror="consent_required"
        )


class TestPartialConsent:
    def test_revoking_one_scope_keeps_the_others(self, authority: DevAuthority, http: Http) -> None:
        authority.world.grant_consent("original", "downstream", ["Data.Write"])
        authority.world.revoke_consent("original", "downstream", ["Data.Read"])
        downstream = authority.world.app("downstream")
        assert authority.world.app("original").api_permissions[downstream.client_id] == {
            "Data.Write"
        }
        token = authority.mint_user_token("alice")
        refused = http.token(obo_form(authority, token))
        assert_entra_error(refused, status=400, error="invalid_grant", code=65001)
        allowed = http.token(
            obo_form(authority, token, scope=scope(authority, "downstream", "Data.Write"))
        )
        assert allowed.status_code == 200, allowed.text

    def test_grant_adds_to_what_is_held(self, authority: DevAuthority) -> None:
        authority.world.grant_consent("original", "downstream", "Data.Write")
        downstream = authority.world.app("downstream")
        assert authority.world.app("original").api_permissions[downstream.client_id] == {
            "Data.Read",
            "Data.Write",
        }


class TestMisuse:
    def test_unknown_scope_or_app_is_refused(self, authority: DevAuthority) -> None:
        world = authority.world
        with pytest.raises(ValueError, match=r"Data\.Delete"):
            world.grant_consent("original", "downstream", ["Data.Delete"])
        with pytest.raises(ValueError, match=r"Data\.Delete"):
            world.revoke_consent("original", "downstream", ["Data.Delete"])
        with pytest.raises(ValueError, match="no scope"):
            world.grant_consent("original", "downstream", [])
        with pytest.raises(KeyError):
            world.revoke_consent("original", "nowhere")
        with pytest.raises(KeyError), world.without_consent("nobody", "downstream"):
            pass
