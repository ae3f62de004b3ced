"""A chain of Echo APIs on grpc.aio (port 0), each validating its caller and calling the next
On-Behalf-Of the user: what a world of your own is for, built from the public API only.

Each hop answers `principal` = the trail of what every API saw, innermost first:
`"<api> <tid>/<oid> azp=<client id> scp=<scopes>"` joined by " | ".
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import grpc
import grpc.aio

import grpc_obo
from tests.gen.grpc_obo.testing.v1 import echo_pb2, echo_pb2_grpc

TIMEOUT = 10.0


@dataclass(frozen=True)
class Hop:
    """One API of the chain: its name, how it validates, what it needs, how it calls on."""

    name: str
    options: grpc_obo.ValidatorOptions
    scopes: frozenset[str]
    client: grpc_obo.ConfidentialClient | None = None
    """The API's own credentials, when it calls the next hop."""
    next_scopes: Sequence[str] = ()


class _Hop(echo_pb2_grpc.EchoServicer):
    def __init__(self, name: str, call_next: Callable[[str], object] | None) -> None:
        self.name = name
        self.call_next = call_next

    async def UnaryUnary(self, request, context):  # type: ignore[no-untyped-def]
        me = grpc_obo.current_identity()
        assert me is not None
        seen = f"{self.name} {me.principal} azp={me.client_id} scp={','.join(sorted(me.scopes))}"
        if self.call_next is None:
            return echo_pb2.EchoResponse(text=request.text, principal=seen)
        inner = await self.call_next(request.text)  # type: ignore[misc]
        return echo_pb2.EchoResponse(text=request.text, principal=f"{inner} | {seen}")


@contextlib.asynccontextmanager
async def echo_chain(hops: Sequence[Hop]) -> AsyncIterator[str]:
    """Serve the hops (the last one first) and yield the first hop's address."""
    async with contextlib.AsyncExitStack() as stack:
        target: str | None = None
        for hop in reversed(hops):
            validator = await stack.enter_async_context(grpc_obo.TokenValidator(hop.options))
            call_next = None
            if target is not None:
                assert hop.client is not None
                obo = await stack.enter_async_context(grpc_obo.OnBehalfOf(hop.client))
                channel = await stack.enter_async_context(
                    obo.channel(target, scopes=list(hop.next_scopes))
                )
                stub = echo_pb2_grpc.EchoStub(channel)

                async def call_next(text: str, stub: echo_pb2_grpc.EchoStub = stub) -> str:
                    reply = await stub.UnaryUnary(echo_pb2.EchoRequest(text=text), timeout=TIMEOUT)
                    return str(reply.principal)

            server = grpc.aio.server(
                interceptors=[
                    grpc_obo.server_interceptor(
                        validator,
                        policy=grpc_obo.Policy(default=grpc_obo.MethodPolicy(scopes=hop.scopes)),
                    )
                ]
            )
            echo_pb2_grpc.add_EchoServicer_to_server(_Hop(hop.name, call_next), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            stack.push_async_callback(server.stop, 0.5)
            target = f"127.0.0.1:{port}"
        assert target is not None
        yield target


async def call(target: str, token: str, text: str = "hello") -> str:
    """One call into the chain as the holder of `token`; the trail it answers."""
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await echo_pb2_grpc.EchoStub(channel).UnaryUnary(
            echo_pb2.EchoRequest(text=text),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=TIMEOUT,
        )
    return str(reply.principal)
