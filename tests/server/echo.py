"""Echo servicers for the server tests: all four RPC kinds in three handler styles.

Every response carries the principal the handler saw in `current_identity()` at that moment, so
tests can check which identity the handler ran with. A request with text "abort" makes the
handler abort the call itself (FAILED_PRECONDITION), to check the interceptor never swallows it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import grpc.aio

from grpc_obo import Callers, current_identity, requires
from tests.gen.grpc_obo.testing.v1 import echo_pb2, echo_pb2_grpc

ABORT_DETAILS = "the handler said no"


def seen() -> str:
    identity = current_identity()
    return identity.principal if identity is not None else ""


def reply(text: str) -> echo_pb2.EchoResponse:
    return echo_pb2.EchoResponse(text=text, principal=seen())


class AsyncEcho(echo_pb2_grpc.EchoServicer):
    """Coroutines for single responses, async generators for streams."""

    async def UnaryUnary(self, request, context):
        if request.text == "abort":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, ABORT_DETAILS)
        before = seen()
        await asyncio.sleep(0)  # let other calls run in between
        await asyncio.sleep(0)
        return echo_pb2.EchoResponse(
            text=request.text, principal=before if seen() == before else "MISMATCH"
        )

    async def UnaryStream(self, request, context) -> AsyncIterator[echo_pb2.EchoResponse]:
        for i in range(max(request.count, 1)):
            if request.text == "abort" and i == 1:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, ABORT_DETAILS)
            await asyncio.sleep(0)
            yield reply(f"{request.text}-{i}")

    async def StreamUnary(self, request_iterator, context):
        texts, principals = [], set()
        async for request in request_iterator:
            if request.text == "abort":
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, ABORT_DETAILS)
            texts.append(request.text)
            principals.add(seen())
        principals.add(seen())
        return echo_pb2.EchoResponse(
            text="+".join(texts), principal=principals.pop() if len(principals) == 1 else "MIXED"
        )

    async def StreamStream(self, request_iterator, context):
        async for request in request_iterator:
            if request.text == "abort":
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, ABORT_DETAILS)
            yield reply(request.text)


class WriterEcho(AsyncEcho):
    """Streaming responses as coroutines that call `context.write()` and return None."""

    async def UnaryStream(self, request, context) -> None:
        for i in range(max(request.count, 1)):
            if request.text == "abort" and i == 1:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, ABORT_DETAILS)
            await context.write(reply(f"{request.text}-{i}"))

    async def StreamStream(self, request_iterator, context) -> None:
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                return
            if request.text == "abort":
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, ABORT_DETAILS)
            await context.write(reply(request.text))


class SyncEcho(echo_pb2_grpc.EchoServicer):
    """Plain functions and generators: grpc.aio runs them in its thread pool."""

    def UnaryUnary(self, request, context):
        if request.text == "abort":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, ABORT_DETAILS)
        return reply(request.text)

    def UnaryStream(self, request, context) -> Iterator[echo_pb2.EchoResponse]:
        for i in range(max(request.count, 1)):
            if request.text == "abort" and i == 1:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, ABORT_DETAILS)
            yield reply(f"{request.text}-{i}")

    def StreamUnary(self, request_iterator, context):
        texts, principals = [], set()
        for request in request_iterator:
            if request.text == "abort":
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, ABORT_DETAILS)
            texts.append(request.text)
            principals.add(seen())
        principals.add(seen())
        return echo_pb2.EchoResponse(
            text="+".join(texts), principal=principals.pop() if len(principals) == 1 else "MIXED"
        )

    def StreamStream(self, request_iterator, context):
        for request in request_iterator:
            if request.text == "abort":
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, ABORT_DETAILS)
            yield reply(request.text)


class DecoratedEcho(AsyncEcho):
    """Rules declared on the servicer methods themselves."""

    @requires(scopes=["Echo.Write"])
    async def UnaryUnary(self, request, context):
        return reply(request.text)

    @requires(public=True)
    async def UnaryStream(self, request, context):
        yield reply(request.text)

    @requires(callers=Callers.APPS, app_roles=["Echo.All"])
    async def StreamUnary(self, request_iterator, context):
        return await super().StreamUnary(request_iterator, context)
