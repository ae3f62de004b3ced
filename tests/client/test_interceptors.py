"""The client interceptors on a real channel: metadata, per-method scopes, deadlines, eviction.

The downstream is a real grpc.aio Echo server behind the real server interceptor; tokens come
from the dev authority through real MSAL On-Behalf-Of exchanges.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import jwt
import pytest

import grpc_obo
from examples.settings import Settings
from grpc_obo.devauthority import DevAuthority
from tests.gen.grpc_obo.testing.v1 import echo_pb2, echo_pb2_grpc

FAST = grpc_obo.RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05, budget=5.0)


class MetadataEcho(echo_pb2_grpc.EchoServicer):
    """Answers with the metadata keys it got and the token's `scp`; can demand claims once."""

    def __init__(self) -> None:
        self.challenge_next: str | None = None

    async def _reply(self, context: Any) -> echo_pb2.EchoResponse:
        if self.challenge_next is not None:
            header, self.challenge_next = self.challenge_next, None
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "claims needed",
                (("www-authenticate", header),),
            )
        metadata = context.invocation_metadata()
        keys = sorted(k for k, _ in metadata if not k.startswith(":"))
        authorization = [v for k, v in metadata if k == "authorization"]
        identity = grpc_obo.current_identity()
        assert identity is not None
        scopes = " ".join(sorted(identity.scopes))
        return echo_pb2.EchoResponse(
            text=f"{','.join(keys)}|{len(authorization)}|{scopes}", principal=identity.principal
        )

    async def UnaryUnary(self, request: Any, context: Any) -> Any:
        return await self._reply(context)

    async def UnaryStream(self, request: Any, context: Any) -> AsyncIterator[Any]:
        yield await self._reply(context)


@pytest.fixture
async def world(grpc_obo_authority: DevAuthority) -> AsyncIterator[dict[str, Any]]:
    settings = Settings(grpc_obo_authority.summary())
    down_validator = grpc_obo.TokenValidator(settings.validator_options("downstream"))
    orig_validator = grpc_obo.TokenValidator(settings.validator_options("original"))
    servicer = MetadataEcho()
    server = grpc.aio.server(
        interceptors=[
            grpc_obo.server_interceptor(
                down_validator,
                policy=grpc_obo.Policy(default=grpc_obo.MethodPolicy(scopes={"Data.Read"})),
            )
        ]
    )
    echo_pb2_grpc.add_EchoServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    obo = grpc_obo.OnBehalfOf(settings.confidential_client("original"), retry=FAST)
    alice = await orig_validator.validate(
        grpc_obo_authority.mint_user_token("alice", scopes=["access_as_user"])
    )
    try:
        yield {
            "authority": grpc_obo_authority,
            "settings": settings,
            "servicer": servicer,
            "target": f"127.0.0.1:{port}",
            "obo": obo,
            "alice": alice,
            "read": settings.scope("downstream", "Data.Read"),
        }
    finally:
        await obo.close()
        await server.stop(0.5)
        await down_validator.close()
        await orig_validator.close()


def channel(world: dict[str, Any], **kwargs: Any) -> grpc.aio.Channel:
    interceptors = world["obo"].client_interceptors(**{"scopes": [world["read"]], **kwargs})
    return grpc.aio.insecure_channel(world["target"], interceptors=interceptors)


async def test_metadata_is_kept_and_authorization_replaced(world: dict[str, Any]) -> None:
    metadata = (
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("x-request-id", "r-1"),
        # The incoming token forwarded by mistake: replaced, never sent alongside ours.
        ("authorization", f"Bearer {world['alice'].token.reveal()}"),
    )
    with grpc_obo.use_identity(world["alice"]):
        async with channel(world) as ch:
            reply = await echo_pb2_grpc.EchoStub(ch).UnaryUnary(
                echo_pb2.EchoRequest(), metadata=metadata
            )
    keys, authorizations, scopes = reply.text.split("|")
    assert {"traceparent", "x-request-id", "authorization"} <= set(keys.split(","))
    assert authorizations == "1"
    assert scopes == "Data.Read"
    assert reply.principal == world["alice"].principal


async def test_per_method_scopes_override_the_default(world: dict[str, Any]) -> None:
    default = f"{world['settings'].app('downstream')['app_id_uri']}/.default"
    unary_stream = "/grpc_obo.testing.v1.Echo/UnaryStream"
    with grpc_obo.use_identity(world["alice"]):
        async with channel(world, method_scopes={unary_stream: [default]}) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)
            await stub.UnaryUnary(echo_pb2.EchoRequest())
            [streamed] = [r async for r in stub.UnaryStream(echo_pb2.EchoRequest())]
    assert streamed.principal == world["alice"].principal
    asked = [e.scopes for e in world["authority"].requests.entries if e.grant == "obo"]
    assert [s for s in asked if world["read"] in s]
    assert [s for s in asked if default in s]
    assert len(asked) == 2  # one exchange per scope set


async def test_a_claims_challenge_from_downstream_evicts_the_cached_token(
    world: dict[str, Any],
) -> None:
    authority: DevAuthority = world["authority"]
    with grpc_obo.use_identity(world["alice"]):
        async with channel(world) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)
            await stub.UnaryUnary(echo_pb2.EchoRequest())
            await stub.UnaryUnary(echo_pb2.EchoRequest())
            assert authority.requests.count(grant="obo") == 1

            world[
                "servicer"
            ].challenge_next = (
                'Bearer error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnt9fQ=="'
            )
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.UnaryUnary(echo_pb2.EchoRequest())
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            await stub.UnaryUnary(echo_pb2.EchoRequest())
            assert authority.requests.count(grant="obo") == 2

            # A plain UNAUTHENTICATED without a challenge keeps the cached token.
            world["servicer"].challenge_next = 'Bearer error="invalid_token"'
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.UnaryUnary(echo_pb2.EchoRequest())
            await stub.UnaryUnary(echo_pb2.EchoRequest())
            assert authority.requests.count(grant="obo") == 2


async def test_the_calls_deadline_bounds_the_exchange(world: dict[str, Any]) -> None:
    world["authority"].faults.latency = 2.0
    with grpc_obo.use_identity(world["alice"]):
        async with channel(world) as ch:
            started = time.monotonic()
            with pytest.raises(grpc_obo.AuthorityUnavailableError):
                await echo_pb2_grpc.EchoStub(ch).UnaryUnary(echo_pb2.EchoRequest(), timeout=0.3)
            assert time.monotonic() - started < 1.5
    world["authority"].faults.latency = 0.0


async def test_the_token_sent_is_for_the_downstream_api(world: dict[str, Any]) -> None:
    with grpc_obo.use_identity(world["alice"]):
        token = await world["obo"].acquire([world["read"]])
    claims = jwt.decode(token.reveal(), options={"verify_signature": False})
    assert claims["aud"] == world["settings"].app("downstream")["client_id"]
    assert claims["azp"] == world["settings"].app("original")["client_id"]
    assert (claims["oid"], claims["tid"]) == (world["alice"].oid, world["alice"].tid)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scopes": []},
        {"scopes": "api://x/Data.Read"},
        {"scopes": ["api://x/Data.Read"], "method_scopes": {"Echo/UnaryUnary": ["s"]}},
        {"scopes": ["api://x/Data.Read"], "method_scopes": {"/pkg.Svc/M": []}},
    ],
)
def test_bad_interceptor_configuration_fails_at_construction(
    world: dict[str, Any], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(grpc_obo.ConfigurationError):
        world["obo"].client_interceptors(**kwargs)


def test_one_interceptor_per_arity(world: dict[str, Any]) -> None:
    interceptors = world["obo"].client_interceptors(scopes=[world["read"]])
    kinds = [
        grpc.aio.UnaryUnaryClientInterceptor,
        grpc.aio.UnaryStreamClientInterceptor,
        grpc.aio.StreamUnaryClientInterceptor,
        grpc.aio.StreamStreamClientInterceptor,
    ]
    # grpc.aio files an object under the first interface it matches: each must match one only.
    for interceptor, kind in zip(interceptors, kinds, strict=True):
        assert [k for k in kinds if isinstance(interceptor, k)] == [kind]
