"""The pytest plugin users get: fixtures start the dev authority and mint tokens."""

from __future__ import annotations

from collections.abc import Callable

import jwt
import pytest
import requests

from grpc_obo.devauthority import DevAuthority

pytest_plugins = ["pytester"]


def test_authority_fixture_serves_discovery_over_https(grpc_obo_authority: DevAuthority) -> None:
    session = grpc_obo_authority.msal_http_client()
    with session:
        document = session.get(grpc_obo_authority.discovery_url, timeout=10).json()
    assert document["issuer"] == grpc_obo_authority.issuer(2)
    assert document["token_endpoint"] == grpc_obo_authority.token_url
    # The CA is private: a client that does not trust it must fail the TLS handshake.
    with requests.Session() as plain:
        plain.trust_env = False
        with pytest.raises(requests.exceptions.SSLError):
            plain.get(grpc_obo_authority.discovery_url, timeout=10)


def test_minted_user_token_verifies_against_the_published_keys(
    grpc_obo_authority: DevAuthority, grpc_obo_user_token: Callable[..., str]
) -> None:
    token = grpc_obo_user_token("bob", scopes=["access_as_user"])
    keys = jwt.PyJWKSet.from_dict(grpc_obo_authority.jwks())
    key = keys[jwt.get_unverified_header(token)["kid"]]
    original = grpc_obo_authority.world.app("original")
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=original.client_id,
        issuer=grpc_obo_authority.issuer(2),
    )
    assert claims["oid"] == grpc_obo_authority.world.user("bob").oid
    assert claims["scp"] == "access_as_user"


def test_app_token_fixture_mints_roles(grpc_obo_app_token: Callable[..., str]) -> None:
    claims = jwt.decode(grpc_obo_app_token(), options={"verify_signature": False})
    assert claims["idtyp"] == "app"
    assert claims["roles"] == ["Data.Read.All"]
    assert "scp" not in claims


def test_faults_do_not_leak_between_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_sets_a_fault(grpc_obo_authority):
            grpc_obo_authority.faults.fail(503, times=None)
            grpc_obo_authority.faults.jwks_down = True

        def test_sees_a_clean_authority(grpc_obo_authority):
            assert grpc_obo_authority.faults.take(
                __import__("grpc_obo.devauthority", fromlist=["x"])._faults.RequestInfo(
                    endpoint="token"
                )
            ) is None
            assert grpc_obo_authority.faults.jwks_down is False
        """
    )
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
