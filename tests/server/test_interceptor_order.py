"""grpc_obo among other server interceptors: declared rules, refusals and identity hold whatever
wraps it (a handler-rebuilding interceptor, opentelemetry-instrumentation-grpc), before or after.

A rule that cannot be established with certainty (a wrapper grpc_obo cannot see through) fails
closed: PERMISSION_DENIED and one ERROR line naming the method and the fix.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from grpc_obo import MethodPolicy, Policy, requires
from tests.gen.grpc_obo.testing.v1 import echo_pb2
from tests.gen.grpc_obo.testing.v1.echo_pb2 import EchoRequest
from tests.server.conftest import Serve
from tests.server.echo import AsyncEcho, SyncEcho, WriterEcho
from tests.server.test_interceptor import challenge, failure, requests
from tests.server.tokens import bearer, principal, user_token

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
ECHO = "grpc_obo.testing.v1.Echo"
WRITE = ["Echo.Write"]


# -- servicers with a declared rule on every method, in each handler shape -----------------------


class DeclaredAsync(AsyncEcho):
    @requires(scopes=WRITE)
    async def UnaryUnary(self, request, context):
        return await super().UnaryUnary(request, context)

    @requires(scopes=WRITE)
    async def UnaryStream(self, request, context) -> AsyncIterator[echo_pb2.EchoResponse]:
        async for item in super().UnaryStream(request, context):
            yield item

    @requires(scopes=WRITE)
    async def StreamUnary(self, request_iterator, context):
        return await super().StreamUnary(request_iterator, context)

    @requires(scopes=WRITE)
    async def StreamStream(self, request_iterator, context):
        async for item in super().StreamStream(request_iterator, context):
            yield item


class DeclaredWriter(WriterEcho):
    @requires(scopes=WRITE)
    async def UnaryUnary(self, request, context):
        return await super().UnaryUnary(request, context)

    @requires(scopes=WRITE)
    async def UnaryStream(self, request, context) -> None:
        await super().UnaryStream(request, context)

    @requires(scopes=WRITE)
    async def StreamUnary(self, request_iterator, context):
        return await super().StreamUnary(request_iterator, context)

    @requires(scopes=WRITE)
    async def StreamStream(self, request_iterator, context) -> None:
        await super().StreamStream(request_iterator, context)


class DeclaredSync(SyncEcho):
    @requires(scopes=WRITE)
    def UnaryUnary(self, request, context):
        return super().UnaryUnary(request, context)

    @requires(scopes=WRITE)
    def UnaryStream(self, request, context) -> Iterator[echo_pb2.EchoResponse]:
        yield from super().UnaryStream(request, context)

    @requires(scopes=WRITE)
    def StreamUnary(self, request_iterator, context):
        return super().StreamUnary(request_iterator, context)

    @requires(scopes=WRITE)
    def StreamStream(self, request_iterator, context):
        yield from super().StreamStream(request_iterator, context)


# -- other people's interceptors -----------------------------------------------------------------


def _rebuild(handler: Any, wrap: Callable[[Any], Any]) -> Any:
    ser, des = handler.response_serializer, handler.request_deserializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream), des, ser)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary), des, ser)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream), des, ser)
    return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary), des, ser)


class Rebuilder(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """A typical logging or metrics interceptor: rebuilds each handler around its behaviour with
    closures of the same shape (no functools.wraps), counting the calls it saw."""

    def __init__(self, *, opaque: bool = False) -> None:
        self.calls = 0
        self.opaque = opaque  # hide the behaviour where no closure walk can find it

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        return None if handler is None else _rebuild(handler, self._wrap)

    def _wrap(self, behavior: Any) -> Any:
        if self.opaque:
            # Keep the behaviour where no closure walk finds it: only a dict in the closure.
            return _opaque(self, {"behavior": behavior}, behavior)
        if inspect.isasyncgenfunction(behavior):

            async def agen(request: Any, context: Any) -> Any:
                self.calls += 1
                async for item in behavior(request, context):
                    yield item

            return agen
        if inspect.iscoroutinefunction(behavior):

            async def coro(request: Any, context: Any) -> Any:
                self.calls += 1
                return await behavior(request, context)

            return coro
        if inspect.isgeneratorfunction(behavior):

            def gen(request: Any, context: Any) -> Any:
                self.calls += 1
                yield from behavior(request, context)

            return gen

        def func(request: Any, context: Any) -> Any:
            self.calls += 1
            return behavior(request, context)

        return func


def _opaque(counter: Rebuilder, box: dict[str, Any], shape_of: Any) -> Any:
    if inspect.isasyncgenfunction(shape_of):

        async def agen(request: Any, context: Any) -> Any:
            counter.calls += 1
            async for item in box["behavior"](request, context):
                yield item

        return agen

    async def coro(request: Any, context: Any) -> Any:
        counter.calls += 1
        return await box["behavior"](request, context)

    return coro


ORDERS: dict[str, Callable[[], tuple[list[Any], list[Any]]]] = {
    "alone": lambda: ([], []),
    "rebuilder-before": lambda: ([Rebuilder()], []),
    "rebuilder-after": lambda: ([], [Rebuilder()]),
    "otel-before": lambda: ([aio_server_interceptor()], []),
    "otel-after": lambda: ([], [aio_server_interceptor()]),
}
SHAPES = {"async": DeclaredAsync, "writer": DeclaredWriter, "sync": DeclaredSync}


def _supported(order: str, shape: str) -> bool:
    """Whether the *servicer* runs under this order at all, grpc_obo aside.

    opentelemetry-instrumentation-grpc's aio interceptor awaits every behaviour and iterates
    every streaming one with `async for`: sync handlers and `context.write` coroutines fail
    under it with or without grpc_obo. Refusals are checked for those too.
    """
    return not (order.startswith("otel") and shape in ("sync", "writer"))


async def _drain(stream: Any) -> list[Any]:
    return [item async for item in stream]


def _calls(served: Any, metadata: Any) -> dict[str, Callable[[], Any]]:
    stub = served.stub
    return {
        "unary_unary": lambda: stub.UnaryUnary(EchoRequest(text="u"), metadata=metadata, timeout=5),
        "unary_stream": lambda: _drain(
            stub.UnaryStream(EchoRequest(text="s", count=2), metadata=metadata, timeout=5)
        ),
        "stream_unary": lambda: stub.StreamUnary(requests("a"), metadata=metadata, timeout=5),
        "stream_stream": lambda: _drain(
            stub.StreamStream(requests("a"), metadata=metadata, timeout=5)
        ),
    }


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("order", ORDERS)
class TestEveryOrder:
    async def test_declared_rule_refuses_a_token_without_the_scope(
        self, serve: Serve, order: str, shape: str
    ) -> None:
        before, after = ORDERS[order]()
        served = await serve(servicer=SHAPES[shape](), before=before, after=after)
        for kind, call in _calls(served, bearer(user_token(1, scopes="Echo.Read"))).items():
            error = await failure(call())
            assert error.code() is PERMISSION_DENIED, (kind, error.code(), error.details())
            assert 'error="insufficient_scope"' in (challenge(error) or ""), kind
            assert "Echo.Write" in (challenge(error) or ""), kind

    async def test_missing_token_is_unauthenticated_with_its_challenge(
        self, serve: Serve, order: str, shape: str
    ) -> None:
        before, after = ORDERS[order]()
        served = await serve(servicer=SHAPES[shape](), before=before, after=after)
        for kind, call in _calls(served, ()).items():
            error = await failure(call())
            assert error.code() is UNAUTHENTICATED, (kind, error.code(), error.details())
            assert (challenge(error) or "").startswith("Bearer"), kind


@pytest.mark.parametrize(
    ("order", "shape"), [(o, s) for o in ORDERS for s in SHAPES if _supported(o, s)]
)
class TestEverySupportedOrder:
    async def test_a_token_with_the_scope_passes_with_its_identity(
        self, serve: Serve, order: str, shape: str
    ) -> None:
        before, after = ORDERS[order]()
        served = await serve(servicer=SHAPES[shape](), before=before, after=after)
        md = bearer(user_token(3, scopes="Echo.Write"))
        me = principal(3)
        calls = _calls(served, md)
        assert (await calls["unary_unary"]()).principal == me
        assert [r.principal for r in await calls["unary_stream"]()] == [me, me]
        assert (await calls["stream_unary"]()).principal == me
        assert [r.principal for r in await calls["stream_stream"]()] == [me]
        for interceptor in (*before, *after):
            if isinstance(interceptor, Rebuilder):
                assert interceptor.calls == 4


class TestUncertainRulesFailClosed:
    async def test_a_wrapper_that_hides_the_handler_fails_closed(
        self, serve: Serve, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A declared rule grpc_obo cannot find is never replaced by the default rule."""
        served = await serve(servicer=DeclaredAsync(), after=[Rebuilder(opaque=True)])
        md = bearer(user_token(1, scopes="Echo.Write"))
        for _ in range(3):
            error = await failure(served.stub.UnaryUnary(EchoRequest(text="u"), metadata=md))
            assert error.code() is PERMISSION_DENIED
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        text = errors[0].getMessage()
        assert f"/{ECHO}/UnaryUnary" in text
        assert "interceptor" in text and "functools.wraps" in text
        # The servicer method has its rule already: adding `requires` again is no fix.
        assert "requires(...)" not in text and "'UnaryUnary'" in text

    async def test_a_policy_rule_does_not_lift_the_uncertainty(self, serve: Serve) -> None:
        """The hidden rule may be stricter than the policy's: still closed."""
        policy = Policy(methods={f"/{ECHO}/UnaryUnary": MethodPolicy(scopes=["Echo.Read"])})
        served = await serve(
            servicer=DeclaredAsync(), policy=policy, after=[Rebuilder(opaque=True)]
        )
        md = bearer(user_token(1, scopes="Echo.Read Echo.Write"))
        error = await failure(served.stub.UnaryUnary(EchoRequest(text="u"), metadata=md))
        assert error.code() is PERMISSION_DENIED


class TestPublicByExactName:
    async def test_a_policy_entry_no_servicer_serves_is_warned_once(
        self, serve: Serve, caplog: pytest.LogCaptureFixture
    ) -> None:
        typo = f"/{ECHO}/UnaryUnry"
        policy = Policy(
            methods={
                typo: MethodPolicy(scopes=["Echo.Write"]),
                "grpc_obo.testing.v1.Ehco": MethodPolicy(),
            }
        )
        served = await serve(policy=policy)
        md = bearer(user_token(1))
        for _ in range(3):
            await served.stub.UnaryUnary(EchoRequest(text="u"), metadata=md)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len([w for w in warnings if typo in w]) == 1, warnings
        # A service name cannot be looked up from inside a call: Policy.check_served covers it.
        assert not [w for w in warnings if f"/{ECHO}/UnaryUnary'" in w]


def test_the_fail_closed_fix_fits_the_cause() -> None:
    from grpc_obo._declared import explain_uncertain, resolve_declared

    @requires(scopes=WRITE)
    async def Marked(request: Any, context: Any) -> None:
        return None

    box = {"f": Marked}

    async def hidden(request: Any, context: Any) -> None:
        return await box["f"](request, context)

    # A hand-written handler not named like its method, with no rule of that name anywhere.
    assert not resolve_declared(hidden, "/pkg.S/HandWritten")[1]
    assert "requires(...)" in explain_uncertain(hidden, "/pkg.S/HandWritten")
    # A marked function of the method's name exists: the rule is hidden, not missing.
    assert "requires(...)" not in explain_uncertain(hidden, "/pkg.S/Marked")

    @requires(scopes=["Other"])
    async def Twice(request: Any, context: Any) -> None:
        return await Marked(request, context)

    twice = requires(scopes=["Third"])(functools.partial(Twice))
    assert "several" in explain_uncertain(twice, "/pkg.S/Twice")


def test_functools_wraps_keeps_a_declared_rule_visible() -> None:
    from grpc_obo._declared import resolve_declared

    @requires(scopes=WRITE)
    async def UnaryUnary(request: Any, context: Any) -> None:
        return None

    @functools.wraps(UnaryUnary)
    async def wrapper(request: Any, context: Any) -> None:
        return await UnaryUnary(request, context)

    rule, certain = resolve_declared(wrapper, "/pkg.S/UnaryUnary")
    assert certain and rule == MethodPolicy(scopes=WRITE)
