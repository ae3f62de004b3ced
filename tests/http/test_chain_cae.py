"""CAE closed across a mixed chain, on real servers:

    client app ──gRPC──▶ Original ──gRPC (OBO)──▶ Downstream ──HTTPS (OBO)──▶ Graph-like API

An administrator revokes the user's sessions; Graph answers the Downstream API's cached CAE
token with its claims challenge; the Downstream evicts, exchanges again with the claims and is
refused (the assertion predates the revocation), so its call ends UNAUTHENTICATED with a
rebuilt claims challenge, which the Original relays: the client app two hops up gets
UNAUTHENTICATED with usable claims, signs in again with them, and only then succeeds.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest

import grpc_obo
from grpc_obo.devauthority import DevAuthority
from tests.gen.grpc_obo.testing.v1 import echo_pb2, echo_pb2_grpc
from tests.http.chain import Chain, OriginalEcho, serve
from tests.http.conftest import FAST, SteppingClock, confidential, options_for

pytestmark = pytest.mark.filterwarnings(
    "ignore:This API has been deprecated for public client flows:DeprecationWarning"
)


class DownstreamEcho(echo_pb2_grpc.EchoServicer):
    def __init__(self, graph: httpx.AsyncClient, graph_url: str) -> None:
        self._graph = graph
        self._graph_url = graph_url

    async def UnaryUnary(self, request: Any, context: Any) -> Any:
        me = await self._graph.get(f"{self._graph_url}/me")
        me.raise_for_status()
        return echo_pb2.EchoResponse(text=me.json()["displayName"])


@pytest.fixture
async def chain(authority: DevAuthority) -> AsyncIterator[Chain]:
    async with (
        grpc_obo.TokenValidator(options_for(authority, "original")) as original_validator,
        grpc_obo.TokenValidator(options_for(authority, "downstream")) as downstream_validator,
        grpc_obo.OnBehalfOf(confidential(authority, "original"), retry=FAST) as original_obo,
        grpc_obo.OnBehalfOf(confidential(authority, "downstream"), retry=FAST) as downstream_obo,
        httpx.AsyncClient(
            auth=downstream_obo.http_auth(scopes=["User.Read"]),
            verify=authority.client_ssl_context(),
        ) as graph,
    ):
        downstream, downstream_address = await serve(
            DownstreamEcho(graph, authority.graph_url), downstream_validator
        )
        data_read = f"{authority.world.app('downstream').app_id_uri}/Data.Read"
        channel = original_obo.channel(downstream_address, scopes=[data_read])
        original, original_address = await serve(
            OriginalEcho(echo_pb2_grpc.EchoStub(channel)), original_validator
        )
        client_channel = grpc.aio.insecure_channel(original_address)
        try:
            yield Chain(authority, echo_pb2_grpc.EchoStub(client_channel))
        finally:
            await client_channel.close()
            await original.stop(None)
            await channel.close()
            await downstream.stop(None)


async def test_a_revoked_user_gets_the_cae_challenge_two_hops_up_and_only_signing_in_helps(
    chain: Chain, clock: SteppingClock
) -> None:
    authority = chain.authority
    token = chain.sign_in()
    assert (await chain.call(token)).text == "Alice Example"

    clock.advance(5)
    revoked_at = math.ceil(authority.world.revoke_sessions("alice").tokens_valid_from)
    for _ in range(2):  # refused every time, not only once
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await chain.call(token)
        error = refused.value
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "graph" not in (error.details() or "").lower()  # no downstream text
        challenge = dict(error.trailing_metadata() or ())["www-authenticate"]
        assert challenge.startswith('Bearer error="insufficient_claims"')
        claims = base64.b64decode(re.search(r'claims="([^"]+)"', challenge).group(1)).decode()
        nbf = {"access_token": {"nbf": {"essential": True, "value": str(revoked_at)}}}
        assert json.loads(claims) == nbf
    assert authority.requests.matching(grant="obo", status=400)[-1].error_code == 50173

    again = chain.sign_in(claims=claims)  # the client app answers the challenge
    assert (await chain.call(again)).text == "Alice Example"
