"""Tokens are shaped like Entra's (v2 and v1) and verify against the JWKS the discovery
documents point to; discovery is Entra-shaped per tenant and for `common`/`organizations`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import jwt
import pytest

from grpc_obo.devauthority import CONTOSO, FABRIKAM, GRAPH_APP_ID, DevAuthority
from tests.devauthority.conftest import Http, Msal, assert_entra_error, obo_form, scope

V2_USER_CLAIMS = {
    *("aud", "iss", "iat", "nbf", "exp", "aio", "rh", "tid", "uti", "ver", "azp", "azpacr"),
    *("oid", "sub", "name", "scp", "amr", "preferred_username"),
}


class TestV2AccessTokens:
    def test_user_token_has_the_v2_claim_set(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        token = msal_apps.sign_in("alice")["access_token"]
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "RS256"
        assert header["typ"] == "JWT"
        assert header["kid"] == authority.keys.signing_key.kid
        assert "nonce" not in header

        claims = http.verify(token, audience=authority.world.app("original").client_id)

        assert set(claims) == V2_USER_CLAIMS
        assert claims["ver"] == "2.0"
        assert claims["iss"] == f"{authority.base_url}/{CONTOSO}/v2.0"
        assert claims["nbf"] == claims["iat"]
        assert claims["exp"] - claims["iat"] == 3600
        assert claims["name"] == "Alice Example"
        assert claims["preferred_username"] == "alice@contoso.example"
        assert claims["amr"] == ["pwd"]
        uuid.UUID(claims["aud"])  # a GUID, not the App ID URI

    def test_each_token_has_its_own_uti(self, authority: DevAuthority) -> None:
        first, second = (
            jwt.decode(authority.mint_user_token("alice"), options={"verify_signature": False})
            for _ in range(2)
        )
        assert first["uti"] != second["uti"]

    def test_sub_is_pairwise_per_app_and_stable(self, authority: DevAuthority) -> None:
        def sub(user: str, audience: str) -> str:
            token = authority.mint_user_token(user, audience=audience)
            value: str = jwt.decode(token, options={"verify_signature": False})["sub"]
            return value

        assert sub("alice", "original") == sub("alice", "original")
        assert sub("alice", "original") != sub("alice", "downstream")
        assert sub("alice", "original") != sub("bob", "original")
        assert sub("alice", "original") != authority.world.user("alice").oid

    def test_obo_token_keeps_the_user_and_names_the_middle_tier(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        incoming = msal_apps.sign_in("bob")["access_token"]
        response = http.token(obo_form(authority, incoming))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["token_type"] == "Bearer"
        assert body["scope"] == scope(authority, "downstream")
        assert "refresh_token" not in body and "id_token" not in body

        before = http.verify(incoming, audience=authority.world.app("original").client_id)
        after = http.verify(
            body["access_token"], audience=authority.world.app("downstream").client_id
        )
        assert set(after) == V2_USER_CLAIMS
        assert (after["oid"], after["tid"]) == (before["oid"], before["tid"])
        assert after["azp"] == authority.world.app("original").client_id
        assert after["azpacr"] == "1"
        assert after["scp"] == "Data.Read"
        assert after["sub"] != before["sub"]

    def test_app_token_has_roles_and_idtyp(self, authority: DevAuthority, http: Http) -> None:
        daemon, downstream = authority.world.app("daemon"), authority.world.app("downstream")
        response = http.token(
            {
                "grant_type": "client_credentials",
                "client_id": daemon.client_id,
                "client_secret": daemon.secrets[0],
                "scope": f"{downstream.app_id_uri}/.default",
            }
        )
        assert response.status_code == 200, response.text
        claims = http.verify(response.json()["access_token"], audience=downstream.client_id)
        assert claims["idtyp"] == "app"
        assert claims["roles"] == ["Data.Read.All"]
        for user_claim in ("scp", "name", "preferred_username", "amr"):
            assert user_claim not in claims
        assert "refresh_token" not in response.json()

    def test_client_capabilities_become_xms_cc(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        alice = authority.world.user("alice")
        public = msal_apps.public(client_capabilities=["cp1"])
        signed_in = public.acquire_token_by_username_password(
            alice.username, alice.password, scopes=[scope(authority, "original")]
        )
        token = signed_in["access_token"]
        claims = http.verify(token, audience=authority.world.app("original").client_id)
        assert claims["xms_cc"] == ["cp1"]

        middle = msal_apps.confidential("original", client_capabilities=["cp1"])
        exchanged = middle.acquire_token_on_behalf_of(token, [scope(authority, "downstream")])
        claims = http.verify(
            exchanged["access_token"], audience=authority.world.app("downstream").client_id
        )
        assert claims["xms_cc"] == ["cp1"]

        plain = msal_apps.confidential("original")
        exchanged = plain.acquire_token_on_behalf_of(token, [scope(authority, "downstream")])
        claims = http.verify(
            exchanged["access_token"], audience=authority.world.app("downstream").client_id
        )
        assert "xms_cc" not in claims

    def test_id_token(self, authority: DevAuthority, http: Http) -> None:
        body = http.token(
            {
                "grant_type": "password",
                "client_id": authority.world.app("client").client_id,
                "username": "alice@contoso.example",
                "password": authority.world.user("alice").password,
                "scope": f"{scope(authority, 'original')} openid profile",
            }
        ).json()
        claims = http.verify(body["id_token"], audience=authority.world.app("client").client_id)
        assert claims["oid"] == authority.world.user("alice").oid
        assert "scp" not in claims
        assert body["scope"] == f"{scope(authority, 'original')} openid profile"

    def test_openid_only_sign_in_gets_a_graph_token_with_a_nonce_header(
        self, authority: DevAuthority, http: Http
    ) -> None:
        body = http.token(
            {
                "grant_type": "password",
                "client_id": authority.world.app("client").client_id,
                "username": "alice@contoso.example",
                "password": authority.world.user("alice").password,
                "scope": "openid profile",
            }
        ).json()
        token = body["access_token"]
        assert "nonce" in jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["aud"] == GRAPH_APP_ID
        assert claims["ver"] == "1.0"


@pytest.fixture
def downstream_on_v1(authority: DevAuthority) -> Iterator[None]:
    """Downstream's registration asks for v1 tokens (`accessTokenAcceptedVersion: 1`)."""
    downstream = authority.world.app("downstream")
    downstream.access_token_version = 1
    try:
        yield
    finally:
        downstream.access_token_version = 2


class TestV1AccessTokens:
    def _verify_v1(self, http: Http, token: str, audience: str) -> dict[str, object]:
        return http.verify(token, audience=audience, issuer=http.authority.issuer(1))

    def test_minted_on_request(self, authority: DevAuthority, http: Http) -> None:
        token = authority.mint_user_token("alice", version=1)
        claims = self._verify_v1(http, token, authority.world.app("original").client_id)
        assert claims["ver"] == "1.0"
        assert claims["iss"] == f"{authority.base_url}/{CONTOSO}/"
        assert claims["appid"] == authority.world.app("client").client_id
        assert claims["appidacr"] == "0"
        assert claims["upn"] == claims["unique_name"] == "alice@contoso.example"
        for v2_only in ("azp", "azpacr", "preferred_username"):
            assert v2_only not in claims

    @pytest.mark.usefixtures("downstream_on_v1")
    def test_api_registered_for_v1_gets_v1_tokens_from_obo(
        self, authority: DevAuthority, http: Http
    ) -> None:
        response = http.token(obo_form(authority, authority.mint_user_token("alice")))
        assert response.status_code == 200, response.text
        claims = self._verify_v1(
            http, response.json()["access_token"], authority.world.app("downstream").client_id
        )
        assert claims["ver"] == "1.0"
        assert claims["appid"] == authority.world.app("original").client_id
        assert claims["appidacr"] == "1"
        assert claims["oid"] == authority.world.user("alice").oid

    @pytest.mark.usefixtures("downstream_on_v1")
    def test_v1_app_token_from_client_credentials(
        self, authority: DevAuthority, http: Http
    ) -> None:
        daemon, downstream = authority.world.app("daemon"), authority.world.app("downstream")
        response = http.token(
            {
                "grant_type": "client_credentials",
                "client_id": daemon.client_id,
                "client_secret": daemon.secrets[0],
                "scope": f"{downstream.app_id_uri}/.default",
            }
        )
        claims = self._verify_v1(http, response.json()["access_token"], downstream.client_id)
        assert (claims["ver"], claims["idtyp"], claims["appid"]) == ("1.0", "app", daemon.client_id)

    def test_v1_assertion_is_accepted_for_obo(self, authority: DevAuthority, http: Http) -> None:
        v1 = authority.mint_user_token("alice", version=1)
        response = http.token(obo_form(authority, v1))
        assert response.status_code == 200, response.text


class TestDiscovery:
    def test_v2_document_for_the_home_tenant(self, authority: DevAuthority, http: Http) -> None:
        document = http.get(f"/{CONTOSO}/v2.0/.well-known/openid-configuration").json()
        base = authority.base_url
        assert document["issuer"] == f"{base}/{CONTOSO}/v2.0" == authority.issuer(2)
        assert document["jwks_uri"] == f"{base}/{CONTOSO}/discovery/v2.0/keys"
        assert document["token_endpoint"] == f"{base}/{CONTOSO}/oauth2/v2.0/token"
        assert document["authorization_endpoint"].startswith("https://")
        assert document["id_token_signing_alg_values_supported"] == ["RS256"]

    def test_v1_document_for_the_home_tenant(self, authority: DevAuthority, http: Http) -> None:
        document = http.get(f"/{CONTOSO}/.well-known/openid-configuration").json()
        base = authority.base_url
        assert document["issuer"] == f"{base}/{CONTOSO}/" == authority.issuer(1)
        assert document["jwks_uri"] == f"{base}/{CONTOSO}/discovery/keys"
        assert document["token_endpoint"] == f"{base}/{CONTOSO}/oauth2/token"

    def test_second_tenant_has_its_own_issuer(self, authority: DevAuthority, http: Http) -> None:
        document = http.get(f"/{FABRIKAM}/v2.0/.well-known/openid-configuration").json()
        assert document["issuer"] == f"{authority.base_url}/{FABRIKAM}/v2.0"

    @pytest.mark.parametrize("segment", ["common", "organizations"])
    def test_multi_tenant_documents_have_the_tenantid_template(
        self, authority: DevAuthority, http: Http, segment: str
    ) -> None:
        base = authority.base_url
        v2 = http.get(f"/{segment}/v2.0/.well-known/openid-configuration").json()
        v1 = http.get(f"/{segment}/.well-known/openid-configuration").json()
        assert v2["issuer"] == f"{base}/{{tenantid}}/v2.0"
        assert v1["issuer"] == f"{base}/{{tenantid}}/"
        assert v2["jwks_uri"] == f"{base}/{segment}/discovery/v2.0/keys"

    @pytest.mark.parametrize(
        "path", ["/v2.0/.well-known/openid-configuration", "/discovery/v2.0/keys"]
    )
    @pytest.mark.parametrize("tenant", [str(uuid.uuid4()), "not-a-tenant"])
    def test_unknown_tenant_is_a_json_400(self, http: Http, tenant: str, path: str) -> None:
        response = http.get(f"/{tenant}{path}")
        assert_entra_error(response, status=400, error="invalid_tenant", code=90002)

    def test_unknown_tenant_at_the_token_endpoint(
        self, authority: DevAuthority, http: Http
    ) -> None:
        daemon = authority.world.app("daemon")
        response = http.token(
            {"grant_type": "client_credentials", "client_id": daemon.client_id},
            tenant=str(uuid.uuid4()),
        )
        assert_entra_error(response, status=400, error="invalid_request", code=90002)

    @pytest.mark.parametrize("version", [1, 2])
    def test_jwks_serves_the_keys_with_the_issuer_template(
        self, authority: DevAuthority, http: Http, version: int
    ) -> None:
        path = "discovery/v2.0/keys" if version == 2 else "discovery/keys"
        keys = http.get(f"/{CONTOSO}/{path}").json()["keys"]
        assert [k["kid"] for k in keys] == authority.keys.published_kids
        for key in keys:
            assert {"kty", "use", "kid", "x5t", "n", "e", "x5c", "issuer"} <= set(key)
            assert (key["kty"], key["use"]) == ("RSA", "sig")
            suffix = "v2.0" if version == 2 else ""
            assert key["issuer"] == f"{authority.base_url}/{{tenantid}}/{suffix}"
        assert keys == authority.jwks(version=version)["keys"]

    def test_discovery_jwks_uri_verifies_tokens(self, authority: DevAuthority, http: Http) -> None:
        """A resource that starts from discovery only can verify what the authority issues."""
        document = http.get(authority.discovery_url).json()
        key_set = jwt.PyJWKSet.from_dict(http.get(document["jwks_uri"]).json())
        token = authority.mint_user_token("alice")
        kid = jwt.get_unverified_header(token)["kid"]
        claims = jwt.decode(
            token,
            key_set[kid].key,
            algorithms=["RS256"],
            audience=authority.world.app("original").client_id,
            issuer=document["issuer"],
        )
        assert claims["oid"] == authority.world.user("alice").oid

    def test_user_of_the_second_tenant_signs_in_there(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        carol = authority.world.user("carol")
        app = msal_apps.public(authority_url=authority.authority_for(FABRIKAM))
        result = app.acquire_token_by_username_password(
            carol.username, carol.password, scopes=[scope(authority, "original")]
        )
        assert "access_token" in result, result
        claims = http.verify(
            result["access_token"],
            audience=authority.world.app("original").client_id,
            issuer=authority.issuer(2, FABRIKAM),
        )
        assert (claims["tid"], claims["oid"]) == (FABRIKAM, carol.oid)
