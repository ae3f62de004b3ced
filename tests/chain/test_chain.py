"""client -> Original API -> (On-Behalf-Of) -> Downstream API, end to end on loopback.

Real dev authority over HTTPS, real MSAL, real grpc.aio servers on port 0, the example APIs.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator

import grpc
import msal
import pytest

import grpc_obo
from examples.gen.demo.v1 import demo_pb2, demo_pb2_grpc
from grpc_obo.devauthority import DevAuthority, User
from tests.chain.conftest import Chain

pytestmark = pytest.mark.slow


async def records(count: int) -> AsyncIterator[demo_pb2.Record]:
    for number in range(count):
        yield demo_pb2.Record(id=f"r{number}", body="x")


def trailer(error: grpc.aio.AioRpcError, name: str) -> str:
    return str(dict(error.trailing_metadata() or ()).get(name, ""))


async def test_all_four_rpc_kinds_carry_the_users_identity_downstream(chain: Chain) -> None:
    alice = chain.authority.world.user("alice")
    original_id = chain.settings.app("original")["client_id"]
    auth = chain.auth(chain.token("alice"))

    profile = await chain.stub.GetProfile(demo_pb2.ProfileRequest(record_id="7"), metadata=auth)
    listed = [
        p async for p in chain.stub.ListProfiles(demo_pb2.ListRequest(count=3), metadata=auth)
    ]
    uploaded = await chain.stub.UploadRecords(records(4), metadata=auth)
    synced = [p async for p in chain.stub.SyncProfiles(records(2), metadata=auth)]

    seen = [
        profile.record.seen_by_downstream,
        *(p.record.seen_by_downstream for p in listed),
        uploaded.seen_by_downstream,
        *(p.record.seen_by_downstream for p in synced),
    ]
    assert len(seen) == 1 + 3 + 1 + 2
    for caller in seen:
        assert (caller.oid, caller.tid) == (alice.oid, alice.tenant_id)
        assert caller.client_id == original_id  # azp: the middle tier, after On-Behalf-Of
        assert list(caller.scopes) == ["Data.Read"]
    assert uploaded.stored == 4
    assert profile.seen_by_original.client_id == chain.settings.app("client")["client_id"]
    assert chain.exchanges("alice") == 1  # one exchange served all four calls


async def test_a_user_signed_in_with_msal_reaches_downstream(chain: Chain) -> None:
    carol = chain.authority.world.user("carol")  # second tenant: OBO goes to her tenant

    def sign_in() -> str:
        app = msal.PublicClientApplication(
            chain.settings.app("client")["client_id"],
            authority=chain.authority.authority_for(carol.tenant_id),
            instance_discovery=False,
            http_client=chain.authority.msal_http_client(),
        )
        result = app.acquire_token_by_username_password(
            carol.username,
            carol.password,
            scopes=[chain.settings.scope("original", "access_as_user")],
        )
        app.http_client.close()
        return str(result["access_token"])

    token = await asyncio.to_thread(sign_in)
    profile = await chain.stub.GetProfile(demo_pb2.ProfileRequest(), metadata=chain.auth(token))
    assert profile.record.seen_by_downstream.oid == carol.oid
    assert profile.record.seen_by_downstream.tid == carol.tenant_id


async def test_a_second_call_with_the_same_token_makes_no_exchange(chain: Chain) -> None:
    auth = chain.auth(chain.token("bob"))
    for _ in range(3):
        await chain.stub.GetProfile(demo_pb2.ProfileRequest(), metadata=auth)
    assert chain.exchanges("bob") == 1
    assert chain.obo.exchanges == 1


async def test_a_thousand_concurrent_first_calls_make_one_exchange(chain: Chain) -> None:
    auth = chain.auth(chain.token("alice"))
    results = await asyncio.wait_for(
        asyncio.gather(
            *(chain.stub.GetProfile(demo_pb2.ProfileRequest(), metadata=auth) for _ in range(1000))
        ),
        timeout=60,
    )
    assert len(results) == 1000
    assert chain.exchanges("alice") == 1


async def test_users_never_get_each_others_token(chain: Chain) -> None:
    world = chain.authority.world
    tenant = chain.authority.tenant_id
    users = []
    for number in range(20):
        name = f"conc{number}-{id(chain)}@contoso.example"
        world.users.append(User(username=name, tenant_id=tenant, display_name=f"User {number}"))
        users.append(world.user(name))
    tokens = {user.oid: chain.token(user.username) for user in users}

    async def call(oid: str) -> tuple[str, str]:
        profile = await chain.stub.GetProfile(
            demo_pb2.ProfileRequest(), metadata=chain.auth(tokens[oid])
        )
        return oid, profile.record.seen_by_downstream.oid

    calls = [call(oid) for _ in range(10) for oid in tokens]  # interleaved users
    pairs = await asyncio.wait_for(asyncio.gather(*calls), timeout=60)
    assert all(sent == seen for sent, seen in pairs)
    assert chain.authority.requests.count(grant="obo") == len(users)


async def test_claims_challenge_reaches_the_client_who_can_answer_it(chain: Chain) -> None:
    challenge = chain.authority.faults.require_claims("alice")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await chain.stub.GetProfile(
            demo_pb2.ProfileRequest(), metadata=chain.auth(chain.token("alice"))
        )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    header = trailer(raised.value, "www-authenticate")
    assert 'error="insufficient_claims"' in header
    encoded = header.split('claims="', 1)[1].split('"', 1)[0]
    assert base64.b64decode(encoded).decode() == challenge.claims

    # The client signs in again satisfying the challenge (here: a token showing MFA).
    answered = chain.token("alice", amr=["pwd", "mfa"])
    profile = await chain.stub.GetProfile(demo_pb2.ProfileRequest(), metadata=chain.auth(answered))
    assert profile.record.seen_by_downstream.oid == chain.authority.world.user("alice").oid


async def test_authority_down_is_unavailable(chain: Chain) -> None:
    chain.authority.faults.fail(503, times=None)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await chain.stub.GetProfile(
            demo_pb2.ProfileRequest(), metadata=chain.auth(chain.token("bob")), timeout=20
        )
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_expired_user_token_is_refused_before_any_exchange(chain: Chain) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await chain.stub.GetProfile(
            demo_pb2.ProfileRequest(), metadata=chain.auth(chain.token("alice", lifetime=-600))
        )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert chain.exchanges() == 0


async def test_a_forwarded_token_is_refused_downstream(chain: Chain) -> None:
    async with grpc.aio.insecure_channel(chain.downstream) as direct:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await demo_pb2_grpc.DownstreamStub(direct).GetRecord(
                demo_pb2.RecordRequest(), metadata=chain.auth(chain.token("alice"))
            )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert 'error="invalid_token"' in trailer(raised.value, "www-authenticate")


async def test_the_obo_channel_outside_a_call_is_a_clear_error(chain: Chain) -> None:
    scopes = [chain.settings.scope("downstream", "Data.Read")]
    async with grpc.aio.insecure_channel(
        chain.downstream, interceptors=chain.obo.client_interceptors(scopes=scopes)
    ) as channel:
        with pytest.raises(grpc_obo.MissingIdentityError):
            await demo_pb2_grpc.DownstreamStub(channel).GetRecord(demo_pb2.RecordRequest())
    assert chain.exchanges() == 0


async def test_app_only_channel_calls_as_the_application(
    chain: Chain, grpc_obo_authority: DevAuthority
) -> None:
    daemon = chain.settings.app("daemon")
    client = grpc_obo.ConfidentialClient(
        client_id=daemon["client_id"],
        tenant_id=grpc_obo_authority.tenant_id,
        credential=grpc_obo.ClientCredential.secret(daemon["secrets"][0]),
        authority_host=grpc_obo_authority.base_url,
        ca_file=str(grpc_obo_authority.ca_file),
    )
    scope = f"{chain.settings.app('downstream')['app_id_uri']}/.default"
    async with (
        grpc_obo.AppOnly(client) as app_only,
        grpc.aio.insecure_channel(
            chain.downstream, interceptors=app_only.client_interceptors(scopes=[scope])
        ) as channel,
    ):
        # The example Downstream API acts for users only: an app token is refused there.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await demo_pb2_grpc.DownstreamStub(channel).GetRecord(demo_pb2.RecordRequest())
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert grpc_obo_authority.requests.count(grant="client_credentials") == 1


async def test_no_token_reaches_a_log_line(chain: Chain, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = chain.token("alice")
    await chain.stub.GetProfile(demo_pb2.ProfileRequest(), metadata=chain.auth(token))
    with pytest.raises(grpc.aio.AioRpcError):
        await chain.stub.GetProfile(
            demo_pb2.ProfileRequest(), metadata=chain.auth(token[:-4] + "AAAA")
        )
    # The token the Downstream API received: the cached exchange result for alice's token.
    alice = chain.authority.world.user("alice")
    sent = await chain.obo.acquire(
        [chain.settings.scope("downstream", "Data.Read")],
        identity=grpc_obo.Identity(
            tid=alice.tenant_id,
            oid=alice.oid,
            sub="-",
            kind=grpc_obo.IdentityKind.USER,
            token=grpc_obo.SecretToken(token),
        ),
    )
    assert chain.exchanges("alice") == 1  # it came from the cache, not a new exchange
    downstream = sent.reveal()
    secrets = [
        token,
        *token.split("."),
        downstream,
        *downstream.split("."),
        chain.settings.app("original")["secrets"][0],
    ]
    text = "\n".join(r.getMessage() + repr(r.args) for r in caplog.records)
    for secret in secrets:
        assert secret not in text
