"""Step-up by Conditional Access authentication context: `requires(auth_context="c1")`.

A token whose sign-in lacks `c1` in `acrs` is refused with UNAUTHENTICATED and the claims
challenge of Microsoft's authentication context guide; the dev authority issues `acrs` for a
sign-in that carries those claims; across hops, a downstream's step-up reaches the client app,
which signs in again, and the middle tier's next exchange carries the context on.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

import grpc_obo
from grpc_obo import AuthContextRequiredError, ConfigurationError, MethodPolicy
from grpc_obo.devauthority import DevAuthority
from tests.gen.grpc_obo.testing.v1 import echo_pb2, echo_pb2_grpc
from tests.http.chain import TIMEOUT, Chain, OriginalEcho, serve
from tests.http.conftest import FAST, Users, confidential, options_for

pytestmark = pytest.mark.filterwarnings(
    "ignore:This API has been deprecated for public client flows:DeprecationWarning"
)
C1 = {"access_token": {"acrs": {"essential": True, "value": "c1"}}}


def claims_of(challenge: str) -> Any:
    assert challenge.startswith('Bearer error="insufficient_claims"')
    found = re.search(r'claims="([^"]+)"', challenge)
    assert found is not None
    return json.loads(base64.b64decode(found.group(1)))


async def test_the_rule_refuses_a_sign_in_without_the_context_with_its_claims(
    users: Users,
) -> None:
    rule = MethodPolicy(auth_context="c1")
    without = await users.identity("alice")
    with_c1 = await users.identity("alice", claims={"acrs": ["c1"]})
    with_c2 = await users.identity("alice", claims={"acrs": ["c2"]})
    rule.check(with_c1)
    for identity in (without, with_c2):
        with pytest.raises(AuthContextRequiredError) as refused:
            rule.check(identity)
        assert grpc_obo.status_for(refused.value) is grpc.StatusCode.UNAUTHENTICATED
        challenge = grpc_obo.www_authenticate_for(refused.value) or ""
        assert claims_of(challenge) == C1


@pytest.mark.parametrize(
    "options",
    [
        {"auth_context": "c0"},
        {"auth_context": "C1"},
        {"auth_context": "c1 "},
        {"auth_context": "c100"},
        {"auth_context": "c1", "public": True},
        {"auth_context": "c1", "callers": grpc_obo.Callers.APPS, "app_roles": ["x"]},
    ],
)
def test_a_bad_auth_context_rule_fails_at_start_up(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        MethodPolicy(**options)


class Sensitive(echo_pb2_grpc.EchoServicer):
    @grpc_obo.requires(auth_context="c1")
    async def UnaryUnary(self, request: Any, context: Any) -> Any:
        identity = grpc_obo.current_identity()
        assert identity is not None
        return echo_pb2.EchoResponse(text=",".join(sorted(identity.auth_contexts)))


@pytest.fixture
async def chain(authority: DevAuthority) -> AsyncIterator[Chain]:
    """client app -> Original (no rule of its own) -> Downstream (needs c1)."""
    async with (
        grpc_obo.TokenValidator(options_for(authority, "original")) as original_validator,
        grpc_obo.TokenValidator(options_for(authority, "downstream")) as downstream_validator,
        grpc_obo.OnBehalfOf(confidential(authority, "original"), retry=FAST) as obo,
    ):
        downstream, downstream_address = await serve(Sensitive(), downstream_validator)
        data_read = f"{authority.world.app('downstream').app_id_uri}/Data.Read"
        channel = obo.channel(downstream_address, scopes=[data_read])
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


async def test_a_downstreams_step_up_reaches_the_client_app_and_a_new_sign_in_meets_it(
    chain: Chain,
) -> None:
    token = chain.sign_in()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await chain.call(token)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    challenge = dict(refused.value.trailing_metadata() or ())["www-authenticate"]
    claims = claims_of(challenge)
    assert claims == C1

    # The client app signs in again with the claims: the authority issues acrs=c1, the
    # middle tier exchanges again (it remembered the claims) and passes the context on.
    stepped_up = chain.sign_in(claims=json.dumps(claims))
    assert (await chain.call(stepped_up)).text == "c1"
    obo = chain.authority.requests.matching(grant="obo", ok=True)
    assert len(obo) == 2  # the first sign-in's exchange, then one for the stepped-up token


async def test_the_authority_never_adds_a_context_the_sign_in_did_not_meet(
    authority: DevAuthority, validator: grpc_obo.TokenValidator
) -> None:
    """On-Behalf-Of asked for c1 with an assertion without it: interaction required."""
    alice = await validator.validate(
        authority.mint_user_token("alice", audience="original", scopes=["access_as_user"])
    )
    data_read = f"{authority.world.app('downstream').app_id_uri}/Data.Read"
    async with grpc_obo.OnBehalfOf(confidential(authority), retry=FAST) as obo:
        with grpc_obo.use_identity(alice), pytest.raises(grpc_obo.ClaimsChallengeError) as caught:
            await obo.acquire([data_read], claims=json.dumps(C1), timeout=TIMEOUT)
    assert json.loads(caught.value.claims or "") == C1
    assert caught.value.error == "interaction_required"


class SensitiveStreams(echo_pb2_grpc.EchoServicer):
    @grpc_obo.requires(auth_context="c1")
    async def UnaryUnary(self, request: Any, context: Any) -> Any:
        return echo_pb2.EchoResponse(text="ok")

    @grpc_obo.requires(auth_context="c1")
    async def UnaryStream(self, request: Any, context: Any) -> Any:
        yield echo_pb2.EchoResponse(text="ok")


@pytest.mark.parametrize("otel", ["before", "after"])
async def test_the_step_up_holds_with_the_instrumentation_before_or_after(
    original_validator: grpc_obo.TokenValidator, users: Users, otel: str
) -> None:
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    ours = grpc_obo.server_interceptor(original_validator)
    chain = (
        [aio_server_interceptor(), ours] if otel == "before" else [ours, aio_server_interceptor()]
    )
    server = grpc.aio.server(interceptors=chain)
    echo_pb2_grpc.add_EchoServicer_to_server(SensitiveStreams(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            plain = (("authorization", f"Bearer {users.token()}"),)
            stepped = (("authorization", f"Bearer {users.token(claims={'acrs': ['c1']})}"),)
            request = echo_pb2.EchoRequest(text="x")
            calls = (
                lambda md: stub.UnaryUnary(request, metadata=md, timeout=TIMEOUT),
                lambda md: _first(stub.UnaryStream(request, metadata=md, timeout=TIMEOUT)),
            )
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call(plain)
                assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
                trailing = dict(refused.value.trailing_metadata() or ())
                assert claims_of(trailing["www-authenticate"]) == C1
                assert (await call(stepped)).text == "ok"
    finally:
        await server.stop(None)


async def _first(call: Any) -> Any:
    async for item in call:
        return item
    raise AssertionError("no response")
