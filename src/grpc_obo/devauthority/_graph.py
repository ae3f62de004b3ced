"""A Graph-like HTTPS API served by the dev authority, with Continuous Access Evaluation (CAE).

The stand-in for Microsoft Graph that a middle tier calls On-Behalf-Of in development and
tests: `GET {graph_url}/me` answers the signed-in user, taken from the token it validated
itself (the authority's keys, Graph's audience `https://graph.microsoft.com` or its app id
`00000003-0000-0000-c000-000000000000`, the issuer of the token's tenant, a delegated token
holding `User.Read` or a broader user scope). Errors come in Graph's shape
(`{"error": {"code", "message", "innerError"}}`) with a `WWW-Authenticate` challenge on 401.

CAE, as Graph does it: after `World.revoke_sessions(user)`, a token issued before the
revocation to a client that declared the `cp1` capability (`xms_cc`) is answered with 401 and

    Bearer realm="", authorization_uri="<authority>/common/oauth2/authorize",
    client_id="00000003-0000-0000-c000-000000000000", error="insufficient_claims",
    claims="<base64 of {"access_token":{"nbf":{"essential":true,"value":"<revoked at>"}}}>"

A token of a client without `cp1` is not a CAE token: Graph honours it until it expires, and
so does this API. (Microsoft's "How to use Continuous Access Evaluation enabled APIs in your
applications" and "Claims challenges, claims requests and client capabilities".)
"""

from __future__ import annotations

import base64
import datetime
import json
import math
import uuid
from collections.abc import Callable
from typing import Any

import jwt
from aiohttp import web

from grpc_obo.devauthority._registrations import GRAPH_APP_ID, GRAPH_APP_ID_URI
from grpc_obo.devauthority._tokens import TokenMinter
from grpc_obo.devauthority._world import World

GRAPH_PATH = "/graph/v1.0"
"""Where the authority serves the Graph-like API (Graph's own base is `.../v1.0`)."""

_ME_SCOPES = frozenset(
    {"User.Read", "User.ReadWrite", "User.ReadBasic.All", "User.Read.All", "Directory.Read.All"}
)
_CAE_MESSAGE = (
    "Continuous access evaluation resulted in challenge with result: InteractionRequired and "
    "code: TokenIssuedBeforeRevocationTimestamp"
)


def cae_claims(valid_from: float) -> str:
    """The claims a CAE challenge asks for: a token not issued before `valid_from` (the user's
    `tokens_valid_from`, rounded up to the whole second `iat` and `nbf` are counted in)."""
    return json.dumps(
        {"access_token": {"nbf": {"essential": True, "value": str(math.ceil(valid_from))}}},
        separators=(",", ":"),
    )


class GraphApi:
    """The Graph-like routes of one authority (see the module docstring)."""

    def __init__(self, *, world: World, minter: TokenMinter, base_url: Callable[[], str]) -> None:
        self._world = world
        self._minter = minter
        self._base_url = base_url

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(f"{GRAPH_PATH}/me", self.me)

    async def me(self, request: web.Request) -> web.Response:
        try:
            return self._me(request)
        except _Refused as refused:
            return refused.response

    def _me(self, request: web.Request) -> web.Response:
        claims = self._authenticate(request)
        user = self._world.find_user(str(claims.get("oid", "")))
        if user is None or user.tenant_id != claims.get("tid"):
            raise self._unauthorized("The user in the token does not exist in the directory.")
        revoked = user.tokens_valid_from
        if revoked and claims["iat"] < revoked and "cp1" in _capabilities(claims):
            raise self._unauthorized(
                _CAE_MESSAGE,
                error='error="insufficient_claims", claims="'
                + base64.b64encode(cae_claims(revoked).encode()).decode()
                + '"',
            )
        scopes = set(str(claims.get("scp", "")).split())
        if not scopes & _ME_SCOPES:
            raise _graph_error(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            )
        given, _, surname = user.display_name.partition(" ")
        return web.json_response(
            {
                "@odata.context": f"{self._base_url()}{GRAPH_PATH}/$metadata#users/$entity",
                "id": user.oid,
                "displayName": user.display_name,
                "givenName": given or None,
                "surname": surname or None,
                "userPrincipalName": user.username,
                "mail": user.username,
            }
        )

    def _authenticate(self, request: web.Request) -> dict[str, Any]:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise self._unauthorized("Access token is empty.", code="InvalidAuthenticationToken")
        try:
            claims = self._minter.read_own(token.strip(), leeway=60)
        except jwt.ExpiredSignatureError:
            raise self._unauthorized("Lifetime validation failed, the token is expired.") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise self._unauthorized("Access token validation failure.") from None
        tid = claims["tid"]
        if claims.get("iss") not in (self._minter.issuer(tid, 1), self._minter.issuer(tid, 2)):
            raise self._unauthorized("Access token validation failure. Invalid issuer.")
        if claims.get("aud") not in (GRAPH_APP_ID, GRAPH_APP_ID_URI, f"{GRAPH_APP_ID_URI}/"):
            raise self._unauthorized("Access token validation failure. Invalid audience.")
        if not isinstance(claims.get("scp"), str) or claims.get("idtyp") == "app":
            raise _graph_error(
                400, "BadRequest", "/me request is only valid with delegated authentication flow."
            )
        if not isinstance(claims.get("iat"), int):
            raise self._unauthorized("Access token validation failure.")
        return claims

    def _unauthorized(
        self, message: str, *, code: str = "InvalidAuthenticationToken", error: str | None = None
    ) -> _Refused:
        challenge = (
            f'Bearer realm="", authorization_uri="{self._base_url()}/common/oauth2/authorize", '
            f'client_id="{GRAPH_APP_ID}"'
        )
        if error is not None:
            challenge += f", {error}"
        return _graph_error(401, code, message, headers={"WWW-Authenticate": challenge})


def _capabilities(claims: dict[str, Any]) -> list[str]:
    value = claims.get("xms_cc")
    values = [value] if isinstance(value, str) else value
    return [v for v in values if isinstance(v, str)] if isinstance(values, list) else []


def _graph_error(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> _Refused:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    body = json.dumps(
        {
            "error": {
                "code": code,
                "message": message,
                "innerError": {"date": now, "request-id": str(uuid.uuid4())},
            }
        }
    )
    return _Refused(
        web.Response(
            text=body, status=status, content_type="application/json", headers=headers or {}
        )
    )


class _Refused(Exception):
    """A Graph-shaped refusal; `me` answers with its response."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response
