"""The front door on websockets, served by uvicorn and called with the `websockets` client.

A websocket is answered in the websocket protocol, never with an HTTP response start (an ASGI
protocol error): refused before the route runs, or for a downstream failure relayed after it,
the socket is closed with 1008 (policy violation: the caller was refused) or 1011 (internal),
and before `accept` a server that offers the ASGI websocket denial response extension
(uvicorn's `websockets` implementation) gets the HTTP answer itself, with its challenge.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import grpc_obo
from grpc_obo import Identity
from grpc_obo.devauthority import DevAuthority
from tests.asgi.conftest import served
from tests.asgi.test_front_door import Downstream
from tests.gen.grpc_obo.testing.v1 import echo_pb2, echo_pb2_grpc
from tests.http.conftest import FAST

TIMEOUT = 20.0


def websocket_app(
    validator: grpc_obo.TokenValidator,
    obo: grpc_obo.OnBehalfOf,
    downstream: str,
    authority: DevAuthority,
) -> Any:
    data_read = f"{authority.world.app('downstream').app_id_uri}/Data.Read"
    channel = obo.channel(downstream, scopes=[data_read])

    async def call(text: str) -> str:
        stub = echo_pb2_grpc.EchoStub(channel)
        reply = await stub.UnaryUnary(echo_pb2.EchoRequest(text=text), timeout=TIMEOUT)
        return str(reply.text)

    async def whoami(websocket: WebSocket) -> None:
        await websocket.accept()
        identity = grpc_obo.current_identity()
        await websocket.send_text(identity.oid if identity else "")
        await websocket.close()

    async def before(websocket: WebSocket) -> None:
        # The downstream is asked before the socket is accepted (say, to authorize it).
        await call(websocket.path_params["text"])
        await websocket.accept()

    async def after(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("accepted")
        await call(websocket.path_params["text"])

    async def wrapped(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await call("deny")
        except grpc.aio.AioRpcError as error:
            said = error.details()
        # Anything raised after a relayed failure (not from it) may quote it: a fixed INTERNAL.
        raise RuntimeError(f"the downstream said {said}")

    app = Starlette(
        routes=[
            WebSocketRoute("/ws/whoami", whoami),
            WebSocketRoute("/ws/before/{text}", before),
            WebSocketRoute("/ws/after/{text}", after),
            WebSocketRoute("/ws/wrapped", wrapped),
        ]
    )
    app.add_middleware(grpc_obo.BearerAuthMiddleware, validator=validator)
    return app


@dataclass
class Door:
    authority: DevAuthority
    url: str
    denial: bool
    """The server offers the websocket denial response extension."""

    def token(self, **options: Any) -> str:
        options.setdefault("scopes", ["access_as_user"])
        return self.authority.mint_user_token("alice", audience="original", **options)

    def connect(self, path: str, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return connect(self.url + path, additional_headers=headers, open_timeout=TIMEOUT)

    async def refusal(self, path: str, token: str | None = None) -> Any:
        """The HTTP answer that refused the handshake."""
        with pytest.raises(InvalidStatus) as refused:
            await self.connect(path, token).__aenter__()
        return refused.value.response

    async def closed(self, path: str, token: str | None = None) -> tuple[int, str, list[str]]:
        """(close code, reason, messages received) of a socket the server closed."""
        received: list[str] = []
        async with self.connect(path, token) as socket:
            try:
                while True:
                    received.append(str(await socket.recv()))
            except ConnectionClosed as closed:
                frame = closed.rcvd
        assert frame is not None, "closed without a close frame"
        return frame.code, frame.reason, received


def without_denial(app: Any) -> Any:
    """`app` as a server without the websocket denial response extension runs it (daphne,
    for one): the extension is not in the scope."""

    async def served_without(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            extensions = dict(scope.get("extensions") or {})
            extensions.pop("websocket.http.response", None)
            scope = {**scope, "extensions": extensions}
        await app(scope, receive, send)

    return served_without


# uvicorn's two websocket implementations; the second as a server without the extension.
@pytest.fixture(params=["websockets-sansio", "wsproto"])
async def door(
    request: pytest.FixtureRequest,
    grpc_obo_authority: DevAuthority,
    original_validator: grpc_obo.TokenValidator,
    downstream_validator: grpc_obo.TokenValidator,
    client: grpc_obo.ConfidentialClient,
) -> AsyncIterator[Door]:
    server = grpc.aio.server(interceptors=[grpc_obo.server_interceptor(downstream_validator)])
    echo_pb2_grpc.add_EchoServicer_to_server(Downstream(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc_obo.OnBehalfOf(client, retry=FAST) as obo:
        app = websocket_app(original_validator, obo, f"127.0.0.1:{port}", grpc_obo_authority)
        denial = request.param == "websockets-sansio"
        async with served(app if denial else without_denial(app), ws=request.param) as url:
            yield Door(
                grpc_obo_authority,
                url.replace("http://", "ws://"),
                denial=denial,
            )
    await server.stop(None)


async def test_a_valid_token_opens_the_socket_with_the_identity_set(door: Door) -> None:
    code, _, received = await door.closed("/ws/whoami", door.token())
    assert code == 1000
    assert received == [door.authority.world.user("alice").oid]


async def test_a_refused_handshake_is_the_http_refusal_where_the_server_offers_it(
    door: Door,
) -> None:
    missing = await door.refusal("/ws/whoami")
    garbage = await door.refusal("/ws/whoami", "not-a-jwt")
    if door.denial:
        # The extension lets the refusal say what an HTTP caller hears: 401 and the challenge.
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert garbage.status_code == 401
        assert garbage.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    else:
        # A close before accept: the ASGI server answers 403, as the ASGI spec says.
        assert missing.status_code == garbage.status_code == 403


async def test_a_downstream_refusal_before_accept_is_relayed_in_the_handshake(
    door: Door, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="grpc_obo")  # the client's own log shows headers
    token = door.token(claims={"acrs": ["c1"]})
    refused = await door.refusal("/ws/before/deny", token)
    if door.denial:
        assert refused.status_code == 403
        challenge = refused.headers["www-authenticate"]
        assert challenge.startswith('Bearer error="insufficient_scope"')
        assert "internal-db" not in challenge + refused.body.decode()
    else:
        assert refused.status_code == 403
    assert "relaying a downstream PERMISSION_DENIED" in caplog.text
    assert token not in caplog.text


async def test_a_downstream_refusal_after_accept_closes_the_socket_as_a_policy_violation(
    door: Door,
) -> None:
    code, reason, received = await door.closed(
        "/ws/after/deny", door.token(claims={"acrs": ["c1"]})
    )
    assert received == ["accepted"]
    assert code == 1008  # policy violation: the caller may not have this
    assert "internal-db" not in reason
    step_up, _, _ = await door.closed("/ws/after/hello", door.token())
    assert step_up == 1008  # the downstream asked for a step-up: a refusal too


async def test_anything_raised_after_a_downstream_failure_closes_the_socket_as_internal(
    door: Door,
) -> None:
    code, reason, received = await door.closed("/ws/wrapped", door.token(claims={"acrs": ["c1"]}))
    assert received == []
    assert code == 1011
    assert "internal-db" not in reason and "downstream said" not in reason


async def test_a_failing_validator_refuses_the_handshake_as_internal(
    grpc_obo_authority: DevAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"

    class Broken:
        async def validate(self, token: str) -> Identity:
            raise RuntimeError(f"cannot parse {token}")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never reached")

    door = grpc_obo.BearerAuthMiddleware(app, validator=Broken())
    async with served(door, ws="websockets-sansio") as url:
        ws = Door(grpc_obo_authority, url.replace("http://", "ws://"), denial=True)
        refused = await ws.refusal("/ws", secret)
    assert refused.status_code == 500
    assert "www-authenticate" not in refused.headers
    assert secret not in refused.body.decode() + caplog.text
