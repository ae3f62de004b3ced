"""An HTTP downstream's failure that a gRPC handler does not catch (`raise_for_status()`) ends
the incoming call through the same relay as a gRPC downstream's: the mapped status, a fixed
sentence, the challenge rebuilt from the allow-list, none of the downstream's text."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest

import grpc_obo
from grpc_obo.devauthority import DevAuthority
from tests.gen.grpc_obo.testing.v1 import echo_pb2, echo_pb2_grpc
from tests.http.conftest import FAST, Users
from tests.http.downstream import Downstream

TIMEOUT = 20.0
SIGNATURE = "sv2-s3cr3t-query-signature"


class CallsHttp(echo_pb2_grpc.EchoServicer):
    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self._http = http
        self._url = url

    async def UnaryUnary(self, request: Any, context: Any) -> Any:
        # A query string may carry a signature: it must reach no log line and no caller.
        answer = await self._http.get(f"{self._url}/whoami", params={"sig": SIGNATURE})
        answer.raise_for_status()  # not caught: the relay decides how the call ends
        return echo_pb2.EchoResponse(text="ok")


@pytest.fixture
async def middle(
    original_validator: grpc_obo.TokenValidator,
    obo: grpc_obo.OnBehalfOf,
    read: str,
    downstream: Downstream,
) -> AsyncIterator[echo_pb2_grpc.EchoStub]:
    async with httpx.AsyncClient(auth=obo.http_auth(scopes=[read])) as http:
        server = grpc.aio.server(interceptors=[grpc_obo.server_interceptor(original_validator)])
        echo_pb2_grpc.add_EchoServicer_to_server(CallsHttp(http, downstream.url), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield echo_pb2_grpc.EchoStub(channel)
        await server.stop(None)


@pytest.fixture
async def app_middle(
    grpc_obo_authority: DevAuthority,
    original_validator: grpc_obo.TokenValidator,
    downstream: Downstream,
) -> AsyncIterator[echo_pb2_grpc.EchoStub]:
    """The same middle tier calling the HTTP downstream as itself (the daemon app's token)."""
    daemon = grpc_obo_authority.world.app("daemon")
    client = grpc_obo.ConfidentialClient(
        client_id=daemon.client_id,
        tenant=grpc_obo_authority.tenant_id,
        credential=grpc_obo.ClientCredential.secret(daemon.secrets[0]),
        authority_host=grpc_obo_authority.base_url,
        ca_file=str(grpc_obo_authority.ca_file),
    )
    scope = f"{grpc_obo_authority.world.app('downstream').app_id_uri}/.default"
    async with (
        grpc_obo.AppOnly(client, retry=FAST) as app,
        httpx.AsyncClient(auth=app.http_auth(scopes=[scope])) as http,
    ):
        server = grpc.aio.server(interceptors=[grpc_obo.server_interceptor(original_validator)])
        echo_pb2_grpc.add_EchoServicer_to_server(CallsHttp(http, downstream.url), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield echo_pb2_grpc.EchoStub(channel)
        await server.stop(None)


@pytest.mark.parametrize(
    ("status", "challenge"),
    [
        (401, 'Bearer error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnt9fQ=="'),
        (403, 'Bearer error="insufficient_scope", scope="Data.Write"'),
    ],
)
async def test_a_refusal_of_the_services_own_token_is_internal_without_a_challenge(
    app_middle: echo_pb2_grpc.EchoStub,
    users: Users,
    downstream: Downstream,
    status: int,
    challenge: str,
) -> None:
    """App-only (`AppOnly.http_auth`): the caller is not told to sign in again for a refusal
    only the service's operator can fix."""
    downstream.refuse_next(1, status, challenge)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await app_middle.UnaryUnary(
            echo_pb2.EchoRequest(text="x"),
            metadata=(("authorization", f"Bearer {users.token()}"),),
            timeout=TIMEOUT,
        )
    assert failed.value.code() is grpc.StatusCode.INTERNAL
    assert failed.value.details() == "a downstream API refused this service's own credentials"
    assert "www-authenticate" not in dict(failed.value.trailing_metadata() or ())


@pytest.mark.parametrize(
    ("status", "challenge", "code", "rebuilt"),
    [
        (
            403,
            'Bearer error="insufficient_scope", scope="Data.Write", '
            'error_description="db7.corp.internal says no", authorization_uri="https://evil/"',
            grpc.StatusCode.PERMISSION_DENIED,
            'Bearer error="insufficient_scope"',
        ),
        (401, 'Bearer error="invalid_token"', grpc.StatusCode.UNAUTHENTICATED, "Bearer error="),
        (404, None, grpc.StatusCode.NOT_FOUND, None),
        (500, None, grpc.StatusCode.INTERNAL, None),
        (503, None, grpc.StatusCode.UNAVAILABLE, None),
        # httpx follows no redirect by default and raise_for_status() raises for one, with the
        # URL in its message: a failure in fixed words too.
        (302, None, grpc.StatusCode.INTERNAL, None),
    ],
)
async def test_an_uncaught_http_failure_is_relayed_like_a_grpc_one(
    middle: echo_pb2_grpc.EchoStub,
    users: Users,
    downstream: Downstream,
    status: int,
    challenge: str | None,
    code: grpc.StatusCode,
    rebuilt: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    downstream.refuse_next(1, status, challenge)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await middle.UnaryUnary(
            echo_pb2.EchoRequest(text="x"),
            metadata=(("authorization", f"Bearer {users.token()}"),),
            timeout=TIMEOUT,
        )
    error = failed.value
    assert error.code() is code
    assert "downstream" in (error.details() or "")  # a fixed sentence
    assert downstream.url not in (error.details() or "") and "127.0.0.1" not in str(error.details())
    assert SIGNATURE not in str(error.details())
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("grpc_obo")]
    assert ours and not any(SIGNATURE in line for line in ours)  # httpx's own lines are its own
    trailing = dict(error.trailing_metadata() or ())
    if rebuilt is None:
        assert "www-authenticate" not in trailing
    else:
        assert trailing["www-authenticate"].startswith(rebuilt)
        assert "evil" not in trailing["www-authenticate"]
        assert "corp" not in trailing["www-authenticate"]
