"""client -> Workspace -> (On-Behalf-Of) -> DocumentStore -> (On-Behalf-Of) -> KeyVault.

Real dev authority over HTTPS, real MSAL, real grpc.aio servers on port 0, the example APIs in
this process. What must hold at every hop of a two-middle-tier chain: the user's oid/tid intact,
`azp` the previous hop, one exchange per hop per user, and refusals (claims challenge, missing
consent, outages) relayed to the client with the challenge it can act on and nothing of the
inner hosts.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator

import grpc
import pytest

import grpc_obo
from examples.gen.workspace.v1 import common_pb2, store_pb2_grpc, vault_pb2, vault_pb2_grpc
from examples.signin import sign_in
from examples.world import MFA_CLAIMS
from grpc_obo.devauthority import DevAuthority, User
from tests.chain.conftest import TIMEOUT, Chain

pytestmark = pytest.mark.slow


def trailer(error: grpc.aio.AioRpcError, name: str) -> str:
    return str(dict(error.trailing_metadata() or ()).get(name, ""))


def claims_of(error: grpc.aio.AioRpcError) -> str:
    header = trailer(error, "www-authenticate")
    assert 'error="insufficient_claims"' in header, header
    return base64.b64decode(header.split('claims="', 1)[1].split('"', 1)[0]).decode()


async def items(*documents: common_pb2.Document) -> AsyncIterator[common_pb2.Document]:
    for document in documents:
        yield document


# -- identity at every hop -------------------------------------------------------------------


async def test_every_rpc_kind_carries_the_user_to_every_hop(chain: Chain) -> None:
    alice = chain.authority.world.user("alice")
    ids = {name: chain.settings.app(name)["client_id"] for name in ("client", "original")}
    ids["downstream"] = chain.settings.app("downstream")["client_id"]
    token = chain.token("alice")
    md = chain.auth(token)

    uploaded = await chain.upload("alice", "a", "b", token=token)
    got = await chain.stub.GetDocument(
        common_pb2.GetDocumentRequest(id="a"), metadata=md, timeout=TIMEOUT
    )
    watched = await chain.watch(token, limit=2)
    edited = common_pb2.Document(id="a", body="a, v2", revision=got.revision)
    synced = [
        d async for d in chain.stub.SyncDocuments(items(edited), metadata=md, timeout=TIMEOUT)
    ]

    trails = [uploaded.trail, got.trail, *(d.trail for d in watched), *(d.trail for d in synced)]
    assert len(trails) == 1 + 1 + 2 + 1
    for trail in trails:
        assert [(s.service, s.client_id) for s in trail] == [
            ("vault", ids["downstream"]),  # azp: the previous hop, after each exchange
            ("store", ids["original"]),
            ("workspace", ids["client"]),
        ]
        assert {(s.oid, s.tid) for s in trail} == {(alice.oid, alice.tenant_id)}
        assert [list(s.scopes) for s in trail] == [
            ["Keys.Read"],
            ["Data.Read", "Data.Write"],
            ["access_as_user"],
        ]
    assert uploaded.stored == 2
    assert [d.id for d in watched] == ["a", "b"]
    assert (synced[0].revision, synced[0].body) == (2, "a, v2")
    assert got.key_id and got.key_id == synced[0].key_id  # sealed with alice's vault key
    # One exchange per hop for alice, whatever the number of calls and kinds.
    assert chain.exchanges("alice", by="original") == 1
    assert chain.exchanges("alice", by="downstream") == 1


async def test_a_user_of_the_second_tenant_signed_in_with_msal_reaches_the_vault(
    chain: Chain,
) -> None:
    carol = chain.authority.world.user("carol")  # Fabrikam: each exchange goes to her tenant
    token = await asyncio.to_thread(sign_in, chain.settings, "carol")
    summary = await chain.upload("carol", "x", token=token)
    assert {(s.oid, s.tid) for s in summary.trail} == {(carol.oid, carol.tenant_id)}


async def test_a_thousand_concurrent_first_calls_make_one_exchange_per_hop(chain: Chain) -> None:
    await chain.upload("alice", "doc", token=(token := chain.token("alice")))
    chain.authority.requests.clear()
    fresh = chain.token("alice")  # a new token: neither hop has exchanged it yet
    request = common_pb2.GetDocumentRequest(id="doc")
    results = await asyncio.wait_for(
        asyncio.gather(
            *(
                chain.stub.GetDocument(request, metadata=chain.auth(fresh), timeout=60)
                for _ in range(1000)
            )
        ),
        timeout=60,
    )
    assert len(results) == 1000
    assert chain.exchanges("alice", by="original") == 1
    assert chain.exchanges("alice", by="downstream") == 1
    assert token != fresh


async def test_users_never_get_each_others_documents_or_tokens(chain: Chain) -> None:
    world = chain.authority.world
    users = []
    for number in range(12):
        name = f"conc{number}-{id(chain)}@contoso.example"
        world.users.append(User(username=name, tenant_id=chain.authority.tenant_id))
        users.append(world.user(name))
    tokens = {user.oid: chain.token(user.username) for user in users}

    async def call(oid: str) -> tuple[str, set[str], str]:
        summary = await chain.upload(oid, "mine", token=tokens[oid])
        got = await chain.stub.GetDocument(
            common_pb2.GetDocumentRequest(id="mine"), metadata=chain.auth(tokens[oid])
        )
        return oid, {s.oid for s in summary.trail}, got.body

    calls = [call(oid) for _ in range(4) for oid in tokens]  # interleaved users
    results = await asyncio.wait_for(asyncio.gather(*calls), timeout=60)
    assert all(seen == {oid} and body == f"{oid}: mine" for oid, seen, body in results)
    assert chain.exchanges(by="original") == len(users)
    assert chain.exchanges(by="downstream") == len(users)


async def test_watch_streams_later_changes(chain: Chain) -> None:
    token = chain.token("bob")
    await chain.upload("bob", "first", token=token)
    call = chain.stub.WatchDocuments(
        common_pb2.WatchRequest(limit=2), metadata=chain.auth(token), timeout=TIMEOUT
    )
    first = await call.read()  # the snapshot arrived: the watch is open on the store
    await chain.upload("bob", "second", token=token)
    second = await call.read()
    assert [first.id, second.id] == ["first", "second"]


async def test_sync_answers_a_stale_revision_with_the_stores_copy(chain: Chain) -> None:
    token = chain.token("bob")
    await chain.upload("bob", "doc", token=token)  # revision 1
    stale = common_pb2.Document(id="doc", body="overwrite?", revision=0)
    synced = [
        d
        async for d in chain.stub.SyncDocuments(
            items(stale), metadata=chain.auth(token), timeout=TIMEOUT
        )
    ]
    assert (synced[0].revision, synced[0].body) == (1, "bob: doc")


# -- refusals at the first hop ---------------------------------------------------------------


async def test_bob_cannot_read_alices_document(chain: Chain) -> None:
    await chain.upload("alice", "plan")
    chain.authority.requests.clear()
    bob = chain.auth(chain.token("bob"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await chain.stub.GetDocument(common_pb2.GetDocumentRequest(id="plan"), metadata=bob)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND  # bob's own shelf has no "plan"

    # A request naming alice as the owner is refused by the Workspace before any exchange...
    chain.authority.requests.clear()
    claim = common_pb2.GetDocumentRequest(id="plan", owner=chain.owner("alice"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await chain.stub.GetDocument(claim, metadata=bob)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await chain.stub.WatchDocuments(
            common_pb2.WatchRequest(owner=chain.owner("alice")), metadata=bob
        ).read()
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert chain.exchanges() == 0
    # ... and by the store too, which trusts the Workspace no more than anyone.
    store_token = chain.authority.mint_user_token("bob", audience="downstream", client="original")
    async with grpc.aio.insecure_channel(chain.running.store) as direct:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await store_pb2_grpc.DocumentStoreStub(direct).GetDocument(
                claim, metadata=chain.auth(store_token)
            )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Naming oneself is fine.
    mine = common_pb2.GetDocumentRequest(id="plan", owner=chain.owner("alice"))
    got = await chain.stub.GetDocument(mine, metadata=chain.auth(chain.token("alice")))
    assert got.body == "alice: plan"


async def test_expired_user_token_is_refused_before_any_exchange(chain: Chain) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await chain.upload("alice", "x", token=chain.token("alice", lifetime=-600))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert chain.exchanges() == 0


async def test_a_token_is_refused_by_any_api_it_is_not_for(chain: Chain) -> None:
    world_token = chain.token("alice")  # for the Workspace
    store_token = chain.authority.mint_user_token("alice", audience="downstream", client="original")
    async with (
        grpc.aio.insecure_channel(chain.running.store) as store,
        grpc.aio.insecure_channel(chain.running.vault) as vault,
    ):
        for call in (
            store_pb2_grpc.DocumentStoreStub(store).GetDocument(
                common_pb2.GetDocumentRequest(id="x"), metadata=chain.auth(world_token)
            ),
            vault_pb2_grpc.KeyVaultStub(vault).GetDataKey(
                vault_pb2.DataKeyRequest(), metadata=chain.auth(store_token)
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert 'error="invalid_token"' in trailer(raised.value, "www-authenticate")


async def test_an_app_only_token_is_refused_on_user_operations(chain: Chain) -> None:
    daemon = chain.settings.app("daemon")
    client = grpc_obo.ConfidentialClient(
        client_id=daemon["client_id"],
        tenant=chain.authority.tenant_id,
        credential=grpc_obo.ClientCredential.secret(daemon["secrets"][0]),
        authority_host=chain.authority.base_url,
        ca_file=str(chain.authority.ca_file),
    )
    scope = f"{chain.settings.app('downstream')['app_id_uri']}/.default"
    async with (
        grpc_obo.AppOnly(client) as app_only,
        app_only.channel(chain.running.store, scopes=[scope]) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await store_pb2_grpc.DocumentStoreStub(channel).GetDocument(
                common_pb2.GetDocumentRequest(id="x")
            )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert chain.authority.requests.count(grant="client_credentials") == 1


async def test_the_obo_channel_outside_a_call_is_a_clear_error(chain: Chain) -> None:
    scopes = [chain.settings.scope("downstream", "Data.Read")]
    async with chain.running.workspace_obo.channel(chain.running.store, scopes=scopes) as channel:
        with pytest.raises(grpc_obo.MissingIdentityError):
            await store_pb2_grpc.DocumentStoreStub(channel).GetDocument(
                common_pb2.GetDocumentRequest(id="x")
            )
    assert chain.exchanges() == 0


# -- refusals relayed across two middle tiers (issue 11, point 1) ----------------------------


async def test_mfa_challenge_at_the_vault_reaches_the_client_who_answers_it(chain: Chain) -> None:
    """dave's exchange for the vault (two hops away) needs MFA: the challenge travels back
    through the store and the Workspace intact, and the answered token works end to end."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await chain.watch(chain.token("dave"))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert claims_of(raised.value) == MFA_CLAIMS
    assert "127.0.0.1" not in (raised.value.details() or "")  # no inner host in the details
    assert chain.exchanges("dave", by="original") == 1  # the first hop's exchange worked

    # The client app signs dave in again with the claims (MFA); the same calls now succeed.
    answered = await asyncio.to_thread(sign_in, chain.settings, "dave", claims=MFA_CLAIMS)
    summary = await chain.upload("dave", "plan", token=answered)
    assert {s.oid for s in summary.trail} == {chain.authority.world.user("dave").oid}


async def test_missing_consent_at_the_second_hop_is_relayed_as_permission_denied(
    chain: Chain,
) -> None:
    with (
        chain.authority.world.without_consent("downstream", "vault"),
        pytest.raises(grpc.aio.AioRpcError) as raised,
    ):
        await chain.watch(chain.token("alice"))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    header = trailer(raised.value, "www-authenticate")
    assert 'error="insufficient_scope"' in header and "consent" in header
    assert chain.exchanges("alice", by="original") == 1


async def test_missing_consent_at_the_first_hop_is_permission_denied(chain: Chain) -> None:
    with (
        chain.authority.world.without_consent("original", "downstream"),
        pytest.raises(grpc.aio.AioRpcError) as raised,
    ):
        await chain.watch(chain.token("alice"))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert 'error="insufficient_scope"' in trailer(raised.value, "www-authenticate")


async def test_authority_down_for_the_second_hop_is_unavailable_at_the_client(
    chain: Chain,
) -> None:
    store = chain.authority.world.app("downstream").client_id
    chain.authority.faults.fail(503, times=None, grant="obo", client_id=store)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await chain.watch(chain.token("bob"))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "127.0.0.1" not in (raised.value.details() or "")


async def test_an_unreachable_vault_is_unavailable_at_the_client_without_its_address(
    chain: Chain,
) -> None:
    await chain.running.stop_service("vault")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await chain.watch(chain.token("bob"))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    details = raised.value.details() or ""
    assert "127.0.0.1" not in details and chain.running.vault not in details


# -- secrets ---------------------------------------------------------------------------------


async def test_no_token_or_secret_reaches_a_log_line(
    chain: Chain, caplog: pytest.LogCaptureFixture, example_authority: DevAuthority
) -> None:
    caplog.set_level(logging.DEBUG)
    token = chain.token("alice")
    await chain.upload("alice", "x", token=token)
    with pytest.raises(grpc.aio.AioRpcError):
        await chain.upload("alice", "x", token=token[:-4] + "AAAA")
    with pytest.raises(grpc.aio.AioRpcError):
        await chain.watch(chain.token("dave"))  # a claims challenge, relayed twice
    secrets = [
        token,
        *token.split("."),
        *(chain.settings.app(name)["secrets"][0] for name in ("original", "downstream")),
    ]
    text = "\n".join(r.getMessage() + repr(r.args) for r in caplog.records)
    for secret in secrets:
        assert secret not in text
    assert "eyJ" not in text
