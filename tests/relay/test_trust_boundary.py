"""A downstream is a trust boundary (issue 17, points 1-3): whatever an On-Behalf-Of call's
downstream answers and the middle tier's handler does not catch, the client app gets a status
from one documented table, a fixed sentence as details and a challenge rebuilt from an
allow-list: never the downstream's text, its hosts, its `authorization_uri`. Every status code,
a downstream bug, a challenge grpc cannot send, several challenges, a handler that wraps the
error, all four RPC kinds, each handler shape, among other interceptors before or after ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import grpc.aio
import pytest

import grpc_obo
from examples.settings import Settings
from grpc_obo._relay import RELAY_TABLE, UNHANDLED, Code
from grpc_obo.devauthority import DevAuthority
from tests.gen.grpc_obo.testing.v1 import echo_pb2_grpc
from tests.gen.grpc_obo.testing.v1.echo_pb2 import EchoRequest
from tests.relay.test_relay import (
    CAE_RELAYED,
    CLAIMS,
    FAST_RETRY,
    KIND_NAMES,
    Downstream,
    Hops,
    Middle,
    _call,
    _challenge,
    _clean,
    _failure,
    _one,
)
from tests.server.test_interceptor_order import ORDERS

EVERY_FAILURE = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]


def _expected(code: grpc.StatusCode) -> tuple[grpc.StatusCode, str]:
    mapped, details, _ = RELAY_TABLE[Code[code.name]]
    return grpc.StatusCode[mapped.name], details


def _no_leak_above_debug(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        if record.levelno > logging.DEBUG:
            assert "internal.contoso" not in record.getMessage(), record.getMessage()
        assert "eyJzdWIiOiJ4In0" not in record.getMessage(), record.getMessage()


def _relay_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "grpc_obo.server"
        and r.levelno >= logging.INFO
        and "ending the call" in r.getMessage()
    ]


class TestEveryStatusCode:
    @pytest.mark.parametrize("code", EVERY_FAILURE, ids=lambda c: c.name)
    async def test_every_downstream_status_maps_by_the_table_with_a_fixed_sentence(
        self, hops: Hops, code: grpc.StatusCode, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="grpc_obo")
        error = await _failure(_call(hops.middle, "unary_unary", f"code:{code.name}", hops.token()))
        mapped, details = _expected(code)
        assert (error.code(), error.details()) == (mapped, details)
        assert _challenge(error) is None
        _clean(error)
        # One line the middle tier's operator can act on: the method and the downstream's code.
        lines = _relay_lines(caplog)
        assert len(lines) == 1, lines
        assert "/grpc_obo.testing.v1.Echo/UnaryUnary" in lines[0] and code.name in lines[0]
        _no_leak_above_debug(caplog)
        # ... and what the downstream said, for whoever debugs it, at DEBUG only.
        assert [
            r
            for r in caplog.records
            if r.levelno == logging.DEBUG and "internal.contoso" in r.getMessage()
        ]

    def test_the_table_covers_every_code_and_never_says_more_than_a_sentence(self) -> None:
        assert set(RELAY_TABLE) == {Code[c.name] for c in EVERY_FAILURE}
        for mapped, details, _ in RELAY_TABLE.values():
            assert mapped is not Code.UNKNOWN and details.startswith("a downstream API")
        # A downstream's own failure never becomes the caller's UNKNOWN, DATA_LOSS or UNIMPLEMENTED.
        for code in (Code.UNKNOWN, Code.INTERNAL, Code.DATA_LOSS, Code.UNIMPLEMENTED):
            assert RELAY_TABLE[code][0] is Code.INTERNAL

    @pytest.mark.parametrize("kind", KIND_NAMES)
    @pytest.mark.parametrize("code", ["NOT_FOUND", "INTERNAL", "RESOURCE_EXHAUSTED"])
    async def test_every_rpc_kind(self, hops: Hops, kind: str, code: str) -> None:
        error = await _failure(_call(hops.middle, kind, f"code:{code}", hops.token()))
        assert (error.code(), error.details()) == _expected(grpc.StatusCode[code]), kind
        _clean(error)


class TestWhatGrpcOrTheHandlerMakesOfIt:
    @pytest.mark.parametrize("kind", KIND_NAMES)
    async def test_a_downstream_bug_is_a_fixed_internal(self, hops: Hops, kind: str) -> None:
        # The downstream raised: grpc made it UNKNOWN "Unexpected <class 'ValueError'>: <text>".
        error = await _failure(_call(hops.middle, kind, "raise", hops.token()))
        assert (error.code(), error.details()) == _expected(grpc.StatusCode.UNKNOWN)
        _clean(error)

    @pytest.mark.parametrize("kind", KIND_NAMES)
    async def test_a_challenge_grpc_cannot_send_is_a_fixed_internal(
        self, hops: Hops, kind: str
    ) -> None:
        # A non-ASCII trailer: grpc ends the downstream's call INTERNAL "Invalid metadata".
        error = await _failure(_call(hops.middle, kind, "nonascii", hops.token()))
        assert (error.code(), error.details()) == _expected(grpc.StatusCode.INTERNAL)
        _clean(error)

    async def test_a_handler_that_wraps_the_downstream_error_gets_its_mapping(
        self, hops: Hops, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="grpc_obo")
        md = (("authorization", f"Bearer {hops.token()}"),)
        error = await _failure(
            hops.middle.UnaryUnary(EchoRequest(text="wrap:code:NOT_FOUND"), metadata=md)
        )
        # Raised while handling the downstream's error: relayed as that error.
        assert (error.code(), error.details()) == _expected(grpc.StatusCode.NOT_FOUND)
        _clean(error)
        assert len(_relay_lines(caplog)) == 1
        _no_leak_above_debug(caplog)

    async def test_a_handler_that_fails_otherwise_after_a_downstream_failure(
        self, hops: Hops, caplog: pytest.LogCaptureFixture
    ) -> None:
        md = (("authorization", f"Bearer {hops.token()}"),)
        error = await _failure(
            hops.middle.UnaryUnary(EchoRequest(text="after:code:NOT_FOUND"), metadata=md)
        )
        # Not linked to the downstream's error, but its text may quote it: a fixed INTERNAL.
        assert (error.code(), error.details()) == (grpc.StatusCode.INTERNAL, UNHANDLED.details)
        _clean(error)
        lines = _relay_lines(caplog)
        assert len(lines) == 1 and "RuntimeError" in lines[0], lines
        _no_leak_above_debug(caplog)


class TestChallenges:
    @pytest.mark.parametrize("kind", KIND_NAMES)
    async def test_several_challenges_relay_the_claims_challenge(
        self, hops: Hops, kind: str
    ) -> None:
        error = await _failure(_call(hops.middle, kind, "two", hops.token()))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED, (kind, error.details())
        assert _challenge(error) == CAE_RELAYED
        _clean(error)

    async def test_several_challenges_still_evict_and_ask_for_the_claims(self, hops: Hops) -> None:
        token = hops.token()
        md = (("authorization", f"Bearer {token}"),)
        await hops.middle.UnaryUnary(EchoRequest(text="ok"), metadata=md)
        await _failure(_call(hops.middle, "unary_unary", "two", token))
        await hops.middle.UnaryUnary(EchoRequest(text="ok"), metadata=md)
        async with grpc_obo.TokenValidator(hops.settings.validator_options("original")) as v:
            alice = await v.validate(token)
        scopes = [hops.settings.scope("downstream", "Data.Read")]
        assert await hops.obo.cache.get(hops.obo.cache_key(scopes, identity=alice, claims=CLAIMS))

    @pytest.mark.parametrize("kind", KIND_NAMES)
    async def test_a_challenge_is_rebuilt_never_forwarded(self, hops: Hops, kind: str) -> None:
        error = await _failure(_call(hops.middle, kind, "evil", hops.token()))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        challenge = _challenge(error) or ""
        assert "authorization_uri" not in challenge and "evil.example" not in challenge
        assert 'realm=""' in challenge and 'error="insufficient_claims"' in challenge
        assert CAE_RELAYED.split("claims=")[1] in challenge  # the claims, intact
        _clean(error)


class TestClaimsAreForgotten:
    async def test_after_one_exchange_that_carried_them(self, hops: Hops) -> None:
        token = hops.token()
        md = (("authorization", f"Bearer {token}"),)
        await _failure(_call(hops.middle, "unary_unary", "cae", token))
        await hops.middle.UnaryUnary(EchoRequest(text="ok"), metadata=md)  # asks for the claims
        async with grpc_obo.TokenValidator(hops.settings.validator_options("original")) as v:
            alice = await v.validate(token)
        scopes = [hops.settings.scope("downstream", "Data.Read")]
        plain = hops.obo.cache_key(scopes, identity=alice)
        assert await hops.obo.cache.get(plain) is None
        await hops.middle.UnaryUnary(EchoRequest(text="ok"), metadata=md)
        # The claims were met once: the next exchange no longer sends them.
        assert await hops.obo.cache.get(plain) is not None


# -- the same under other interceptors, before or after ours, in each handler shape ----------------


class WriterMiddle(Middle):
    """Response-streaming methods as coroutines that call `context.write`."""

    async def UnaryStream(self, request, context) -> None:  # type: ignore[override]
        stub, text, _ = self._route(request.text)
        async for item in stub.UnaryStream(EchoRequest(text=text), timeout=5):
            await context.write(item)

    async def StreamStream(self, request_iterator, context) -> None:  # type: ignore[override]
        texts = [r.text async for r in request_iterator]
        stub, text, _ = self._route(texts[0])
        async for item in stub.StreamStream(_one(text), timeout=5):
            await context.write(item)


SHAPES = {"async": Middle, "writer": WriterMiddle}

Chain = Callable[[str, str], Awaitable[echo_pb2_grpc.EchoStub]]


@pytest.fixture
async def chain(grpc_obo_authority: DevAuthority) -> AsyncIterator[tuple[Chain, DevAuthority]]:
    settings = Settings(grpc_obo_authority.summary())
    async with contextlib.AsyncExitStack() as stack:
        down_validator = grpc_obo.TokenValidator(settings.validator_options("downstream"))
        mid_validator = grpc_obo.TokenValidator(settings.validator_options("original"))
        obo = grpc_obo.OnBehalfOf(settings.confidential_client("original"), retry=FAST_RETRY)
        for closer in (down_validator, mid_validator, obo):
            stack.push_async_callback(closer.close)
        downstream = grpc.aio.server(interceptors=[grpc_obo.server_interceptor(down_validator)])
        echo_pb2_grpc.add_EchoServicer_to_server(Downstream(), downstream)
        port = downstream.add_insecure_port("127.0.0.1:0")
        await downstream.start()
        stack.push_async_callback(downstream.stop, 1.0)
        obo_channel = obo.channel(
            f"127.0.0.1:{port}", scopes=[settings.scope("downstream", "Data.Read")]
        )
        stack.push_async_callback(obo_channel.close)
        obo_stub = echo_pb2_grpc.EchoStub(obo_channel)

        async def build(order: str, shape: str) -> echo_pb2_grpc.EchoStub:
            before, after = ORDERS[order]()
            middle = grpc.aio.server(
                interceptors=[*before, grpc_obo.server_interceptor(mid_validator), *after]
            )
            echo_pb2_grpc.add_EchoServicer_to_server(SHAPES[shape](obo_stub, obo_stub), middle)
            middle_port = middle.add_insecure_port("127.0.0.1:0")
            await middle.start()
            stack.push_async_callback(middle.stop, 1.0)
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{middle_port}")
            stack.push_async_callback(channel.close)
            return echo_pb2_grpc.EchoStub(channel)

        yield build, grpc_obo_authority


def _supported(order: str, shape: str) -> bool:
    # opentelemetry-instrumentation-grpc's aio interceptor cannot run `context.write` handlers,
    # with or without grpc_obo (tests/server/test_interceptor_order.py).
    return not (order.startswith("otel") and shape == "writer")


@pytest.mark.parametrize(
    ("order", "shape"), [(o, s) for o in ORDERS for s in SHAPES if _supported(o, s)]
)
async def test_relayed_in_every_order_and_shape(
    chain: tuple[Chain, DevAuthority], order: str, shape: str
) -> None:
    build, authority = chain
    stub = await build(order, shape)
    token = authority.mint_user_token(
        "alice", audience="original", client="client", scopes=["access_as_user"]
    )
    for kind in KIND_NAMES:
        error = await _failure(_call(stub, kind, "code:DATA_LOSS", token))
        assert (error.code(), error.details()) == _expected(grpc.StatusCode.DATA_LOSS), kind
        _clean(error)
        error = await _failure(_call(stub, kind, "evil", token))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED, (kind, error.details())
        assert "evil.example" not in (_challenge(error) or "") and _challenge(error), kind
        _clean(error)


class SyncMiddle(echo_pb2_grpc.EchoServicer):
    """A sync handler (grpc's thread pool) driving an On-Behalf-Of call on the server's loop."""

    def __init__(self, obo: echo_pb2_grpc.EchoStub, loop: asyncio.AbstractEventLoop) -> None:
        self._obo, self._loop = obo, loop

    async def _call(self, text: str) -> Any:
        return await self._obo.UnaryUnary(EchoRequest(text=text), timeout=5)

    def UnaryUnary(self, request, context):
        # The coroutine runs in a copy of this thread's context: the call's identity and its
        # failure list (grpc_obo runs each step of a sync handler in the call's own context).
        return asyncio.run_coroutine_threadsafe(self._call(request.text), self._loop).result()


@pytest.mark.parametrize("order", ["alone", "rebuilder-before", "rebuilder-after"])
async def test_relayed_from_a_sync_handler(grpc_obo_authority: DevAuthority, order: str) -> None:
    settings = Settings(grpc_obo_authority.summary())
    async with contextlib.AsyncExitStack() as stack:
        down_validator = grpc_obo.TokenValidator(settings.validator_options("downstream"))
        mid_validator = grpc_obo.TokenValidator(settings.validator_options("original"))
        obo = grpc_obo.OnBehalfOf(settings.confidential_client("original"), retry=FAST_RETRY)
        for closer in (down_validator, mid_validator, obo):
            stack.push_async_callback(closer.close)
        downstream = grpc.aio.server(interceptors=[grpc_obo.server_interceptor(down_validator)])
        echo_pb2_grpc.add_EchoServicer_to_server(Downstream(), downstream)
        port = downstream.add_insecure_port("127.0.0.1:0")
        await downstream.start()
        stack.push_async_callback(downstream.stop, 1.0)
        obo_channel = obo.channel(
            f"127.0.0.1:{port}", scopes=[settings.scope("downstream", "Data.Read")]
        )
        stack.push_async_callback(obo_channel.close)
        pool = ThreadPoolExecutor(max_workers=2)
        stack.callback(pool.shutdown, wait=True)
        before, after = ORDERS[order]()
        middle = grpc.aio.server(
            migration_thread_pool=pool,
            interceptors=[*before, grpc_obo.server_interceptor(mid_validator), *after],
        )
        servicer = SyncMiddle(echo_pb2_grpc.EchoStub(obo_channel), asyncio.get_running_loop())
        echo_pb2_grpc.add_EchoServicer_to_server(servicer, middle)
        middle_port = middle.add_insecure_port("127.0.0.1:0")
        await middle.start()
        stack.push_async_callback(middle.stop, 1.0)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{middle_port}")
        stack.push_async_callback(channel.close)
        stub = echo_pb2_grpc.EchoStub(channel)
        token = grpc_obo_authority.mint_user_token(
            "alice", audience="original", client="client", scopes=["access_as_user"]
        )
        reply = await _call(stub, "unary_unary", "ok", token)
        assert reply.principal
        for _ in range(5):
            error = await _failure(_call(stub, "unary_unary", "code:NOT_FOUND", token))
            assert (error.code(), error.details()) == _expected(grpc.StatusCode.NOT_FOUND)
            _clean(error)
            error = await _failure(_call(stub, "unary_unary", "evil", token))
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
            assert "evil.example" not in (_challenge(error) or "") and _challenge(error)
