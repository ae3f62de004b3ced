"""The dev authority's Graph-like API and CAE, with real MSAL, httpx and `OnBehalfOf.http_auth`.

`GET {graph_url}/me` answers the user of a token it validated itself; after
`World.revoke_sessions(user)` it answers a CAE token issued before the revocation with Graph's
claims challenge, and the authority refuses On-Behalf-Of for an assertion issued before it
(AADSTS50173 with the claims) until the user signs in again.
"""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any

import httpx
import pytest

import grpc_obo
from grpc_obo.devauthority import GRAPH_APP_ID, DevAuthority
from tests.http.conftest import FAST, SteppingClock, confidential


def signed_in(authority: DevAuthority, user: str = "alice") -> str:
    return authority.mint_user_token(user, audience="original", scopes=["access_as_user"])


def challenge_params(header: str) -> dict[str, str]:
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer"
    return dict(re.findall(r'(\w+)="([^"]*)"', rest))


async def test_me_answers_the_signed_in_user_from_the_token_it_validated(
    authority: DevAuthority, validator: grpc_obo.TokenValidator
) -> None:
    alice = await validator.validate(signed_in(authority))
    async with (
        grpc_obo.OnBehalfOf(confidential(authority), retry=FAST) as obo,
        httpx.AsyncClient(
            auth=obo.http_auth(scopes=["User.Read"]), verify=authority.client_ssl_context()
        ) as graph,
    ):
        with grpc_obo.use_identity(alice):
            me = await graph.get(f"{authority.graph_url}/me")
    assert me.status_code == 200
    assert me.json()["displayName"] == "Alice Example"
    assert me.json()["id"] == alice.oid
    assert me.json()["userPrincipalName"] == "alice@contoso.example"


def graph_token(authority: DevAuthority, **options: Any) -> str:
    options.setdefault("scopes", ["User.Read"])
    return authority.minter.access_token(
        client=authority.world.app("original"),
        resource=None,
        tenant_id=authority.tenant_id,
        user=authority.world.user("alice"),
        **options,
    ).token


@pytest.mark.parametrize(
    ("token", "status", "code"),
    [
        (lambda a: "-", 401, "InvalidAuthenticationToken"),
        (
            lambda a: a.mint_user_token("alice", audience="downstream"),
            401,
            "InvalidAuthenticationToken",
        ),
        (lambda a: graph_token(a, lifetime=-3600), 401, "InvalidAuthenticationToken"),
        (lambda a: graph_token(a, scopes=["Mail.Read"]), 403, "Authorization_RequestDenied"),
        (
            lambda a: graph_token(a, audience=GRAPH_APP_ID, extra={"iss": "https://evil/"}),
            401,
            "InvalidAuthenticationToken",
        ),
    ],
    ids=["not-a-token", "another-audience", "expired", "no-user-scope", "foreign-issuer"],
)
def test_me_refuses_what_graph_refuses(
    authority: DevAuthority, token: Any, status: int, code: str
) -> None:
    with httpx.Client(verify=authority.client_ssl_context()) as graph:
        answer = graph.get(
            f"{authority.graph_url}/me", headers={"Authorization": f"Bearer {token(authority)}"}
        )
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code
    if status == 401:
        params = challenge_params(answer.headers["www-authenticate"])
        assert params["client_id"] == GRAPH_APP_ID
        assert "claims" not in params


async def test_revoked_sessions_get_the_cae_challenge_and_obo_is_refused_until_sign_in(
    authority: DevAuthority, validator: grpc_obo.TokenValidator, clock: SteppingClock
) -> None:
    alice = await validator.validate(signed_in(authority))
    client = confidential(authority, client_capabilities=("cp1",))
    verify = authority.client_ssl_context()
    async with grpc_obo.OnBehalfOf(client, retry=FAST) as obo:
        with grpc_obo.use_identity(alice):
            graph_token = (await obo.acquire(["User.Read"])).reveal()
        bearer = {"Authorization": f"Bearer {graph_token}"}
        async with httpx.AsyncClient(verify=verify) as plain:
            assert (await plain.get(f"{authority.graph_url}/me", headers=bearer)).status_code == 200
            clock.advance(5)
            revoked_at = math.ceil(authority.world.revoke_sessions("alice").tokens_valid_from)
            refused = await plain.get(f"{authority.graph_url}/me", headers=bearer)
        # Graph's CAE answer, parameter for parameter.
        assert refused.status_code == 401
        params = challenge_params(refused.headers["www-authenticate"])
        assert params["realm"] == ""
        assert params["authorization_uri"] == f"{authority.base_url}/common/oauth2/authorize"
        assert params["client_id"] == GRAPH_APP_ID
        assert params["error"] == "insufficient_claims"
        nbf = {"access_token": {"nbf": {"essential": True, "value": str(revoked_at)}}}
        assert json.loads(base64.b64decode(params["claims"])) == nbf
        assert "TokenIssuedBeforeRevocationTimestamp" in refused.json()["error"]["message"]

        # Through the HTTP auth: evicted, exchanged again with the claims, refused by the
        # authority (the assertion predates the revocation): only the user can fix it.
        async with httpx.AsyncClient(
            auth=obo.http_auth(scopes=["User.Read"]), verify=verify
        ) as graph:
            with (
                grpc_obo.use_identity(alice),
                pytest.raises(grpc_obo.ClaimsChallengeError) as caught,
            ):
                await graph.get(f"{authority.graph_url}/me")
            assert json.loads(caught.value.claims or "") == nbf
            assert caught.value.error == "invalid_grant"
            assert 50173 in caught.value.error_codes
            assert authority.requests.count(grant="obo", status=400) == 1

            # The user signs in again: a new token, a new exchange, Graph answers.
            again = await validator.validate(signed_in(authority))
            with grpc_obo.use_identity(again):
                me = await graph.get(f"{authority.graph_url}/me")
    assert me.status_code == 200
    assert me.json()["id"] == alice.oid


async def test_a_token_without_cp1_is_not_a_cae_token(
    authority: DevAuthority, clock: SteppingClock
) -> None:
    token = graph_token(authority)  # no xms_cc: Graph honours it until it expires
    clock.advance(5)
    authority.world.revoke_sessions("alice")
    async with httpx.AsyncClient(verify=authority.client_ssl_context()) as plain:
        answer = await plain.get(
            f"{authority.graph_url}/me", headers={"Authorization": f"Bearer {token}"}
        )
    assert answer.status_code == 200
    capable = graph_token(authority, capabilities=["cp1"], extra={"iat": int(clock()) - 10})
    async with httpx.AsyncClient(verify=authority.client_ssl_context()) as plain:
        answer = await plain.get(
            f"{authority.graph_url}/me", headers={"Authorization": f"Bearer {capable}"}
        )
    assert answer.status_code == 401
