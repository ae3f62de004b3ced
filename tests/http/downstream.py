"""A small REST API on loopback that validates the bearer tokens it receives (grpc_obo's own
validator, the Downstream API's audience), for the HTTP On-Behalf-Of tests.

`GET /whoami` answers the verified caller; `POST /echo` answers the body it got. Each request
is recorded (the token's claims, the body and `traceparent`); `tokens` keeps the raw tokens for
the tests' leak searches.
`challenge_next(n, claims)` makes the next `n` requests answer 401 with a claims challenge,
as a CAE-enabled API does; `refuse_next(n, status, challenge)` answers any status.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from grpc_obo import GrpcOboError, TokenValidator


@dataclass
class Seen:
    path: str
    claims: dict[str, Any]
    body: bytes
    traceparent: str | None


@dataclass
class Downstream:
    validator: TokenValidator
    seen: list[Seen] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    """The raw tokens received, for the tests' leak searches only."""
    _refusals: list[tuple[int, str | None]] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    url: str = ""

    def challenge_next(self, times: int, claims: str) -> None:
        encoded = base64.b64encode(claims.encode()).decode()
        challenge = (
            'Bearer realm="", authorization_uri="https://login.example/authorize", '
            f'error="insufficient_claims", claims="{encoded}"'
        )
        self._refusals.extend([(401, challenge)] * times)

    def refuse_next(self, times: int, status: int, challenge: str | None = None) -> None:
        self._refusals.extend([(status, challenge)] * times)

    async def _handle(self, request: web.Request) -> web.Response:
        _, _, token = request.headers.get("Authorization", "").partition(" ")
        self.tokens.append(token)
        try:
            identity = await self.validator.validate(token)
        except GrpcOboError as exc:
            return web.json_response({"error": type(exc).__name__}, status=401)
        body = await request.read()
        self.seen.append(
            Seen(
                request.path,
                {
                    "oid": identity.oid,
                    "aud": identity.audience,
                    "azp": identity.client_id,
                    "kind": identity.kind.value,
                    "scp": sorted(identity.scopes),
                    "roles": sorted(identity.roles),
                    "xms_cc": sorted(identity.client_capabilities),
                },
                body,
                request.headers.get("traceparent"),
            )
        )
        if self._refusals:
            status, challenge = self._refusals.pop(0)
            headers = {"WWW-Authenticate": challenge} if challenge else {}
            return web.json_response({"error": "refused"}, status=status, headers=headers)
        if request.path == "/echo":
            return web.Response(body=body, content_type="application/octet-stream")
        return web.json_response({"oid": identity.oid, "kind": identity.kind.value})

    async def start(self) -> Downstream:
        app = web.Application()
        app.router.add_get("/whoami", self._handle)
        app.router.add_post("/echo", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def claims_json(**access_token: Any) -> str:
    return json.dumps({"access_token": access_token}, separators=(",", ":"))
