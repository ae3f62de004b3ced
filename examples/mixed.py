"""`make demo`, second part: a mixed chain, HTTP and gRPC, every server real, on loopback, TLS.

    client app ─HTTPS─▶ front door ─gRPC (OBO)─▶ profiles ─HTTPS (OBO)─▶ Graph-like API
                        (FastAPI, "original")     (grpc.aio, "downstream")  (the dev authority's)

The front door is a FastAPI app behind `grpc_obo.BearerAuthMiddleware`; its routes call the
profiles service through `obo.channel()`; the profiles service asks the Graph-like API for the
user's display name through `obo.http_auth()`, and its data keys need a stronger sign-in
(authentication context c1). The story: a profile through both hops; a step-up; an
administrator revokes the user's sessions (CAE: Graph's challenge travels back to the client
app as a 401, which signs in again); then the trace of the first request, HTTP hop included.
Exit code 0 when every outcome was the expected one. `python -m examples.mixed`
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import grpc
import httpx
import uvicorn
from fastapi import Depends, FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

import grpc_obo
from examples import tracing
from examples.gen.workspace.v1 import common_pb2, store_pb2_grpc, vault_pb2, vault_pb2_grpc
from examples.settings import Settings
from examples.signin import sign_in
from grpc_obo.devauthority import DevAuthority, default_world

TIMEOUT = 20.0


class Unexpected(Exception):
    """An outcome the demo did not expect."""


# -- the profiles service (gRPC, the "downstream" registration) -----------------------------------


class Profiles(store_pb2_grpc.DocumentStoreServicer):
    """`GetDocument("profile")`: the caller's display name, asked of Graph as the caller."""

    def __init__(self, graph: httpx.AsyncClient, graph_url: str) -> None:
        self._graph = graph
        self._graph_url = graph_url

    async def GetDocument(self, request: Any, context: Any) -> common_pb2.Document:
        me = await self._graph.get(f"{self._graph_url}/me")
        me.raise_for_status()
        return common_pb2.Document(id=request.id, body=me.json()["displayName"])


class Keys(vault_pb2_grpc.KeyVaultServicer):
    @grpc_obo.requires(auth_context="c1")
    async def GetDataKey(self, request: Any, context: Any) -> vault_pb2.DataKey:
        return vault_pb2.DataKey(key_id="profile-key-1")


# -- the front door (HTTP, the "original" registration) -------------------------------------------


# What a route needs of its caller: a valid user token for this API (as fastapi-azure-auth does).
Caller = Annotated[grpc_obo.Identity, Depends(grpc_obo.http_requires(scopes=["access_as_user"]))]


def front_door(validator: grpc_obo.TokenValidator, channel: grpc.aio.Channel) -> FastAPI:
    app = FastAPI()
    store = store_pb2_grpc.DocumentStoreStub(channel)
    vault = vault_pb2_grpc.KeyVaultStub(channel)

    @app.get("/profile")
    async def profile(identity: Caller) -> dict[str, str]:
        document = await store.GetDocument(
            common_pb2.GetDocumentRequest(id="profile"), timeout=TIMEOUT
        )
        return {"displayName": document.body}

    @app.get("/key")
    async def key(identity: Caller) -> dict[str, str]:
        found = await vault.GetDataKey(vault_pb2.DataKeyRequest(), timeout=TIMEOUT)
        return {"key_id": found.key_id}

    app.add_middleware(grpc_obo.BearerAuthMiddleware, validator=validator)
    # NOTE: FastAPI traces each request itself (a SERVER span continuing the caller's trace);
    # with an older FastAPI or with Starlette, wrap the app in opentelemetry-instrumentation-asgi.
    return app


# -- running it -----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(authority: DevAuthority, settings: Settings, workdir: Path) -> AsyncIterator[str]:
    """Start profiles and the front door; yield the front door's URL."""
    profiles_cert = authority.issue_server_certificate(workdir, name="profiles")
    door_cert = authority.issue_server_certificate(workdir, name="frontdoor")
    ca = await asyncio.to_thread(Path(settings.ca_file).read_bytes)
    async with (
        grpc_obo.TokenValidator(settings.validator_options("downstream")) as profiles_validator,
        grpc_obo.TokenValidator(settings.validator_options("original")) as door_validator,
        grpc_obo.OnBehalfOf(settings.confidential_client("downstream")) as profiles_obo,
        grpc_obo.OnBehalfOf(settings.confidential_client("original")) as door_obo,
        httpx.AsyncClient(
            auth=profiles_obo.http_auth(scopes=["User.Read"]),
            verify=ssl.create_default_context(cafile=settings.ca_file),
        ) as graph,
    ):
        server = grpc.aio.server(interceptors=[grpc_obo.server_interceptor(profiles_validator)])
        store_pb2_grpc.add_DocumentStoreServicer_to_server(
            Profiles(graph, authority.graph_url), server
        )
        vault_pb2_grpc.add_KeyVaultServicer_to_server(Keys(), server)
        key, chain = profiles_cert.key_file.read_bytes(), profiles_cert.cert_file.read_bytes()
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, chain)]))
        await server.start()
        channel = door_obo.channel(
            f"127.0.0.1:{port}",
            credentials=grpc.ssl_channel_credentials(ca),
            scopes=[settings.scope("downstream", "Data.Read")],
        )
        config = uvicorn.Config(
            front_door(door_validator, channel),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="off",
            ssl_certfile=str(door_cert.cert_file),
            ssl_keyfile=str(door_cert.key_file),
        )
        web = uvicorn.Server(config)
        task = asyncio.create_task(web.serve())
        try:
            while not web.started:
                if task.done():
                    raise Unexpected("the front door did not start")
                await asyncio.sleep(0.01)
            yield f"https://127.0.0.1:{web.servers[0].sockets[0].getsockname()[1]}"
        finally:
            web.should_exit = True
            await task
            await channel.close()
            await server.stop(None)


def challenge_claims(response: httpx.Response) -> str:
    challenge = response.headers.get("www-authenticate", "")
    found = re.search(r'claims="([^"]+)"', challenge)
    if response.status_code != 401 or found is None:
        raise Unexpected(f"expected a claims challenge, got {response.status_code} {challenge!r}")
    return base64.b64decode(found.group(1)).decode()


async def story(authority: DevAuthority, settings: Settings, workdir: Path) -> str:
    tracer = trace.get_tracer("examples.mixed")
    async with (
        serving(authority, settings, workdir) as door,
        httpx.AsyncClient(
            verify=ssl.create_default_context(cafile=settings.ca_file), timeout=TIMEOUT
        ) as http,
    ):

        async def get(path: str, token: str) -> httpx.Response:
            return await http.get(f"{door}{path}", headers={"Authorization": f"Bearer {token}"})

        token = await asyncio.to_thread(sign_in, settings, "alice")
        print("\nalice signs in; the client app calls the front door over HTTPS")
        with tracer.start_as_current_span("client app: alice GET /profile") as span:
            first = await get("/profile", token)
        traced = f"{span.get_span_context().trace_id:032x}"
        if first.status_code != 200:
            raise Unexpected(f"GET /profile: {first.status_code} {first.text}")
        print(
            f"  GET /profile -> {first.json()}: the front door validated her token and asked "
            "the profiles service (gRPC, On-Behalf-Of), which asked Graph (HTTPS, On-Behalf-Of)"
        )

        print("\n== Step-up: the data key needs authentication context c1 ==")
        refused = await get("/key", token)
        claims = challenge_claims(refused)
        print(f"  GET /key -> {refused.status_code}, insufficient_claims, claims={claims}")
        token = await asyncio.to_thread(sign_in, settings, "alice", claims=claims)
        stepped = await get("/key", token)
        if stepped.status_code != 200:
            raise Unexpected(f"GET /key after the step-up: {stepped.status_code}")
        print(f"  alice signs in again with the claims (acrs=c1): GET /key -> {stepped.json()}")

        print("\n== Continuous access evaluation: an administrator revokes alice's sessions ==")
        authority.world.revoke_sessions("alice")
        revoked = await get("/profile", token)
        claims = challenge_claims(revoked)
        print(
            "  Graph answers the profiles service's cached token with its CAE challenge; its "
            "exchange with alice's old token is refused (AADSTS50173), so the front door answers "
            f"GET /profile -> {revoked.status_code}, claims={claims}"
        )
        if json.loads(claims)["access_token"].get("nbf") is None:
            raise Unexpected(f"not a CAE challenge: {claims}")
        token = await asyncio.to_thread(sign_in, settings, "alice", claims=claims)
        again = await get("/profile", token)
        if again.status_code != 200:
            raise Unexpected(f"GET /profile after signing in again: {again.status_code}")
        print(f"  alice signs in again: GET /profile -> {again.json()}")
    return traced


def main() -> int:
    print(
        "grpc_obo mixed chain: client app -> (HTTPS) front door -> (gRPC, On-Behalf-Of) "
        "profiles -> (HTTPS, On-Behalf-Of) Graph-like API"
    )
    with tempfile.TemporaryDirectory(prefix="grpc-obo-mixed-") as workdir:
        spans_file = Path(workdir) / "spans.jsonl"
        provider = tracing.setup(
            os.environ.get("OTEL_SERVICE_NAME") or "grpc-obo-mixed",
            {**os.environ, "SPANS_FILE": str(spans_file)},
        )
        HTTPXClientInstrumentor().instrument()
        try:
            with DevAuthority(world=default_world()).running_in_thread() as authority:
                settings = Settings(authority.summary())
                traced = asyncio.run(story(authority, settings, Path(workdir)))
        except Unexpected as error:
            print(f"\nUNEXPECTED: {error}")
            return 1
        finally:
            HTTPXClientInstrumentor().uninstrument()
            provider.shutdown()
        print(f"\ntrace {traced} of alice's first GET /profile:")
        for line in tracing.tree(tracing.read_spans([spans_file]), traced):
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
