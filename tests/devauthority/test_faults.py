"""Fault injection behaves as documented: latency, 5xx and 429 with `times`, targeting by user,
grant and client, dropped connections, JWKS down, and conditional access (claims challenges).

Raw HTTPS is used where MSAL's own throttling cache would hide what the authority answers."""

from __future__ import annotations

import time

import jwt
import pytest
import requests
from msal.exceptions import MsalServiceError

from grpc_obo.devauthority import DevAuthority
from tests.devauthority.conftest import Http, Msal, assert_entra_error, obo_form, ropc_form, scope


class TestLatency:
    def test_every_endpoint_is_delayed_by_at_least_the_latency(
        self, authority: DevAuthority, http: Http
    ) -> None:
        authority.faults.latency = 0.15
        for call in (
            lambda: http.get(authority.discovery_url),
            lambda: http.get(authority.jwks_url),
            lambda: http.token(ropc_form(authority)),
        ):
            started = time.perf_counter()
            response = call()
            assert response.status_code == 200
            assert time.perf_counter() - started >= 0.15

    def test_cleared_latency_is_gone(self, authority: DevAuthority, http: Http) -> None:
        authority.faults.latency = 0.3
        authority.faults.clear()
        started = time.perf_counter()
        assert http.get(authority.discovery_url).status_code == 200
        assert time.perf_counter() - started < 0.3


class TestStatusFaults:
    def test_fail_503_times_two(self, authority: DevAuthority, http: Http) -> None:
        authority.faults.fail(503, times=2)
        statuses = [http.token(ropc_form(authority)).status_code for _ in range(3)]
        assert statuses == [503, 503, 200]
        assert authority.requests.count(status=503) == 2
        assert [e.fault for e in authority.requests.entries] == ["status 503", "status 503", None]

    def test_fail_body_is_entra_shaped(self, authority: DevAuthority, http: Http) -> None:
        authority.faults.fail(503)
        assert_entra_error(
            http.token(ropc_form(authority)),
            status=503,
            error="temporarily_unavailable",
            code=90033,
        )
        authority.faults.fail(500)
        assert_entra_error(
            http.token(ropc_form(authority)), status=500, error="server_error", code=90033
        )

    def test_fail_until_cleared(self, authority: DevAuthority, http: Http) -> None:
        authority.faults.fail(502, times=None)
        assert [http.token(ropc_form(authority)).status_code for _ in range(3)] == [502] * 3
        authority.faults.clear()
        assert http.token(ropc_form(authority)).status_code == 200

    def test_throttle_is_429_with_retry_after(self, authority: DevAuthority, http: Http) -> None:
        authority.faults.throttle(retry_after=7, times=1)
        throttled = http.token(ropc_form(authority))
        assert_entra_error(throttled, status=429, error="temporarily_unavailable", code=50196)
        assert throttled.headers["Retry-After"] == "7"
        after = http.token(ropc_form(authority))
        assert after.status_code == 200
        assert "Retry-After" not in after.headers

    def test_fail_with_retry_after(self, authority: DevAuthority, http: Http) -> None:
        authority.faults.fail(503, retry_after=3)
        assert http.token(ropc_form(authority)).headers["Retry-After"] == "3"

    def test_discovery_endpoint_can_fail(self, authority: DevAuthority, http: Http) -> None:
        authority.faults.fail(503, endpoint="discovery")
        assert http.get(authority.discovery_url).status_code == 503
        assert http.get(authority.discovery_url).status_code == 200

    def test_any_endpoint(self, authority: DevAuthority, http: Http) -> None:
        authority.faults.fail(500, endpoint="any", times=2)
        assert http.get(authority.jwks_url).status_code == 500
        assert http.token(ropc_form(authority)).status_code == 500
        assert http.get(authority.jwks_url).status_code == 200


class TestTargeting:
    def test_alices_503_does_not_affect_bob(self, authority: DevAuthority, http: Http) -> None:
        authority.faults.fail(503, user="alice", times=None)
        assert http.token(ropc_form(authority, "alice")).status_code == 503
        assert http.token(ropc_form(authority, "bob")).status_code == 200
        assert http.token(ropc_form(authority, "alice")).status_code == 503
        assert authority.requests.count(user="alice", status=503) == 2
        assert authority.requests.count(user="bob", ok=True) == 1

    def test_per_user_obo_fault_reads_the_assertion(
        self, authority: DevAuthority, http: Http
    ) -> None:
        alice = authority.world.user("alice")
        authority.faults.fail(503, user=alice.oid, grant="obo", times=None)
        alice_obo = obo_form(authority, authority.mint_user_token("alice"))
        bob_obo = obo_form(authority, authority.mint_user_token("bob"))
        assert http.token(alice_obo).status_code == 503
        assert http.token(bob_obo).status_code == 200
        assert http.token(ropc_form(authority, "alice")).status_code == 200  # other grant

    def test_throttle_one_client_only(self, authority: DevAuthority, http: Http) -> None:
        original = authority.world.app("original")
        authority.faults.throttle(client_id=original.client_id, times=None)
        assert (
            http.token(obo_form(authority, authority.mint_user_token("alice"))).status_code == 429
        )
        assert http.token(ropc_form(authority, "alice")).status_code == 200

    def test_msal_sees_the_targeted_failure_only_for_alice(
        self, authority: DevAuthority, msal_apps: Msal
    ) -> None:
        authority.faults.fail(503, user="alice", grant="obo", times=None)
        downstream = [scope(authority, "downstream")]
        # MSAL raises on a 5xx rather than returning the error body.
        with pytest.raises(MsalServiceError, match="503"):
            msal_apps.confidential("original").acquire_token_on_behalf_of(
                authority.mint_user_token("alice"), downstream
            )
        # A separate app: MSAL's throttling of one app must not decide what we measure here.
        ok = msal_apps.confidential("original").acquire_token_on_behalf_of(
            authority.mint_user_token("bob"), downstream
        )
        assert "access_token" in ok, ok


class TestDropConnection:
    def test_client_sees_a_connection_error_then_recovers(
        self, authority: DevAuthority, http: Http
    ) -> None:
        authority.faults.drop_connection()
        with pytest.raises(requests.ConnectionError):
            http.token(ropc_form(authority))
        assert http.token(ropc_form(authority)).status_code == 200
        assert [e.fault for e in authority.requests.entries] == ["drop", None]

    def test_drop_for_one_user(self, authority: DevAuthority, http: Http) -> None:
        authority.faults.drop_connection(user="bob", times=None)
        assert http.token(ropc_form(authority, "alice")).status_code == 200
        with pytest.raises(requests.ConnectionError):
            http.token(ropc_form(authority, "bob"))

    def test_msal_raises_on_a_dropped_connection(
        self, authority: DevAuthority, msal_apps: Msal
    ) -> None:
        app = msal_apps.confidential("original")
        authority.faults.drop_connection()
        with pytest.raises(requests.ConnectionError):
            app.acquire_token_on_behalf_of(
                authority.mint_user_token("alice"), [scope(authority, "downstream")]
            )


class TestJwksDown:
    def test_keys_are_503_and_discovery_still_answers(
        self, authority: DevAuthority, http: Http
    ) -> None:
        authority.faults.jwks_down = True
        for path in ("discovery/v2.0/keys", "discovery/keys"):
            response = http.get(f"{authority.authority_url}/{path}")
            assert_entra_error(response, status=503, error="temporarily_unavailable", code=90033)
        assert http.get(authority.discovery_url).status_code == 200
        assert http.token(ropc_form(authority)).status_code == 200
        assert authority.requests.count(endpoint="jwks", status=503) == 2

        authority.faults.jwks_down = False
        assert http.get(authority.jwks_url).status_code == 200


class TestConditionalAccess:
    def test_obo_needs_mfa_until_the_user_answers_the_claims_challenge(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        downstream = [scope(authority, "downstream")]
        alice_token = msal_apps.sign_in("alice")["access_token"]  # before the policy
        challenge = authority.faults.require_claims("alice")

        refused = msal_apps.confidential("original").acquire_token_on_behalf_of(
            alice_token, downstream
        )
        assert refused["error"] == "interaction_required", refused
        assert refused["error_codes"] == [50076]
        assert refused["suberror"] == "basic_action"
        assert refused["claims"] == challenge.claims

        # Bob is not targeted.
        bob = msal_apps.confidential("original").acquire_token_on_behalf_of(
            msal_apps.sign_in("bob")["access_token"], downstream
        )
        assert "access_token" in bob, bob

        # A password sign-in cannot answer it (MFA for every resource now)...
        alice = authority.world.user("alice")
        by_password = msal_apps.public().acquire_token_by_username_password(
            alice.username, alice.password, [scope(authority, "original")]
        )
        assert by_password["error_codes"] == [50076], by_password
        # ...alice signs in again interactively answering the challenge: her new token
        # carries MFA.
        again = msal_apps.sign_in_interactively("alice", claims_challenge=refused["claims"])
        claims = http.verify(
            again["access_token"], audience=authority.world.app("original").client_id
        )
        assert "mfa" in claims["amr"]

        exchanged = msal_apps.confidential("original").acquire_token_on_behalf_of(
            again["access_token"], downstream
        )
        assert "access_token" in exchanged, exchanged
        assert (
            "mfa"
            in jwt.decode(exchanged["access_token"], options={"verify_signature": False})["amr"]
        )

    def test_raw_challenge_response_shape(self, authority: DevAuthority, http: Http) -> None:
        challenge = authority.faults.require_claims("bob")
        response = http.token(obo_form(authority, authority.mint_user_token("bob")))
        body = assert_entra_error(
            response, status=400, error="interaction_required", code=50076, suberror="basic_action"
        )
        assert body["claims"] == challenge.claims

    def test_sign_in_without_the_challenge_does_not_count_as_mfa(
        self, authority: DevAuthority, http: Http, msal_apps: Msal
    ) -> None:
        authority.faults.require_claims(
            "alice", resource_client_id=authority.world.app("downstream").client_id
        )
        token = msal_apps.sign_in("alice", claims_challenge='{"access_token":{"other":{}}}')[
            "access_token"
        ]
        response = http.token(obo_form(authority, token))
        assert response.json()["error"] == "interaction_required"

    def test_challenge_limited_to_another_resource(
        self, authority: DevAuthority, http: Http
    ) -> None:
        authority.faults.require_claims(
            "alice", resource_client_id=authority.world.app("original").client_id
        )
        response = http.token(obo_form(authority, authority.mint_user_token("alice")))
        assert response.status_code == 200, response.text

    def test_token_already_showing_mfa_passes(self, authority: DevAuthority, http: Http) -> None:
        authority.faults.require_claims("alice")
        token = authority.mint_user_token("alice", amr=("pwd", "mfa"))
        assert http.token(obo_form(authority, token)).status_code == 200
