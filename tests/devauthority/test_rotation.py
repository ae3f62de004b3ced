"""Signing-key rollover as Entra does it: publish ahead, switch, keep verifying old tokens until
the old key is retired, then refuse them. Runs on its own authority (it changes the key ring)."""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest

from grpc_obo.devauthority import DevAuthority, default_world
from tests.devauthority.conftest import Http, assert_entra_error, obo_form


@pytest.fixture(scope="module")
def rotating() -> Iterator[DevAuthority]:
    with DevAuthority(world=default_world(with_certificates=False)).running_in_thread() as running:
        yield running


@pytest.fixture
def rotating_http(rotating: DevAuthority) -> Iterator[Http]:
    client = Http(rotating)
    try:
        yield client
    finally:
        client.close()


def _kid(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def _published(http: Http) -> list[str]:
    return [key["kid"] for key in http.jwks()["keys"]]


def test_rollover_publish_switch_retire(rotating: DevAuthority, rotating_http: Http) -> None:
    http = rotating_http
    audience = rotating.world.app("original").client_id
    old_kid = rotating.keys.signing_key.kid
    old_token = rotating.mint_user_token("alice")
    assert _kid(old_token) == old_kid

    # 1. The next key is published before it signs anything.
    new_kid = rotating.keys.publish_next_key()
    assert new_kid != old_kid
    assert _published(http) == [old_kid, new_kid]
    assert _kid(rotating.mint_user_token("alice")) == old_kid
    served = http.token(
        {
            "grant_type": "password",
            "client_id": rotating.world.app("client").client_id,
            "username": "bob@contoso.example",
            "password": rotating.world.user("bob").password,
            "scope": f"{rotating.world.app('original').app_id_uri}/access_as_user",
        }
    )
    assert _kid(served.json()["access_token"]) == old_kid

    # 2. Switching makes new tokens use the new kid; old tokens still verify and still work.
    assert rotating.keys.switch_signing_key(new_kid) == new_kid
    new_token = rotating.mint_user_token("alice")
    assert _kid(new_token) == new_kid
    assert http.verify(new_token, audience=audience)["oid"] == rotating.world.user("alice").oid
    assert http.verify(old_token, audience=audience)["oid"] == rotating.world.user("alice").oid
    assert http.token(obo_form(rotating, old_token)).status_code == 200
    exchanged = http.token(obo_form(rotating, new_token)).json()["access_token"]
    assert _kid(exchanged) == new_kid

    # 3. After retirement the old kid is gone and assertions it signed are refused.
    assert rotating.keys.retire_key(old_kid) == old_kid
    assert _published(http) == [new_kid]
    with pytest.raises(KeyError):
        jwt.PyJWKSet.from_dict(http.jwks())[old_kid]
    assert_entra_error(
        http.token(obo_form(rotating, old_token)), status=400, error="invalid_grant", code=50013
    )
    assert http.token(obo_form(rotating, new_token)).status_code == 200


def test_rotate_in_one_step(rotating: DevAuthority, rotating_http: Http) -> None:
    before = rotating.keys.signing_key.kid
    old_token = rotating.mint_user_token("alice")
    new_kid = rotating.keys.rotate()
    assert new_kid != before
    assert _published(rotating_http) == [new_kid]
    assert _kid(rotating.mint_user_token("alice")) == new_kid
    assert_entra_error(
        rotating_http.token(obo_form(rotating, old_token)),
        status=400,
        error="invalid_grant",
        code=50013,
    )


def test_the_signing_key_cannot_be_retired(rotating: DevAuthority) -> None:
    signing = rotating.keys.signing_key.kid
    with pytest.raises(KeyError):
        rotating.keys.retire_key(signing)
    with pytest.raises(KeyError):
        rotating.keys.retire_key()  # nothing else is published
    with pytest.raises(KeyError):
        rotating.keys.switch_signing_key("not-published")
    assert rotating.keys.published_kids == [signing]


def test_retire_without_a_kid_takes_the_oldest_non_signing_key(rotating: DevAuthority) -> None:
    current = rotating.keys.signing_key.kid
    first = rotating.keys.publish_next_key()
    second = rotating.keys.publish_next_key()
    rotating.keys.switch_signing_key(second)
    assert rotating.keys.retire_key() == current
    assert rotating.keys.retire_key() == first
    assert rotating.keys.published_kids == [second]
