"""Bounded and well-formed requests: `scope` and `claims` have length limits, and a `claims`
parameter whose `xms_cc` (or `access_token`) is not an object is a bad request (400,
AADSTS90014), at the token endpoint and at the device-code endpoint alike, never a 500."""

from __future__ import annotations

import pytest

from grpc_obo.devauthority import DevAuthority
from tests.devauthority.conftest import Http, assert_entra_error, ropc_form, scope

BAD_CLAIMS = [
    '{"access_token":{"xms_cc":["cp1"]}}',
    '{"access_token":{"xms_cc":"cp1"}}',
    '{"access_token":["x"]}',
]


@pytest.mark.parametrize("claims", BAD_CLAIMS)
def test_claims_of_the_wrong_shape_are_a_bad_request(
    authority: DevAuthority, http: Http, claims: str
) -> None:
    assert_entra_error(
        http.token(ropc_form(authority, claims=claims)),
        status=400,
        error="invalid_request",
        code=90014,
    )
    started = http.post(
        f"{authority.authority_url}/oauth2/v2.0/devicecode",
        data={
            "client_id": authority.world.app("client").client_id,
            "scope": scope(authority, "original"),
            "claims": claims,
        },
    )
    assert_entra_error(started, status=400, error="invalid_request", code=90014)


def test_scope_and_claims_lengths_are_bounded(authority: DevAuthority, http: Http) -> None:
    long_scope = " ".join([scope(authority, "original")] * 80)
    assert len(long_scope) > 2048
    assert_entra_error(
        http.token(ropc_form(authority, scope=long_scope)),
        status=400,
        error="invalid_scope",
        code=70011,
    )
    long_claims = '{"access_token":{"x":{"values":["' + "a" * 5000 + '"]}}}'
    assert_entra_error(
        http.token(ropc_form(authority, claims=long_claims)),
        status=400,
        error="invalid_request",
        code=90014,
    )
    started = http.post(
        f"{authority.authority_url}/oauth2/v2.0/devicecode",
        data={"client_id": authority.world.app("client").client_id, "scope": long_scope},
    )
    assert_entra_error(started, status=400, error="invalid_scope", code=70011)
