"""Bad input of every kind gets an Entra-shaped JSON error with the right status: never a stack
trace, never a hang (every call has a timeout). Also: the error body's shape and Basic auth."""

from __future__ import annotations

import base64
import json
import re
import uuid

import pytest

from grpc_obo.devauthority import DevAuthority
from tests.devauthority.conftest import Http, assert_entra_error, obo_form, ropc_form

NESTED = b"[" * 4000 + b"]" * 4000
"""Valid JSON nested deeper than Python's recursion limit allows to parse."""
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _client_credentials(authority: DevAuthority, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "scope": f"{authority.world.app('downstream').app_id_uri}/.default",
        **extra,
    }


def _basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


class TestErrorShape:
    def test_every_field_entra_sends(self, authority: DevAuthority, http: Http) -> None:
        correlation = str(uuid.uuid4())
        response = http.token(
            ropc_form(authority, password="wrong"), headers={"client-request-id": correlation}
        )
        body = assert_entra_error(response, status=400, error="invalid_grant", code=50126)
        assert body["correlation_id"] == correlation
        assert response.headers["client-request-id"] == correlation
        uuid.UUID(body["trace_id"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", body["timestamp"])
        description = body["error_description"]
        assert f"Trace ID: {body['trace_id']}" in description
        assert f"Correlation ID: {correlation}" in description
        assert f"Timestamp: {body['timestamp']}" in description
        assert "suberror" not in body and "claims" not in body

    def test_a_fresh_correlation_id_when_none_or_garbage_is_sent(
        self, authority: DevAuthority, http: Http
    ) -> None:
        for headers in ({}, {"client-request-id": "not-a-guid"}):
            body = http.token(ropc_form(authority, password="wrong"), headers=headers).json()
            uuid.UUID(body["correlation_id"])
            assert body["correlation_id"] != "not-a-guid"

    def test_token_responses_are_not_cached(self, authority: DevAuthority, http: Http) -> None:
        response = http.token(ropc_form(authority))
        assert response.status_code == 200
        assert "no-store" in response.headers["Cache-Control"]


class TestMalformedRequests:
    @pytest.mark.parametrize("body", [b"%%%", b"grant_type=password&&x=1", b"\xff\xfe=\xfa", b"&"])
    def test_malformed_form(self, authority: DevAuthority, http: Http, body: bytes) -> None:
        response = http.post(authority.token_url, data=body, headers=FORM)
        assert_entra_error(response, status=400, error="invalid_request", code=90014)

    @pytest.mark.parametrize(
        "content_type", ["application/json", "multipart/form-data; boundary=x", "text/plain", None]
    )
    def test_wrong_content_type(
        self, authority: DevAuthority, http: Http, content_type: str | None
    ) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        body = json.dumps(ropc_form(authority)).encode()
        response = http.post(authority.token_url, data=body, headers=headers)
        assert_entra_error(response, status=400, error="invalid_request", code=900144)

    def test_unknown_grant(self, authority: DevAuthority, http: Http) -> None:
        response = http.token(ropc_form(authority, grant_type="saml_bearer_or_anything"))
        assert_entra_error(response, status=400, error="unsupported_grant_type", code=70003)

    @pytest.mark.parametrize(
        ("grant", "field"),
        [
            ("password", "grant_type"),
            ("password", "client_id"),
            ("password", "username"),
            ("password", "password"),
            ("password", "scope"),
            ("obo", "assertion"),
            ("obo", "scope"),
            ("obo", "requested_token_use"),
            ("client_credentials", "scope"),
            ("refresh_token", "refresh_token"),
        ],
    )
    def test_missing_field(
        self, authority: DevAuthority, http: Http, grant: str, field: str
    ) -> None:
        daemon = authority.world.app("daemon")
        form = {
            "password": ropc_form(authority),
            "obo": obo_form(authority, authority.mint_user_token("alice")),
            "client_credentials": _client_credentials(
                authority, client_id=daemon.client_id, client_secret=daemon.secrets[0]
            ),
            "refresh_token": {
                "grant_type": "refresh_token",
                "client_id": authority.world.app("client").client_id,
                "refresh_token": "",
            },
        }[grant]
        form.pop(field, None)
        body = assert_entra_error(
            http.token(form), status=400, error="invalid_request", code=900144
        )
        assert field in body["error_description"]

    def test_empty_value_counts_as_missing(self, authority: DevAuthority, http: Http) -> None:
        response = http.token(ropc_form(authority, password=""))
        assert_entra_error(response, status=400, error="invalid_request", code=900144)

    def test_duplicated_parameter(self, authority: DevAuthority, http: Http) -> None:
        pairs = [*ropc_form(authority).items(), ("scope", "openid")]
        response = http.post(authority.token_url, data=pairs)
        body = assert_entra_error(response, status=400, error="invalid_request", code=9000411)
        assert "'scope'" in body["error_description"]

    def test_oversized_body(self, authority: DevAuthority, http: Http) -> None:
        form = ropc_form(authority, padding="x" * 100_000)
        response = http.token(form)
        assert_entra_error(response, status=413, error="invalid_request", code=90100)
        assert http.token(ropc_form(authority)).status_code == 200  # and it still serves

    def test_too_many_fields(self, authority: DevAuthority, http: Http) -> None:
        form = ropc_form(authority, **{f"f{i}": "1" for i in range(100)})
        assert_entra_error(http.token(form), status=400, error="invalid_request", code=90014)

    @pytest.mark.parametrize("claims", ["{not json", "[1, 2]", "[" * 5000 + "]" * 5000])
    def test_invalid_claims_parameter(
        self, authority: DevAuthority, http: Http, claims: str
    ) -> None:
        response = http.token(ropc_form(authority, claims=claims))
        assert_entra_error(response, status=400, error="invalid_request", code=90014)

    def test_overlong_and_odd_client_ids(self, authority: DevAuthority, http: Http) -> None:
        for client_id in ("x" * 5000, "é🙂", str(uuid.uuid4()).upper()):
            response = http.token(ropc_form(authority, client_id=client_id))
            body = assert_entra_error(
                response, status=400, error="unauthorized_client", code=700016
            )
            assert len(body["error_description"]) < 1000


class TestGarbageAssertions:
    @pytest.mark.parametrize(
        ("assertion", "code"),
        [
            ("garbage", 50027),
            ("a.b.c", 50027),
            ("..", 50027),
            ("é.é.é", 50027),
            (_b64(b"[1]") + "." + _b64(b"{}") + ".", 50027),  # header not an object
            (_b64(b'{"alg":"RS256"}') + "." + _b64(b"{}") + ".", 50013),  # no kid
            (_b64(b'{"alg":"RS256","kid":7}') + "." + _b64(b"{}") + ".", 50027),
            ("x" * 20_000, 50027),  # over the size limit
            (_b64(NESTED) + "." + _b64(b"{}") + ".", 50027),  # hostile nesting in the header
        ],
    )
    def test_obo_refuses_garbage_with_a_json_error(
        self, authority: DevAuthority, http: Http, assertion: str, code: int
    ) -> None:
        response = http.token(obo_form(authority, assertion))
        assert_entra_error(response, status=400, error="invalid_grant", code=code)

    @pytest.mark.parametrize("payload", [b"not json", b"[]", b'{"exp":"soon"}', b"{}", NESTED])
    def test_garbage_payload_under_the_authoritys_kid(
        self, authority: DevAuthority, http: Http, payload: bytes
    ) -> None:
        kid = authority.keys.signing_key.kid
        header = _b64(json.dumps({"alg": "RS256", "kid": kid}).encode())
        assertion = f"{header}.{_b64(payload)}.{_b64(b'sig')}"
        response = http.token(obo_form(authority, assertion))
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_grant"
        assert response.json()["error_codes"][0] in (50013, 50027)

    @pytest.mark.parametrize(
        "assertion",
        [
            "garbage",
            "a.b.c",
            "x" * 20_000,
            _b64(b'{"alg":"none"}') + ".e30.",
            _b64(NESTED) + ".e30.",
            _b64(b'{"alg":"RS256","x5t":"abc"}') + "." + _b64(NESTED) + ".",
        ],
    )
    def test_garbage_client_assertion(
        self, authority: DevAuthority, http: Http, assertion: str
    ) -> None:
        daemon = authority.world.app("daemon")
        form = _client_credentials(
            authority,
            client_id=daemon.client_id,
            client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            client_assertion=assertion,
        )
        assert_entra_error(http.token(form), status=401, error="invalid_client", code=700027)


class TestRoutes:
    @pytest.mark.parametrize(
        ("method", "path", "status"),
        [
            ("GET", "/", 404),
            ("GET", "/nope", 404),
            ("GET", "/common/oauth2/v2.0/logout", 404),
            ("GET", "/" + "a" * 3000, 404),
            ("GET", "/{tenant}/oauth2/v2.0/token", 405),
            ("PUT", "/{tenant}/oauth2/v2.0/token", 405),
            ("POST", "/{tenant}/discovery/v2.0/keys", 405),
            ("DELETE", "/{tenant}/v2.0/.well-known/openid-configuration", 405),
        ],
    )
    def test_unknown_routes_and_methods_are_json(
        self, authority: DevAuthority, http: Http, method: str, path: str, status: int
    ) -> None:
        url = authority.base_url + path.replace("{tenant}", authority.tenant_id)
        response = http.session.request(method, url, timeout=10)
        code = 90010 if status == 405 else 90002
        assert_entra_error(response, status=status, error="invalid_request", code=code)
        assert authority.requests.entries[-1].status == status


class TestBasicAuth:
    def test_client_secret_basic_is_accepted(self, authority: DevAuthority, http: Http) -> None:
        daemon = authority.world.app("daemon")
        response = http.token(
            _client_credentials(authority), headers=_basic(daemon.client_id, daemon.secrets[0])
        )
        assert response.status_code == 200, response.text
        claims = http.verify(
            response.json()["access_token"], audience=authority.world.app("downstream").client_id
        )
        assert (claims["azp"], claims["azpacr"]) == (daemon.client_id, "1")

    def test_wrong_secret(self, authority: DevAuthority, http: Http) -> None:
        daemon = authority.world.app("daemon")
        response = http.token(
            _client_credentials(authority), headers=_basic(daemon.client_id, "no")
        )
        assert_entra_error(response, status=401, error="invalid_client", code=7000215)

    def test_client_id_mismatch_with_the_body(self, authority: DevAuthority, http: Http) -> None:
        daemon = authority.world.app("daemon")
        form = _client_credentials(authority, client_id=authority.world.app("original").client_id)
        response = http.token(form, headers=_basic(daemon.client_id, daemon.secrets[0]))
        assert_entra_error(response, status=401, error="invalid_client", code=7000216)

    @pytest.mark.parametrize(
        "header",
        [
            "Basic !!!not-base64!!!",
            "Basic " + base64.b64encode(b"no-colon").decode(),
            "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
            "Bearer some-token",
            "Basic",
        ],
    )
    def test_malformed_authorization(
        self, authority: DevAuthority, http: Http, header: str
    ) -> None:
        response = http.token(_client_credentials(authority), headers={"Authorization": header})
        assert_entra_error(response, status=401, error="invalid_client", code=7000218)
