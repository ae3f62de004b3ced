"""`OnBehalfOf.channel()` / `AppOnly.channel()`: a grpc.aio channel with the interceptors attached.

TLS when credentials are given, plaintext otherwise; a plaintext channel to anything but
loopback or a local socket logs one WARNING (naming the host, never a token) when it is built,
because every call on it sends a bearer token readable on the network. grpc's own call
credentials refuse such channels outright; interceptors cannot see the channel, so the helper
that builds it is where this is checked.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import grpc.experimental
import pytest

import grpc_obo
from examples.settings import Settings
from grpc_obo.devauthority import DevAuthority
from grpc_obo.devauthority._tls import write_tls_files
from tests.gen.grpc_obo.testing.v1 import echo_pb2, echo_pb2_grpc
from tests.server.echo import AsyncEcho

FAST = grpc_obo.RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05, budget=5.0)
UNREACHABLE = "192.0.2.1:50051"  # TEST-NET-1 (RFC 5737): never routed


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "grpc_obo.client" and r.levelno == logging.WARNING
    ]


@pytest.fixture
def settings(grpc_obo_authority: DevAuthority) -> Settings:
    return Settings(grpc_obo_authority.summary())


@pytest.fixture
async def obo(settings: Settings) -> AsyncIterator[grpc_obo.OnBehalfOf]:
    exchanger = grpc_obo.OnBehalfOf(settings.confidential_client("original"), retry=FAST)
    yield exchanger
    await exchanger.close()


@pytest.fixture
async def app_only(settings: Settings) -> AsyncIterator[grpc_obo.AppOnly]:
    exchanger = grpc_obo.AppOnly(settings.confidential_client("original"), retry=FAST)
    yield exchanger
    await exchanger.close()


@pytest.fixture
def read(settings: Settings) -> str:
    return settings.scope("downstream", "Data.Read")


@pytest.fixture
async def alice(
    settings: Settings, grpc_obo_authority: DevAuthority
) -> AsyncIterator[grpc_obo.Identity]:
    async with grpc_obo.TokenValidator(settings.validator_options("original")) as validator:
        yield await validator.validate(
            grpc_obo_authority.mint_user_token("alice", scopes=["access_as_user"])
        )


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


async def downstream_server(
    settings: Settings, credentials: grpc.ServerCredentials | None = None
) -> tuple[grpc.aio.Server, int, grpc_obo.TokenValidator]:
    validator = grpc_obo.TokenValidator(settings.validator_options("downstream"))
    server = grpc.aio.server(
        interceptors=[
            grpc_obo.server_interceptor(
                validator,
                policy=grpc_obo.Policy(default=grpc_obo.MethodPolicy(scopes={"Data.Read"})),
            )
        ]
    )
    echo_pb2_grpc.add_EchoServicer_to_server(AsyncEcho(), server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, port, validator


# -- which channels warn ---------------------------------------------------------------------

LOCAL_TARGETS = [
    "127.0.0.1:50051",
    "127.8.9.10:50051",
    "localhost:50051",
    "LOCALHOST",
    "localhost.:50051",
    "[::1]:50051",
    "::1",
    "dns:///localhost:50051",
    "dns://8.8.8.8/127.0.0.1:50051",
    "ipv4:127.0.0.1:50051,127.0.0.2:50051",
    "ipv6:[::1]:50051",
    "unix:/tmp/downstream.sock",
    "unix:///tmp/downstream.sock",
    "unix-abstract:downstream",
]
REMOTE_TARGETS = [
    ("10.0.0.5:50051", "10.0.0.5"),
    ("downstream.internal:443", "downstream.internal"),
    ("downstream.internal", "downstream.internal"),
    ("dns:///api.example.com:443", "api.example.com"),
    ("dns://127.0.0.1:53/api.example.com:443", "api.example.com"),
    ("ipv4:127.0.0.1:50051,10.1.2.3:50051", "10.1.2.3"),
    ("ipv6:[2001:db8::1]:443", "2001:db8::1"),
    ("[2001:db8::1]:443", "2001:db8::1"),
    ("localhost.attacker.example:443", "localhost.attacker.example"),
    ("127.0.0.1.nip.io:443", "127.0.0.1.nip.io"),
    ("xds:///downstream", "xds:///downstream"),
]


@pytest.mark.parametrize("target", LOCAL_TARGETS)
async def test_plaintext_to_loopback_or_a_local_socket_does_not_warn(
    obo: grpc_obo.OnBehalfOf, read: str, logs: pytest.LogCaptureFixture, target: str
) -> None:
    async with obo.channel(target, scopes=[read]):
        pass
    assert warnings_of(logs) == []


@pytest.mark.parametrize(("target", "host"), REMOTE_TARGETS)
async def test_plaintext_to_any_other_host_warns_once_naming_it(
    obo: grpc_obo.OnBehalfOf,
    read: str,
    logs: pytest.LogCaptureFixture,
    target: str,
    host: str,
) -> None:
    async with obo.channel(target, scopes=[read]):
        pass
    [warning] = warnings_of(logs)
    assert host in warning.getMessage()
    assert "plaintext" in warning.getMessage()


async def test_app_only_channels_warn_too(
    app_only: grpc_obo.AppOnly, settings: Settings, logs: pytest.LogCaptureFixture
) -> None:
    itself = [f"{settings.app('downstream')['app_id_uri']}/.default"]
    async with app_only.channel("downstream.internal:443", scopes=itself):
        pass
    assert len(warnings_of(logs)) == 1
    async with app_only.channel("localhost:443", scopes=itself):
        pass
    assert len(warnings_of(logs)) == 1


async def test_tls_channels_do_not_warn(
    obo: grpc_obo.OnBehalfOf, read: str, logs: pytest.LogCaptureFixture
) -> None:
    async with obo.channel(
        "downstream.internal:443", credentials=grpc.ssl_channel_credentials(), scopes=[read]
    ):
        pass
    assert warnings_of(logs) == []


async def test_insecure_channel_credentials_count_as_plaintext(
    obo: grpc_obo.OnBehalfOf, read: str, logs: pytest.LogCaptureFixture
) -> None:
    """`grpc.experimental.insecure_channel_credentials()` makes `secure_channel` plaintext."""
    credentials = grpc.experimental.insecure_channel_credentials()
    async with obo.channel("downstream.internal:443", credentials=credentials, scopes=[read]):
        pass
    assert len(warnings_of(logs)) == 1


async def test_the_warning_is_logged_once_per_channel_not_per_call(
    grpc_obo_authority: DevAuthority,
    obo: grpc_obo.OnBehalfOf,
    read: str,
    alice: grpc_obo.Identity,
    logs: pytest.LogCaptureFixture,
) -> None:
    with grpc_obo.use_identity(alice):
        for expected in (1, 2):
            async with obo.channel(UNREACHABLE, scopes=[read]) as channel:
                stub = echo_pb2_grpc.EchoStub(channel)
                for _ in range(3):
                    with pytest.raises(grpc.aio.AioRpcError) as failed:
                        await stub.UnaryUnary(echo_pb2.EchoRequest(text="x"), timeout=0.3)
                    assert failed.value.code() in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                    )
            assert len(warnings_of(logs)) == expected
        downstream_token = await obo.acquire([read])
    # Every call really went through the interceptors' exchange: one, seen by the authority.
    assert grpc_obo_authority.requests.count(grant="obo") == 1
    text = logs.text + "".join(str(r.args) for r in logs.records)
    for secret in (alice.token.reveal(), downstream_token.reveal()):
        for piece in (secret, *secret.split(".")[1:]):
            assert piece not in text


# -- the channels work -----------------------------------------------------------------------


async def test_a_plaintext_loopback_channel_carries_the_users_token(
    obo: grpc_obo.OnBehalfOf,
    settings: Settings,
    read: str,
    alice: grpc_obo.Identity,
    logs: pytest.LogCaptureFixture,
) -> None:
    server, port, validator = await downstream_server(settings)
    try:
        with grpc_obo.use_identity(alice):
            async with obo.channel(f"127.0.0.1:{port}", scopes=[read]) as channel:
                stub = echo_pb2_grpc.EchoStub(channel)
                reply = await stub.UnaryUnary(echo_pb2.EchoRequest(text="hi"))
                streamed = [r async for r in stub.UnaryStream(echo_pb2.EchoRequest(count=2))]
    finally:
        await server.stop(0.5)
        await validator.close()
    assert reply.principal == alice.principal
    assert {r.principal for r in streamed} == {alice.principal}
    assert warnings_of(logs) == []


async def test_a_tls_channel_carries_the_token_and_keeps_caller_interceptors_outside(
    obo: grpc_obo.OnBehalfOf,
    settings: Settings,
    read: str,
    alice: grpc_obo.Identity,
    tmp_path: Path,
    logs: pytest.LogCaptureFixture,
) -> None:
    tls = write_tls_files(tmp_path)
    server_credentials = grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())]
    )
    server, port, validator = await downstream_server(settings, server_credentials)
    seen: list[bool] = []

    class Outer(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
        """Runs before ours: the call details it sees have no token yet."""

        async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            seen.append(any(k == "authorization" for k, _ in details.metadata or ()))
            return await continuation(details, request)

    try:
        with grpc_obo.use_identity(alice):
            async with obo.channel(
                f"localhost:{port}",
                credentials=grpc.ssl_channel_credentials(tls.ca_file.read_bytes()),
                scopes=[read],
                interceptors=[Outer()],
                options=[("grpc.primary_user_agent", "channel-test")],
            ) as channel:
                reply = await echo_pb2_grpc.EchoStub(channel).UnaryUnary(
                    echo_pb2.EchoRequest(text="hi")
                )
    finally:
        await server.stop(0.5)
        await validator.close()
    assert reply.principal == alice.principal
    assert seen == [False]
    assert warnings_of(logs) == []


def test_bad_scopes_fail_when_the_channel_is_built(obo: grpc_obo.OnBehalfOf) -> None:
    with pytest.raises(grpc_obo.ConfigurationError):
        obo.channel("localhost:50051", scopes=[])
