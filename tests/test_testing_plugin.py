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


WORLD = """
[tenants.contoso]
[apps.web]
public_client = true
api_permissions = { orders = ["Orders.Read"] }
[apps.orders]
scopes = ["Orders.Read"]
[[users]]
username = "alice@contoso.example"
"""


def test_the_world_ini_option_serves_a_world_file(pytester: pytest.Pytester) -> None:
    pytester.mkdir("config")
    (pytester.path / "config" / "world.toml").write_text(WORLD, encoding="utf-8")
    pytester.makeini(
        "[pytest]\ngrpc_obo_world = config/world.toml\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(
        """
        import jwt

        def test_session_world(grpc_obo_authority, grpc_obo_world, grpc_obo_user_token):
            assert grpc_obo_authority.world is grpc_obo_world
            assert [a.name for a in grpc_obo_world.apps] == ["web", "orders"]
            grpc_obo_world.add_user("zed@contoso.example")  # changes stay in the session world
            token = grpc_obo_user_token("alice", audience="orders", client="web")
            claims = jwt.decode(token, options={"verify_signature": False})
            assert claims["scp"] == "Orders.Read"
            assert claims["aud"] == grpc_obo_world.app("orders").client_id

        def test_private_world_is_a_fresh_copy(grpc_obo_private_authority, grpc_obo_world):
            private = grpc_obo_private_authority.world
            assert private is not grpc_obo_world
            assert private.app("orders").client_id == grpc_obo_world.app("orders").client_id
            assert private.find_user("zed") is None
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_minting_for_an_app_the_world_lacks_names_the_argument_and_the_apps(
    pytester: pytest.Pytester,
) -> None:
    """A world of one's own has no `client` (the demo world's name): the error says which
    argument to pass and which apps there are, for both mint fixtures."""
    pytester.makefile(".toml", world=WORLD)
    pytester.makeini(
        "[pytest]\ngrpc_obo_world = world.toml\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(
        """
        import pytest

        def test_user_token_default_client(grpc_obo_user_token):
            with pytest.raises(KeyError) as caught:
                grpc_obo_user_token("alice", audience="orders")
            text = str(caught.value)
            assert "client='client'" in text and "no app called 'client'" in text
            assert "web, orders" in text and "pass client=" in text

        def test_user_token_unknown_audience(grpc_obo_user_token):
            with pytest.raises(KeyError) as caught:
                grpc_obo_user_token("alice", client="web")
            assert "audience='original'" in str(caught.value)
            assert "web, orders" in str(caught.value)

        def test_app_token_default_client(grpc_obo_app_token):
            with pytest.raises(KeyError) as caught:
                grpc_obo_app_token(audience="orders")
            assert "client='daemon'" in str(caught.value)
            assert "web, orders" in str(caught.value)
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_a_broken_world_file_fails_naming_the_field(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", world=WORLD.replace("scopes =", "scope ="))
    pytester.makeini(
        "[pytest]\ngrpc_obo_world = world.toml\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile("def test_uses_it(grpc_obo_authority):\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*world.toml: apps.orders.scope: unknown field*scopes*"])


def test_the_world_fixture_can_be_overridden(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest
        from grpc_obo.devauthority import default_world

        @pytest.fixture(scope="session")
        def grpc_obo_world():
            world = default_world()
            world.add_user("dana@contoso.example", password="dana-pw")
            return world
        """
    )
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        def test_dana(grpc_obo_authority):
            assert grpc_obo_authority.world.user("dana").password == "dana-pw"
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
