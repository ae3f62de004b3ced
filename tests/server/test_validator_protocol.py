"""`TokenValidatorLike` says exactly what grpc_obo calls on a validator.

A watching validator (the real `TokenValidator` behind it) records every attribute the gRPC
server interceptor and the HTTP front door touch, over real calls: the gRPC side uses
`validate` and `cached`, the front door `validate`, and nothing else is ever asked of it.
"""

from __future__ import annotations

import inspect
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from grpc_obo import BearerAuthMiddleware, TokenValidator, TokenValidatorLike, current_identity
from tests.asgi.conftest import served
from tests.gen.grpc_obo.testing.v1.echo_pb2 import EchoRequest
from tests.server.conftest import Serve, static_options
from tests.server.tokens import bearer, principal, user_token

PROTOCOL = {name for name in vars(TokenValidatorLike) if not name.startswith("_")}


class Watching:
    """Forwards to a real validator and writes down every attribute asked of it."""

    def __init__(self, inner: TokenValidator) -> None:
        self._inner = inner
        self.asked: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("_") or name == "asked":
            return object.__getattribute__(self, name)
        object.__getattribute__(self, "asked").append(name)
        return getattr(object.__getattribute__(self, "_inner"), name)


def test_the_protocol_is_validate_and_cached_as_token_validator_has_them() -> None:
    assert {"validate", "cached"} == PROTOCOL
    for name in PROTOCOL:
        ours, theirs = getattr(TokenValidator, name), getattr(TokenValidatorLike, name)
        assert inspect.signature(ours) == inspect.signature(theirs), name
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(theirs), name


async def test_the_grpc_server_calls_only_the_protocol(serve: Serve) -> None:
    async with TokenValidator(static_options()) as real:
        watching = Watching(real)
        served = await serve(validator=watching)
        token = user_token(user=3)
        for _ in range(2):  # a miss (validated), then a hit (cached)
            response = await served.stub.UnaryUnary(EchoRequest(text="x"), metadata=bearer(token))
            assert response.principal == principal(3)
        await served.health()  # a public method asks nothing
    assert set(watching.asked) == PROTOCOL
    assert watching.asked.count("validate") >= 2  # construction checks it, then one miss


async def test_the_http_front_door_calls_only_the_protocol() -> None:
    async def whoami(request: Request) -> PlainTextResponse:
        identity = current_identity()
        return PlainTextResponse(identity.principal if identity is not None else "")

    async with TokenValidator(static_options()) as real:
        watching = Watching(real)
        app = BearerAuthMiddleware(
            Starlette(routes=[Route("/whoami", whoami)]),
            validator=watching,
        )
        async with served(app) as url, httpx.AsyncClient(base_url=url) as http:
            token = user_token(user=4)
            for _ in range(2):
                answer = await http.get("/whoami", headers={"Authorization": f"Bearer {token}"})
                assert (answer.status_code, answer.text) == (200, principal(4))
    assert watching.asked and set(watching.asked) <= PROTOCOL
