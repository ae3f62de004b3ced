"""The OBO grant really checks the assertion, the client and the scopes: each refusal carries
Entra's error, AADSTS code and HTTP status."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from grpc_obo.devauthority import ClientCertificate, DevAuthority
from tests.devauthority.conftest import Http, Msal, assert_entra_error, obo_form, scope

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture(scope="module")
def stranger_key() -> rsa.RSAPrivateKey:
    """An RSA key the authority has never seen."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _refused_obo(http: Http, form: dict[str, str], code: int, status: int = 400) -> dict[str, Any]:
    response = http.token(form)
    error = {400: "invalid_grant", 401: "invalid_client"}[status]
    return assert_entra_error(response, status=status, error=error, code=code)


class TestForgedAssertions:
    def test_signed_by_another_key_with_the_authoritys_kid(
        self, authority: DevAuthority, http: Http, stranger_key: rsa.RSAPrivateKey
    ) -> None:
        genuine = authority.mint_user_token("alice")
        claims = jwt.decode(genuine, options={"verify_signature": False})
        forged = jwt.encode(
            claims, stranger_key, algorithm="RS256", headers=jwt.get_unverified_header(genuine)
        )
        _refused_obo(http, obo_form(authority, forged), 50013)

    def test_signed_by_another_key_with_an_unknown_kid(
        self, authority: DevAuthority, http: Http, stranger_key: rsa.RSAPrivateKey
    ) -> None:
        claims = jwt.decode(authority.mint_user_token("alice"), options={"verify_signature": False})
        forged = jwt.encode(claims, stranger_key, algorithm="RS256", headers={"kid": "forged"})
        _refused_obo(http, obo_form(authority, forged), 50013)

    def test_tampered_payload(self, authority: DevAuthority, http: Http) -> None:
        header, payload, signature = authority.mint_user_token("alice").split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["oid"] = authority.world.user("bob").oid  # become bob
        tampered = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
        _refused_obo(http, obo_form(authority, tampered), 50013)

    def test_unsigned_token_with_the_authoritys_kid(
        self, authority: DevAuthority, http: Http
    ) -> None:
        genuine = authority.mint_user_token("alice")
        claims = jwt.decode(genuine, options={"verify_signature": False})
        kid = jwt.get_unverified_header(genuine)["kid"]
        unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": kid})
        _refused_obo(http, obo_form(authority, unsigned), 50027)

    def test_msal_surfaces_the_refusal(
        self, authority: DevAuthority, msal_apps: Msal, stranger_key: rsa.RSAPrivateKey
    ) -> None:
        genuine = authority.mint_user_token("alice")
        claims = jwt.decode(genuine, options={"verify_signature": False})
        forged = jwt.encode(
            claims, stranger_key, algorithm="RS256", headers=jwt.get_unverified_header(genuine)
        )
        result = msal_apps.confidential("original").acquire_token_on_behalf_of(
            forged, scopes=[scope(authority, "downstream")]
        )
        assert result["error"] == "invalid_grant"
        assert result["error_codes"] == [50013]
        assert "access_token" not in result


class TestInvalidAssertions:
    def test_expired(self, authority: DevAuthority, http: Http) -> None:
        expired = authority.mint_user_token("alice", lifetime=-3600)
        body = _refused_obo(http, obo_form(authority, expired), 500133)
        assert "valid time range" in body["error_description"]

    def test_not_yet_valid(self, authority: DevAuthority, http: Http) -> None:
        future = authority.mint_user_token("alice", claims={"nbf": int(time.time()) + 3600})
        _refused_obo(http, obo_form(authority, future), 500133)

    def test_wrong_audience(self, authority: DevAuthority, http: Http) -> None:
        # A token for Downstream presented by Original (who is not its audience).
        for_downstream = authority.mint_user_token("alice", audience="downstream")
        body = _refused_obo(http, obo_form(authority, for_downstream), 50013)
        assert "audience" in body["error_description"]

    def test_wrong_issuer(self, authority: DevAuthority, http: Http) -> None:
        token = authority.mint_user_token(
            "alice", claims={"iss": f"https://login.microsoftonline.com/{authority.tenant_id}/v2.0"}
        )
        _refused_obo(http, obo_form(authority, token), 50013)

    def test_unknown_user(self, authority: DevAuthority, http: Http) -> None:
        ghost = authority.mint_user_token("alice", claims={"oid": str(uuid.uuid4())})
        _refused_obo(http, obo_form(authority, ghost), 50034)

    def test_user_of_another_tenant_than_the_token_says(
        self, authority: DevAuthority, http: Http
    ) -> None:
        carol = authority.world.user("carol")  # lives in Fabrikam; the token claims Contoso
        token = authority.mint_user_token("alice", claims={"oid": carol.oid})
        _refused_obo(http, obo_form(authority, token), 50034)

    def test_app_only_assertion(self, authority: DevAuthority, http: Http) -> None:
        app_token = authority.mint_app_token("daemon", audience="original")
        body = _refused_obo(http, obo_form(authority, app_token), 50013)
        assert "app-only" in body["error_description"]

    def test_id_token_like_assertion_without_scp(self, authority: DevAuthority, http: Http) -> None:
        token = authority.mint_user_token("alice", claims={"scp": None})
        _refused_obo(http, obo_form(authority, token), 50013)

    def test_genuine_assertion_is_accepted(self, authority: DevAuthority, http: Http) -> None:
        """The control: the same request with an untouched token succeeds."""
        response = http.token(obo_form(authority, authority.mint_user_token("alice")))
        assert response.status_code == 200, response.text


class TestUnauthorizedClients:
    def test_unknown_client_id(self, authority: DevAuthority, http: Http) -> None:
        form = obo_form(authority, authority.mint_user_token("alice"), client_id=str(uuid.uuid4()))
        assert_entra_error(http.token(form), status=400, error="unauthorized_client", code=700016)

    def test_app_name_is_not_a_client_id(self, authority: DevAuthority, http: Http) -> None:
        form = obo_form(authority, authority.mint_user_token("alice"), client_id="original")
        assert_entra_error(http.token(form), status=400, error="unauthorized_client", code=700016)

    def test_wrong_secret(self, authority: DevAuthority, http: Http) -> None:
        form = obo_form(authority, authority.mint_user_token("alice"), client_secret="dev-wrong")
        _refused_obo(http, form, 7000215, status=401)

    def test_another_apps_secret(self, authority: DevAuthority, http: Http) -> None:
        other = authority.world.app("downstream").secrets[0]
        form = obo_form(authority, authority.mint_user_token("alice"), client_secret=other)
        _refused_obo(http, form, 7000215, status=401)

    def test_no_credential(self, authority: DevAuthority, http: Http) -> None:
        form = obo_form(authority, authority.mint_user_token("alice"))
        del form["client_secret"]
        _refused_obo(http, form, 7000218, status=401)

    def test_public_client_cannot_do_obo(self, authority: DevAuthority, http: Http) -> None:
        token = authority.mint_user_token("alice", audience="original")
        form = obo_form(authority, token, client="client")
        _refused_obo(http, form, 7000218, status=401)

    def test_public_client_must_not_send_a_secret(
        self, authority: DevAuthority, http: Http
    ) -> None:
        form = obo_form(authority, authority.mint_user_token("alice"), client="client")
        form["client_secret"] = "anything"
        assert_entra_error(http.token(form), status=400, error="invalid_request", code=700025)

    def test_msal_with_wrong_secret(self, authority: DevAuthority, msal_apps: Msal) -> None:
        app = msal_apps.confidential("original", credential="dev-not-the-secret")
        result = app.acquire_token_on_behalf_of(
            authority.mint_user_token("alice"), scopes=[scope(authority, "downstream")]
        )
        assert result["error"] == "invalid_client"
        assert result["error_codes"] == [7000215]


class TestScopes:
    def test_unconsented_scope(self, authority: DevAuthority, http: Http) -> None:
        # Original holds Data.Read on Downstream, not Data.Write.
        form = obo_form(
            authority,
            authority.mint_user_token("alice"),
            scope=scope(authority, "downstream", "Data.Write"),
        )
        assert_entra_error(
            http.token(form),
            status=400,
            error="invalid_grant",
            code=65001,
            suberror="consent_required",
        )

    def test_unconsented_scope_through_msal(self, authority: DevAuthority, msal_apps: Msal) -> None:
        result = msal_apps.confidential("original").acquire_token_on_behalf_of(
            authority.mint_user_token("alice"),
            scopes=[scope(authority, "downstream", "Data.Write")],
        )
        assert (result["error"], result["error_codes"]) == ("invalid_grant", [65001])
        assert result["suberror"] == "consent_required"

    def test_unknown_scope(self, authority: DevAuthority, http: Http) -> None:
        form = obo_form(
            authority,
            authority.mint_user_token("alice"),
            scope=scope(authority, "downstream", "Data.Delete"),
        )
        assert_entra_error(http.token(form), status=400, error="invalid_scope", code=70011)

    def test_unknown_resource(self, authority: DevAuthority, http: Http) -> None:
        form = obo_form(
            authority, authority.mint_user_token("alice"), scope=f"api://{uuid.uuid4()}/Data.Read"
        )
        assert_entra_error(http.token(form), status=400, error="invalid_resource", code=500011)

    def test_two_resources_in_one_request(self, authority: DevAuthority, http: Http) -> None:
        both = f"{scope(authority, 'downstream')} {scope(authority, 'original')}"
        form = obo_form(authority, authority.mint_user_token("alice"), scope=both)
        assert_entra_error(http.token(form), status=400, error="invalid_scope", code=28000)

    def test_default_scope_grants_what_is_consented(
        self, authority: DevAuthority, http: Http
    ) -> None:
        downstream = authority.world.app("downstream")
        form = obo_form(
            authority, authority.mint_user_token("alice"), scope=f"{downstream.app_id_uri}/.default"
        )
        response = http.token(form)
        assert response.status_code == 200, response.text
        claims = http.verify(response.json()["access_token"], audience=downstream.client_id)
        assert claims["scp"] == "Data.Read"

    def test_consent_granted_at_run_time_takes_effect(
        self, authority: DevAuthority, http: Http
    ) -> None:
        original, downstream = authority.world.app("original"), authority.world.app("downstream")
        before = dict(original.api_permissions)
        original.api_permissions[downstream.client_id] = frozenset({"Data.Read", "Data.Write"})
        try:
            form = obo_form(
                authority,
                authority.mint_user_token("alice"),
                scope=scope(authority, "downstream", "Data.Write"),
            )
            response = http.token(form)
        finally:
            original.api_permissions = before
        assert response.status_code == 200, response.text
        claims = http.verify(response.json()["access_token"], audience=downstream.client_id)
        assert claims["scp"] == "Data.Write"

    def test_client_credentials_need_a_default_scope(
        self, authority: DevAuthority, http: Http
    ) -> None:
        daemon = authority.world.app("daemon")
        form = {
            "grant_type": "client_credentials",
            "client_id": daemon.client_id,
            "client_secret": daemon.secrets[0],
            "scope": scope(authority, "downstream"),
        }
        assert_entra_error(http.token(form), status=400, error="invalid_scope", code=1002012)

    def test_client_credentials_need_a_tenant(self, authority: DevAuthority, http: Http) -> None:
        daemon = authority.world.app("daemon")
        form = {
            "grant_type": "client_credentials",
            "client_id": daemon.client_id,
            "client_secret": daemon.secrets[0],
            "scope": f"{authority.world.app('downstream').app_id_uri}/.default",
        }
        response = http.token(form, tenant="common")
        assert_entra_error(response, status=400, error="invalid_request", code=1002013)


class TestClientAssertions:
    """Certificate client authentication refuses anything but a valid assertion by a known cert."""

    @staticmethod
    def _assertion(
        authority: DevAuthority,
        *,
        certificate: ClientCertificate | None = None,
        signing_key: Any = None,
        claims: dict[str, Any] | None = None,
        alg: str = "RS256",
    ) -> str:
        cert = certificate or authority.world.app("daemon").certificates[0]
        assert cert.private_key_pem is not None
        key = signing_key or load_pem_private_key(cert.private_key_pem, None)
        now = int(time.time())
        daemon = authority.world.app("daemon").client_id
        body = {
            "aud": authority.token_url,
            "iss": daemon,
            "sub": daemon,
            "jti": str(uuid.uuid4()),
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            **(claims or {}),
        }
        header = {"x5t": _b64(cert.thumbprint_sha1)}
        return jwt.encode(body, key, algorithm=alg, headers=header)

    @staticmethod
    def _form(authority: DevAuthority, assertion: str, **extra: str) -> dict[str, str]:
        return {
            "grant_type": "client_credentials",
            "client_id": authority.world.app("daemon").client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": f"{authority.world.app('downstream').app_id_uri}/.default",
            **extra,
        }

    def test_valid_hand_made_assertion_is_accepted(
        self, authority: DevAuthority, http: Http
    ) -> None:
        response = http.token(self._form(authority, self._assertion(authority)))
        assert response.status_code == 200, response.text

    @pytest.mark.parametrize(
        "case",
        [
            "unregistered certificate",
            "right thumbprint, other key",
            "wrong audience",
            "expired",
            "issuer is another app",
            "HS256",
            "garbage",
        ],
    )
    def test_invalid_assertion_is_refused(
        self,
        authority: DevAuthority,
        http: Http,
        stranger_key: rsa.RSAPrivateKey,
        unregistered_certificate: ClientCertificate,
        case: str,
    ) -> None:
        other = authority.world.app("original").client_id
        assertion = {
            "unregistered certificate": lambda: self._assertion(
                authority, certificate=unregistered_certificate
            ),
            "right thumbprint, other key": lambda: self._assertion(
                authority, signing_key=stranger_key
            ),
            "wrong audience": lambda: self._assertion(
                authority, claims={"aud": "https://example.com/token"}
            ),
            "expired": lambda: self._assertion(authority, claims={"exp": int(time.time()) - 3600}),
            "issuer is another app": lambda: self._assertion(
                authority, claims={"iss": other, "sub": other}
            ),
            "HS256": lambda: jwt.encode(
                {"iss": "x"}, "a-shared-secret-of-enough-length-32b", algorithm="HS256"
            ),
            "garbage": lambda: "not.a.jwt",
        }[case]()
        response = http.token(self._form(authority, assertion))
        assert_entra_error(response, status=401, error="invalid_client", code=700027)

    def test_wrong_assertion_type(self, authority: DevAuthority, http: Http) -> None:
        form = self._form(authority, self._assertion(authority), client_assertion_type="bearer")
        assert_entra_error(http.token(form), status=400, error="invalid_request", code=50027)


@pytest.fixture(scope="module")
def unregistered_certificate() -> ClientCertificate:
    return ClientCertificate.generate("stranger")
