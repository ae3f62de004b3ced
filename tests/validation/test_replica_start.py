"""A replica starting under load (issue 23): a new server with no keys yet receives 1,000
users' first calls at once. Every call is served (none fails while the keys are fetched) and
the authority sees exactly one discovery and one JWKS request. No timings here: the latencies
are measured by benchmarks/replica_bench.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from grpc_obo import TokenValidator, server_interceptor
from grpc_obo.devauthority import DevAuthority
from grpc_obo.devauthority._registrations import User
from tests.gen.grpc_obo.testing.v1 import echo_pb2, echo_pb2_grpc
from tests.server.echo import AsyncEcho
from tests.validation.devtokens import dev_options

USERS = 1_000


@pytest.fixture
async def new_replica(
    grpc_obo_private_authority: DevAuthority,
) -> AsyncIterator[tuple[DevAuthority, echo_pb2_grpc.EchoStub]]:
    """A fresh server behind grpc_obo whose validator has fetched nothing yet."""
    authority = grpc_obo_private_authority
    async with TokenValidator(dev_options(authority)) as validator:
        server = grpc.aio.server(interceptors=[server_interceptor(validator)])
        echo_pb2_grpc.add_EchoServicer_to_server(AsyncEcho(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield authority, echo_pb2_grpc.EchoStub(channel)
        finally:
            await server.stop(None)


async def test_a_thousand_first_calls_on_a_new_replica_all_served_with_one_key_fetch(
    new_replica: tuple[DevAuthority, echo_pb2_grpc.EchoStub],
) -> None:
    authority, stub = new_replica
    tenant = authority.world.home_tenant.id
    users = [
        User(username=f"starter{i:04d}@contoso.example", tenant_id=tenant, display_name=f"S {i}")
        for i in range(USERS)
    ]
    authority.world.users.extend(users)
    tokens = [authority.mint_user_token(user.username) for user in users]
    assert len(set(tokens)) == USERS
    assert authority.requests.count(endpoint="jwks") == 0

    async def call(token: str) -> str:
        reply = await stub.UnaryUnary(
            echo_pb2.EchoRequest(text="hi"),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=120,
        )
        return str(reply.principal)

    outcomes = await asyncio.gather(*(call(t) for t in tokens), return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert not failed, f"{len(failed)} calls failed: {sorted({repr(f)[:80] for f in failed})}"
    # Each call ran as its own user.
    assert {principal.rpartition("/")[2] for principal in outcomes} == {u.oid for u in users}
    assert authority.requests.count(endpoint="discovery") == 1
    assert authority.requests.count(endpoint="jwks") == 1
