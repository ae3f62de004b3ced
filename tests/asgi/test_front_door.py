"""The HTTP front door: `BearerAuthMiddleware` and `http_requires` on FastAPI and Starlette,
served by uvicorn on loopback, called with httpx.

Refusals are RFC 6750 (401 with `WWW-Authenticate: Bearer ...`, 403 `insufficient_scope`, a
step-up's claims challenge); inside a route the identity is set, so `OnBehalfOf.channel()` and
`OnBehalfOf.http_auth()` act for the user; a gRPC downstream's challenge reaches the HTTP
caller as 401 with the challenge rebuilt, none of the downstream's text.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import grpc
import grpc.aio
import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import grpc_obo
from grpc_obo import Identity, http_requires
from grpc_obo.devauthority import DevAuthority
from tests.asgi.conftest import served
from tests.gen.grpc_obo.testing.v1 import echo_pb2, echo_pb2_grpc
from tests.http.conftest import FAST

TIMEOUT = 20.0


class Downstream(echo_pb2_grpc.EchoServicer):
    """Needs authentication context c1; "deny" makes it answer PERMISSION_DENIED itself."""

    @grpc_obo.requires(auth_context="c1")
    async def UnaryUnary(self, request: Any, context: Any) -> Any:
        if request.text == "deny":
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "internal-db-7.corp: row 4411 is locked",
                (("www-authenticate", 'Bearer error="insufficient_scope", scope="x"'),),
            )
        identity = grpc_obo.current_identity()
        assert identity is not None
        return echo_pb2.EchoResponse(text=identity.oid or "")


@dataclass
class FrontDoor:
    authority: DevAuthority
    url: str

    def token(self, user: str = "alice", **options: Any) -> str:
        options.setdefault("scopes", ["access_as_user"])
        return self.authority.mint_user_token(user, audience="original", **options)

    async def get(self, path: str, token: str | None = None, **headers: str) -> httpx.Response:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            return await http.get(f"{self.url}{path}", headers=headers)


def fastapi_app(
    validator: grpc_obo.TokenValidator,
    obo: grpc_obo.OnBehalfOf,
    downstream: str,
    authority: DevAuthority,
) -> FastAPI:
    app = FastAPI()
    data_read = f"{authority.world.app('downstream').app_id_uri}/Data.Read"
    channel = obo.channel(downstream, scopes=[data_read])
    graph = httpx.AsyncClient(
        auth=obo.http_auth(scopes=["User.Read"]), verify=authority.client_ssl_context()
    )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/me")
    async def me(
        identity: Annotated[Identity, Depends(http_requires(scopes=["access_as_user"]))],
    ) -> Any:
        return {"oid": identity.oid, "current": grpc_obo.current_identity() == identity}

    @app.get("/admin", dependencies=[Depends(http_requires(scopes=["Admin.All"]))])
    async def admin() -> dict[str, str]:
        return {"secret": "admin"}

    @app.get("/sensitive", dependencies=[Depends(http_requires(auth_context="c1"))])
    async def sensitive() -> dict[str, str]:
        return {"ok": "c1"}

    @app.get("/chain/{text}")
    async def chain(text: str) -> dict[str, str]:
        stub = echo_pb2_grpc.EchoStub(channel)
        reply = await stub.UnaryUnary(echo_pb2.EchoRequest(text=text), timeout=TIMEOUT)
        return {"downstream_saw": reply.text}

    @app.get("/graph")
    async def graph_me() -> Any:
        me = await graph.get(f"{authority.graph_url}/me")
        return {"displayName": me.json()["displayName"]}

    app.add_middleware(grpc_obo.BearerAuthMiddleware, validator=validator, public_paths=["/health"])
    return app


@pytest.fixture
async def front_door(
    grpc_obo_authority: DevAuthority,
    original_validator: grpc_obo.TokenValidator,
    downstream_validator: grpc_obo.TokenValidator,
    client: grpc_obo.ConfidentialClient,
) -> AsyncIterator[FrontDoor]:
    server = grpc.aio.server(interceptors=[grpc_obo.server_interceptor(downstream_validator)])
    echo_pb2_grpc.add_EchoServicer_to_server(Downstream(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc_obo.OnBehalfOf(client, retry=FAST) as obo:
        app = fastapi_app(original_validator, obo, f"127.0.0.1:{port}", grpc_obo_authority)
        async with served(app) as url:
            yield FrontDoor(grpc_obo_authority, url)
    await server.stop(None)


def challenge_of(response: httpx.Response) -> str:
    return response.headers["www-authenticate"]


def claims_in(challenge: str) -> Any:
    found = re.search(r'claims="([^"]+)"', challenge)
    assert found is not None
    return json.loads(base64.b64decode(found.group(1)))


async def test_refusals_are_rfc_6750(front_door: FrontDoor) -> None:
    missing = await front_door.get("/me")
    assert missing.status_code == 401 and challenge_of(missing) == "Bearer"
    garbage = await front_door.get("/me", "not-a-jwt")
    assert garbage.status_code == 401
    assert challenge_of(garbage).startswith('Bearer error="invalid_token"')
    other_api = await front_door.get(
        "/me", front_door.authority.mint_user_token("alice", audience="downstream")
    )
    assert other_api.status_code == 401
    scope = await front_door.get("/admin", front_door.token())
    assert scope.status_code == 403
    assert challenge_of(scope).startswith('Bearer error="insufficient_scope"')
    assert 'scope="Admin.All"' in challenge_of(scope)
    basic = await front_door.get("/me", **{"Authorization": "Basic YTpi"})
    assert basic.status_code == 401 and challenge_of(basic) == "Bearer"


async def test_a_valid_token_reaches_the_route_with_the_identity_set(
    front_door: FrontDoor,
) -> None:
    answer = await front_door.get("/me", front_door.token())
    alice = front_door.authority.world.user("alice")
    assert answer.status_code == 200
    assert answer.json() == {"oid": alice.oid, "current": True}
    assert (await front_door.get("/health")).json() == {"status": "ok"}  # public: no token


async def test_a_route_that_needs_an_authentication_context_asks_for_it(
    front_door: FrontDoor,
) -> None:
    refused = await front_door.get("/sensitive", front_door.token())
    assert refused.status_code == 401
    assert claims_in(challenge_of(refused)) == {
        "access_token": {"acrs": {"essential": True, "value": "c1"}}
    }
    assert (
        await front_door.get("/sensitive", front_door.token(claims={"acrs": ["c1"]}))
    ).json() == {"ok": "c1"}


async def test_routes_call_grpc_and_http_downstreams_on_behalf_of_the_user(
    front_door: FrontDoor,
) -> None:
    alice = front_door.authority.world.user("alice")
    stepped_up = front_door.token(claims={"acrs": ["c1"]})
    assert (await front_door.get("/chain/hello", stepped_up)).json() == {
        "downstream_saw": alice.oid
    }
    assert (await front_door.get("/graph", stepped_up)).json() == {"displayName": "Alice Example"}


async def test_a_grpc_downstreams_challenge_reaches_the_http_caller_rebuilt(
    front_door: FrontDoor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = front_door.token()  # no c1: the gRPC downstream asks for a step-up
    refused = await front_door.get("/chain/hello", token)
    assert refused.status_code == 401
    assert claims_in(challenge_of(refused)) == {
        "access_token": {"acrs": {"essential": True, "value": "c1"}}
    }
    denied = await front_door.get("/chain/deny", front_door.token(claims={"acrs": ["c1"]}))
    assert denied.status_code == 403
    assert "internal-db" not in denied.text + challenge_of(denied)
    # Rebuilt by the relay's allow-list: its own fixed description, the validated scope.
    assert challenge_of(denied).startswith('Bearer error="insufficient_scope"')
    assert "a downstream API needs a permission" in challenge_of(denied)
    assert token not in caplog.text


async def test_a_starlette_app_gets_the_same_front_door(
    grpc_obo_authority: DevAuthority, original_validator: grpc_obo.TokenValidator
) -> None:
    async def whoami(request: Request) -> JSONResponse:
        identity = grpc_obo.current_identity()
        return JSONResponse({"oid": identity.oid if identity else None})

    app = Starlette(routes=[Route("/whoami", whoami)])
    app.add_middleware(grpc_obo.BearerAuthMiddleware, validator=original_validator)
    async with served(app) as url:
        door = FrontDoor(grpc_obo_authority, url)
        assert (await door.get("/whoami")).status_code == 401
        ok = await door.get("/whoami", door.token("carol"))
    assert ok.json() == {"oid": grpc_obo_authority.world.user("carol").oid}


def test_misconfiguration_fails_at_construction() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    class Validator:
        async def validate(self, token: str) -> grpc_obo.Identity:
            raise AssertionError("never called")

        def cached(self, token: str) -> grpc_obo.Identity | None:
            return None

    with pytest.raises(grpc_obo.ConfigurationError, match="validator"):
        grpc_obo.BearerAuthMiddleware(app, validator=object())
    with pytest.raises(grpc_obo.ConfigurationError, match="public_paths"):
        grpc_obo.BearerAuthMiddleware(app, validator=Validator(), public_paths="/health")
    with pytest.raises(grpc_obo.ConfigurationError):
        http_requires(auth_context="c0")


async def test_a_failing_validator_is_a_500_that_quotes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"

    class Broken:
        async def validate(self, token: str) -> Identity:
            raise RuntimeError(f"cannot parse {token}")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never reached")

    door = grpc_obo.BearerAuthMiddleware(app, validator=Broken())
    async with served(door) as url, httpx.AsyncClient() as http:
        answer = await http.get(f"{url}/x", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 500
    assert secret not in answer.text + caplog.text
    assert "www-authenticate" not in answer.headers


async def test_a_failing_validator_is_logged_as_the_grpc_gate_logs_it_token_cut_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One guarded validate for both front doors: the traceback for whoever debugs the
    # validator, every piece of the token cut out of it (as the gRPC server logs it).
    secret = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"

    class Broken:
        async def validate(self, token: str) -> Identity:
            raise RuntimeError(f"cannot parse {token} / {token.split('.')[1]}")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never reached")

    door = grpc_obo.BearerAuthMiddleware(app, validator=Broken())
    caplog.set_level(logging.DEBUG, logger="grpc_obo")
    async with served(door) as url, httpx.AsyncClient() as http:
        answer = await http.get(f"{url}/x", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 500
    [line] = [r for r in caplog.records if "validator failed unexpectedly" in r.getMessage()]
    assert line.name == "grpc_obo.asgi" and line.levelno == logging.ERROR
    logged = line.getMessage()
    assert "Traceback" in logged and "RuntimeError: cannot parse [redacted] / [redacted]" in logged
    assert "/x" in logged  # where it failed, as the gRPC gate names the method
    for piece in (secret, *secret.split(".")):
        assert piece not in caplog.text + "".join(str(r.args) for r in caplog.records)
