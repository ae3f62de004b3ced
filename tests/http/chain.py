"""A gRPC chain for the mixed-chain tests: the Original relays to a downstream servicer, the
client app signs in with real MSAL (ROPC, claims when a challenge asked for them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import msal

import grpc_obo
from grpc_obo.devauthority import DevAuthority
from tests.gen.grpc_obo.testing.v1 import echo_pb2, echo_pb2_grpc

TIMEOUT = 20.0


class OriginalEcho(echo_pb2_grpc.EchoServicer):
    def __init__(self, downstream: echo_pb2_grpc.EchoStub) -> None:
        self._downstream = downstream

    async def UnaryUnary(self, request: Any, context: Any) -> Any:
        # The downstream's failure is not caught: grpc_obo relays it.
        return await self._downstream.UnaryUnary(request, timeout=TIMEOUT)


@dataclass
class Chain:
    authority: DevAuthority
    stub: echo_pb2_grpc.EchoStub

    def sign_in(self, user: str = "alice", *, claims: str | None = None) -> str:
        found = self.authority.world.user(user)
        http = self.authority.msal_http_client()
        try:
            app = msal.PublicClientApplication(
                self.authority.world.app("client").client_id,
                authority=self.authority.authority_url,
                instance_discovery=False,
                http_client=http,
                client_capabilities=["cp1"],
            )
            original = self.authority.world.app("original").app_id_uri
            result = app.acquire_token_by_username_password(
                found.username,
                found.password,
                scopes=[f"{original}/access_as_user"],
                claims_challenge=claims,
            )
        finally:
            http.close()
        assert "access_token" in result, result.get("error")
        return str(result["access_token"])

    async def call(self, token: str) -> echo_pb2.EchoResponse:
        return await self.stub.UnaryUnary(
            echo_pb2.EchoRequest(text="who"),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=TIMEOUT,
        )


async def serve(servicer: Any, validator: grpc_obo.TokenValidator) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(interceptors=[grpc_obo.server_interceptor(validator)])
    echo_pb2_grpc.add_EchoServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"
