"""Fixtures for the server tests: a real grpc.aio server on 127.0.0.1:0 behind the interceptor,
real client channels, and a check that no minted token ever reaches a log record."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest

from grpc_obo import Policy, TokenValidator, ValidatorOptions, server_interceptor
from tests.gen.grpc_obo.testing.v1 import echo_pb2_grpc
from tests.server.echo import AsyncEcho
from tests.server.tokens import API_CLIENT_ID, MINTED, TENANT, jwks

HEALTH_CHECK = "/grpc.health.v1.Health/Check"


async def Check(request: bytes, context: Any) -> bytes:
    return b"\x08\x01"  # HealthCheckResponse{status: SERVING}, bytes kept raw (no serializers)


def _health_handler() -> grpc.GenericRpcHandler:
    # A stand-in Health service registered under the real name; the policy only sees the name.
    return grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {"Check": grpc.unary_unary_rpc_method_handler(Check)},
    )


@dataclass
class Served:
    channel: grpc.aio.Channel
    stub: echo_pb2_grpc.EchoStub

    async def health(self, metadata: Sequence[tuple[str, str]] = ()) -> bytes:
        call = self.channel.unary_unary(HEALTH_CHECK)
        return await call(b"", metadata=tuple(metadata))  # type: ignore[no-any-return]


def static_options(**overrides: Any) -> ValidatorOptions:
    """Options for the real validator with the test key as a static JWKS: no network."""
    settings: dict[str, Any] = {
        "tenant": TENANT,
        "audiences": frozenset({API_CLIENT_ID}),
        "jwks": jwks(),
    }
    settings.update(overrides)
    return ValidatorOptions(**settings)


@pytest.fixture
async def validator() -> AsyncIterator[TokenValidator]:
    async with TokenValidator(static_options()) as real:
        yield real


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(validator: Any) -> AsyncIterator[Serve]:
    """Start servers on demand: `await serve(policy=..., servicer=..., validator=...)`."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            *,
            policy: Policy | None = None,
            servicer: Any = None,
            validator: Any = validator,
            before: Sequence[grpc.aio.ServerInterceptor] = (),
            after: Sequence[grpc.aio.ServerInterceptor] = (),
        ) -> Served:
            pool = ThreadPoolExecutor(max_workers=4)
            stack.callback(pool.shutdown, wait=True)
            server = grpc.aio.server(
                migration_thread_pool=pool,
                interceptors=[*before, server_interceptor(validator, policy=policy), *after],
            )
            echo_pb2_grpc.add_EchoServicer_to_server(servicer or AsyncEcho(), server)
            server.add_generic_rpc_handlers((_health_handler(),))
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            stack.push_async_callback(server.stop, 1.0)
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            stack.push_async_callback(channel.close)
            return Served(channel, echo_pb2_grpc.EchoStub(channel))

        yield start


def leaks(text: str) -> list[str]:
    """The minted tokens (or their signatures) that appear in `text`."""
    found = []
    for token in MINTED:
        if token in text or token.rsplit(".", 1)[-1] in text:
            found.append(token[:12] + "...")
    return found


@pytest.fixture(autouse=True)
def _no_token_in_logs(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.DEBUG)
    yield
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert not leaks(text), "a token reached a log record"
