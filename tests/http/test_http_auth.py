"""`OnBehalfOf.http_auth` / `AppOnly.http_auth`: an `httpx.Auth` over the same exchangers as the
gRPC channels, against a real REST API on loopback, real MSAL and the dev authority.

The token the downstream receives is the user's, exchanged On-Behalf-Of (never an app token);
it is cached and shared by concurrent first calls (one exchange per user); the body is
replayed after a claims challenge; nothing leaks the token.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

import grpc_obo
from grpc_obo import AppTokenNotAllowedError, ConfigurationError, MissingIdentityError
from grpc_obo.devauthority import DevAuthority
from tests.http.conftest import FAST, Users
from tests.http.downstream import Downstream, claims_json


def exchanges(authority: DevAuthority, user: str | None = None) -> int:
    return authority.requests.count(grant="obo", user=user, ok=True)


async def test_the_downstream_gets_the_users_token_exchanged_on_behalf_of(
    grpc_obo_authority: DevAuthority,
    obo: grpc_obo.OnBehalfOf,
    users: Users,
    read: str,
    downstream: Downstream,
    no_secrets_logged: list[str],
) -> None:
    alice = await users.identity("alice")
    async with httpx.AsyncClient(auth=obo.http_auth(scopes=[read])) as http:
        with grpc_obo.use_identity(alice):
            first = await http.get(f"{downstream.url}/whoami")
            second = await http.get(f"{downstream.url}/whoami")
    assert first.status_code == second.status_code == 200
    assert first.json() == {"oid": alice.oid, "kind": "user"}
    seen = downstream.seen[0].claims
    assert seen["aud"] == grpc_obo_authority.world.app("downstream").client_id
    assert seen["azp"] == grpc_obo_authority.world.app("original").client_id
    assert seen["scp"] == ["Data.Read"]
    assert exchanges(grpc_obo_authority, "alice") == 1  # the second call was a cache hit


async def test_outside_an_authenticated_call_nothing_is_sent(
    grpc_obo_authority: DevAuthority, obo: grpc_obo.OnBehalfOf, read: str, downstream: Downstream
) -> None:
    async with httpx.AsyncClient(auth=obo.http_auth(scopes=[read])) as http:
        with pytest.raises(MissingIdentityError):
            await http.get(f"{downstream.url}/whoami")
    assert downstream.seen == []
    assert grpc_obo_authority.requests.count(endpoint="token") == 0


async def test_an_app_caller_is_never_served_with_an_app_token(
    grpc_obo_authority: DevAuthority,
    obo: grpc_obo.OnBehalfOf,
    read: str,
    downstream: Downstream,
) -> None:
    token = grpc_obo_authority.mint_app_token("daemon", audience="downstream")
    daemon = grpc_obo.Identity(
        tid=grpc_obo_authority.tenant_id,
        oid="0a990000-0000-4000-8000-000000000a99",
        sub="0a990000-0000-4000-8000-000000000a99",
        kind=grpc_obo.IdentityKind.APP,
        roles=frozenset({"Data.Read.All"}),
        token=grpc_obo.SecretToken(token),
    )
    async with httpx.AsyncClient(auth=obo.http_auth(scopes=[read])) as http:
        with grpc_obo.use_identity(daemon), pytest.raises(AppTokenNotAllowedError):
            await http.get(f"{downstream.url}/whoami")
    assert downstream.seen == []


async def test_concurrent_first_calls_share_one_exchange_per_user(
    grpc_obo_authority: DevAuthority,
    obo: grpc_obo.OnBehalfOf,
    users: Users,
    read: str,
    downstream: Downstream,
) -> None:
    alice, bob = await users.identity("alice"), await users.identity("bob")
    auth = obo.http_auth(scopes=[read])  # one instance serves every user and request

    async def call(http: httpx.AsyncClient, who: grpc_obo.Identity) -> str:
        with grpc_obo.use_identity(who):
            response = await http.get(f"{downstream.url}/whoami")
        return str(response.json()["oid"])

    async with httpx.AsyncClient(auth=auth) as http:
        answers = await asyncio.gather(
            *(call(http, who) for _ in range(12) for who in (alice, bob))
        )
    assert answers == [alice.oid, bob.oid] * 12  # nobody got another user's token
    assert exchanges(grpc_obo_authority, "alice") == 1
    assert exchanges(grpc_obo_authority, "bob") == 1


async def test_a_claims_challenge_evicts_exchanges_with_the_claims_and_replays_the_body(
    grpc_obo_authority: DevAuthority,
    obo: grpc_obo.OnBehalfOf,
    users: Users,
    read: str,
    downstream: Downstream,
    no_secrets_logged: list[str],
) -> None:
    alice = await users.identity("alice")
    claims = claims_json(xms_cc={"values": ["cp1"]})
    async with httpx.AsyncClient(auth=obo.http_auth(scopes=[read])) as http:
        with grpc_obo.use_identity(alice):
            await http.get(f"{downstream.url}/whoami")  # a token in the cache
            downstream.challenge_next(1, claims)

            async def body() -> object:  # a streamed body: replayable only because it is read
                yield b"chunk-1;"
                yield b"chunk-2"

            response = await http.post(f"{downstream.url}/echo", content=body())
    assert response.status_code == 200
    assert response.content == b"chunk-1;chunk-2"
    assert [s.body for s in downstream.seen[1:]] == [b"chunk-1;chunk-2"] * 2
    # The first token, then one exchanged again with the claims (the authority saw them).
    assert exchanges(grpc_obo_authority, "alice") == 2
    assert downstream.seen[2].claims["xms_cc"] == ["cp1"]


async def test_a_second_challenge_after_the_retry_needs_the_user(
    obo: grpc_obo.OnBehalfOf, users: Users, read: str, downstream: Downstream
) -> None:
    alice = await users.identity("alice")
    claims = claims_json(xms_cc={"values": ["cp1"]})
    downstream.challenge_next(2, claims)
    async with httpx.AsyncClient(auth=obo.http_auth(scopes=[read])) as http:
        with grpc_obo.use_identity(alice), pytest.raises(grpc_obo.ClaimsChallengeError) as caught:
            await http.get(f"{downstream.url}/whoami")
    assert caught.value.claims == claims
    assert len(downstream.seen) == 2  # one replay, never a loop
    assert grpc_obo.status_for(caught.value).name == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    "challenge",
    [
        None,
        'Bearer error="invalid_token"',
        'Bearer error="insufficient_claims", claims="not base64!"',
        'Bearer error="insufficient_claims", claims="WzFd"',  # [1]: not an object
    ],
)
async def test_a_401_without_a_usable_claims_challenge_is_answered_as_is(
    grpc_obo_authority: DevAuthority,
    obo: grpc_obo.OnBehalfOf,
    users: Users,
    read: str,
    downstream: Downstream,
    challenge: str | None,
) -> None:
    alice = await users.identity("alice")
    downstream.refuse_next(1, 401, challenge)
    async with httpx.AsyncClient(auth=obo.http_auth(scopes=[read])) as http:
        with grpc_obo.use_identity(alice):
            response = await http.get(f"{downstream.url}/whoami")
    assert response.status_code == 401
    assert len(downstream.seen) == 1
    assert exchanges(grpc_obo_authority, "alice") == 1


async def test_app_only_auth_sends_the_services_own_token(
    grpc_obo_authority: DevAuthority,
    client: grpc_obo.ConfidentialClient,
    downstream: Downstream,
) -> None:
    grpc_obo_authority.world.app("original").app_role_assignments[
        grpc_obo_authority.world.app("downstream").client_id
    ] = frozenset({"Data.Read.All"})
    scope = f"{grpc_obo_authority.world.app('downstream').app_id_uri}/.default"
    try:
        async with (
            grpc_obo.AppOnly(client, retry=FAST) as app_only,
            httpx.AsyncClient(auth=app_only.http_auth(scopes=[scope])) as http,
        ):
            response = await http.get(f"{downstream.url}/whoami")
    finally:
        grpc_obo_authority.world.app("original").app_role_assignments.clear()
    assert response.json()["kind"] == "app"
    assert downstream.seen[0].claims["roles"] == ["Data.Read.All"]


async def test_misuse_is_refused_before_any_token_is_sent(
    obo: grpc_obo.OnBehalfOf, users: Users, read: str
) -> None:
    with pytest.raises(ConfigurationError):
        obo.http_auth(scopes=read)  # a string, not a list
    alice = await users.identity("alice")
    auth = obo.http_auth(scopes=[read])
    with grpc_obo.use_identity(alice):
        async with httpx.AsyncClient(auth=auth) as http:
            with pytest.raises(ConfigurationError, match="https"):
                await http.get("http://192.0.2.1/whoami")  # plaintext to a remote host
    assert repr(auth) == f"HttpAuth(scopes=({read!r},))"  # what it is for, no token


def test_a_sync_client_is_refused(obo: grpc_obo.OnBehalfOf, read: str) -> None:
    with (
        httpx.Client(auth=obo.http_auth(scopes=[read])) as sync,
        pytest.raises(ConfigurationError, match="AsyncClient"),
    ):
        sync.get("https://192.0.2.1/whoami")


async def test_cp1_is_declared_by_default_and_can_be_turned_off(
    client: grpc_obo.ConfidentialClient, users: Users, read: str, downstream: Downstream
) -> None:
    """grpc_obo answers claims challenges, so it asks for CAE tokens unless told not to."""
    assert client.client_capabilities == ("cp1",)
    alice = await users.identity("alice")
    opted_out = grpc_obo.ConfidentialClient(
        client_id=client.client_id,
        tenant=client.tenant,
        credential=client.credential,
        authority_host=client.authority_host,
        ca_file=client.ca_file,
        client_capabilities=(),
    )
    for confidential in (client, opted_out):
        async with (
            grpc_obo.OnBehalfOf(confidential, retry=FAST) as obo,
            httpx.AsyncClient(auth=obo.http_auth(scopes=[read])) as http,
        ):
            with grpc_obo.use_identity(alice):
                await http.get(f"{downstream.url}/whoami")
    assert [seen.claims["xms_cc"] for seen in downstream.seen] == [["cp1"], []]


def test_httpx_is_imported_only_when_an_http_auth_is_built() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, grpc_obo\n"
        "assert 'httpx' not in sys.modules and 'starlette' not in sys.modules\n"
        "from grpc_obo.devauthority import default_world\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
