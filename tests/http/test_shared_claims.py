"""One claims memory per `OnBehalfOf`: a claims challenge met on one transport (an HTTP downstream,
a gRPC channel) goes into the next exchange for that user and scope set on the other, so a
middle tier that calls both kinds of API for a user asks the authority for the claims once,
whichever API asked first."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest

import grpc_obo
from grpc_obo.devauthority import DevAuthority
from tests.gen.grpc_obo.testing.v1 import echo_pb2, echo_pb2_grpc
from tests.http.conftest import Users
from tests.http.downstream import Downstream, claims_json

# A CAE challenge's claims, as the middle tier remembers them (filtered, compact).
CLAIMS = claims_json(nbf={"essential": True, "value": "1700000000"})
CHALLENGE = (
    f'Bearer error="insufficient_claims", claims="{base64.b64encode(CLAIMS.encode()).decode()}"'
)


class Challenging(echo_pb2_grpc.EchoServicer):
    """A gRPC downstream that answers with a claims challenge when told to."""

    def __init__(self) -> None:
        self.challenge_next = False

    async def UnaryUnary(self, request: Any, context: Any) -> Any:
        if self.challenge_next:
            self.challenge_next = False
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "claims needed", (("www-authenticate", CHALLENGE),)
            )
        return echo_pb2.EchoResponse(text="ok")


@pytest.fixture
async def grpc_downstream(
    downstream_validator: grpc_obo.TokenValidator,
) -> AsyncIterator[tuple[str, Challenging]]:
    servicer = Challenging()
    server = grpc.aio.server(interceptors=[grpc_obo.server_interceptor(downstream_validator)])
    echo_pb2_grpc.add_EchoServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", servicer
    await server.stop(None)


async def test_an_http_claims_challenge_goes_into_the_grpc_channels_next_exchange(
    grpc_obo_authority: DevAuthority,
    obo: grpc_obo.OnBehalfOf,
    users: Users,
    read: str,
    downstream: Downstream,
    grpc_downstream: tuple[str, Challenging],
) -> None:
    alice = await users.identity("alice")
    target, _ = grpc_downstream
    async with (
        httpx.AsyncClient(auth=obo.http_auth(scopes=[read])) as http,
        obo.channel(target, scopes=[read]) as channel,
    ):
        with grpc_obo.use_identity(alice):
            assert (await http.get(f"{downstream.url}/whoami")).status_code == 200
            downstream.challenge_next(1, CLAIMS)
            # The exchange that would meet the claims fails (the authority is down for both
            # attempts): they stay remembered for the user's next exchange.
            grpc_obo_authority.faults.fail(503, times=2, grant="obo")
            with pytest.raises(grpc_obo.AuthorityUnavailableError):
                await http.get(f"{downstream.url}/whoami")
            await echo_pb2_grpc.EchoStub(channel).UnaryUnary(echo_pb2.EchoRequest())
    # The gRPC call's exchange asked for the claims: its token is cached under their key.
    assert await obo.cache.get(obo.cache_key([read], identity=alice, claims=CLAIMS)) is not None


async def test_a_grpc_claims_challenge_goes_into_the_http_auths_next_exchange(
    obo: grpc_obo.OnBehalfOf,
    users: Users,
    read: str,
    downstream: Downstream,
    grpc_downstream: tuple[str, Challenging],
) -> None:
    alice = await users.identity("alice")
    target, servicer = grpc_downstream
    async with (
        httpx.AsyncClient(auth=obo.http_auth(scopes=[read])) as http,
        obo.channel(target, scopes=[read]) as channel,
    ):
        stub = echo_pb2_grpc.EchoStub(channel)
        with grpc_obo.use_identity(alice):
            await stub.UnaryUnary(echo_pb2.EchoRequest())
            servicer.challenge_next = True
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.UnaryUnary(echo_pb2.EchoRequest())
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert (await http.get(f"{downstream.url}/whoami")).status_code == 200
    assert await obo.cache.get(obo.cache_key([read], identity=alice, claims=CLAIMS)) is not None
