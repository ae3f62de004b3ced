"""An HTTP front door: ASGI middleware (Starlette, FastAPI) over the same validator and rules.

    BearerAuthMiddleware(app, validator=..., default=MethodPolicy(...), public_paths=[...])
      ├── `Authorization: Bearer`: validated by the `TokenValidator` the gRPC servers use,
      │   held to the default rule (a `MethodPolicy`); refused with 401/403 and an RFC 6750
      │   `WWW-Authenticate` challenge built by `www_authenticate_for`, as gRPC refusals are
      ├── the route runs with `current_identity()` set: `OnBehalfOf.channel()` and
      │   `OnBehalfOf.http_auth()` act for that user inside it
      └── a grpc_obo error escaping the route (a claims challenge only the user can meet, a
          gRPC downstream's refusal the route did not catch) becomes the matching HTTP answer,
          its challenge rebuilt; the downstream's own text never reaches the caller

`http_requires(scopes=..., auth_context=...)` is the per-route rule, a dependency in
fastapi-azure-auth's shape (`Depends(http_requires(scopes=["access_as_user"]))` returns the
`Identity`). Pure ASGI: no web framework is imported here, and never grpc (status codes come
from `status_for`, by name).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, MutableMapping
from typing import Any, Literal

from grpc_obo._errors import (
    ConfigurationError,
    GrpcOboError,
    MalformedTokenError,
    MissingIdentityError,
    MissingTokenError,
    status_for,
    www_authenticate_for,
)
from grpc_obo._identity import Identity, current_identity, use_identity
from grpc_obo._policy import Callers, MethodPolicy
from grpc_obo._relay import Code, Failures, collect, downstream_in, uncollect
from grpc_obo._telemetry import Telemetry, recorder_for
from grpc_obo._validation._bearer import bearer_token_from_header
from grpc_obo._validation._guarded import Authenticator

__all__ = ["BearerAuthMiddleware", "http_requires"]

_log = logging.getLogger("grpc_obo.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BearerAuthMiddleware:
    """Authenticates every HTTP request of an ASGI app (see the module docstring).

    `default` is the rule every non-public request must meet (a valid delegated token by
    default); routes add theirs with `http_requires`. `public_paths` need no token (exact
    paths, or prefixes ending in `/`). Websockets are held to the same rules (a browser cannot
    send them an `Authorization` header: serve those on a public path); refused or failed, one
    is closed, or denied in HTTP where the server offers it (see `_Reply`). Lifespan events
    pass through.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        validator: Any,
        default: MethodPolicy | None = None,
        public_paths: Collection[str] = (),
        telemetry: Telemetry | None = None,
    ) -> None:
        if not callable(app):
            raise ConfigurationError("app must be an ASGI application", setting="app")
        auth = Authenticator(validator, _log, needs_cached=False)
        if default is not None and not isinstance(default, MethodPolicy):
            raise ConfigurationError("default must be a grpc_obo.MethodPolicy", setting="default")
        if (
            not isinstance(public_paths, Collection)
            or isinstance(public_paths, str)
            or not all(isinstance(p, str) and p.startswith("/") for p in public_paths)
        ):
            raise ConfigurationError(
                "public_paths is a collection of paths starting with '/'", setting="public_paths"
            )
        self.app = app
        self._auth = auth
        self._default = default if default is not None else MethodPolicy()
        self._exact = frozenset(p for p in public_paths if not p.endswith("/"))
        self._prefixes = tuple(p for p in public_paths if p.endswith("/"))
        self._telemetry = recorder_for(telemetry)

    def _is_public(self, path: str) -> bool:
        return path in self._exact or path.startswith(self._prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or self._is_public(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        reply = _Reply(scope, send)
        try:
            identity = await self._authenticate(scope)
        except GrpcOboError as refused:
            await _refuse(scope, reply, refused)
            return
        failures = Failures()  # what the route's On-Behalf-Of calls record (grpc_obo._relay)
        relay = collect(failures)
        try:
            with use_identity(identity):
                await self.app(scope, receive, reply.tracked)
        except GrpcOboError as error:  # raised in the route: the route's own exchange, say
            if reply.ended:
                raise
            await _refuse(scope, reply, error)
        except Exception as error:
            # A downstream's failure the route did not catch (or anything raised after one):
            # the relay's status and rebuilt challenge, never the downstream's text.
            relayed = failures.settle(downstream_in(error))
            if relayed is None or reply.ended:
                raise
            _log.log(
                logging.WARNING if relayed.operator else logging.INFO,
                "%s: relaying a downstream %s to the %s caller as %s",
                scope.get("path", ""),
                relayed.downstream.name if relayed.downstream else type(error).__name__,
                "websocket" if reply.websocket else "HTTP",
                relayed.code.name,
            )
            await reply.answer(relayed.code.http_status, relayed.details, relayed.challenge)
        finally:
            uncollect(relay)

    async def _authenticate(self, scope: Scope) -> Identity:
        token = bearer_token(scope.get("headers", ()))
        started = time.time_ns()
        identity: Identity | None = None
        try:
            identity = await self._auth.validate(token, scope.get("path", ""))
            self._default.check(identity)
        except GrpcOboError as error:
            self._record(started, identity, error)
            raise
        self._record(started, identity, None)
        return identity

    def _record(self, started: int, identity: Identity | None, error: GrpcOboError | None) -> None:
        attributes = (
            self._telemetry.identity_attributes(
                oid=identity.oid,
                tid=identity.tid,
                client_id=identity.client_id,
                kind=identity.kind.value,
            )
            if identity is not None
            else {}
        )
        self._telemetry.validation(
            start_ns=started, end_ns=time.time_ns(), attributes=attributes, error=error
        )


def http_requires(
    *,
    callers: Callers = Callers.USERS,
    scopes: Collection[str] = frozenset(),
    user_roles: Collection[str] = frozenset(),
    app_roles: Collection[str] = frozenset(),
    match: Literal["any", "all"] = "any",
    auth_context: str | None = None,
) -> Callable[[], Awaitable[Identity]]:
    """A route's rule, as a dependency returning the caller's `Identity` (FastAPI `Depends`).

    The arguments are those of `MethodPolicy`, checked now (at import time). A refusal raises
    the grpc_obo error, which `BearerAuthMiddleware` turns into 401/403 with its challenge.
    """
    rule = MethodPolicy(
        callers=callers,
        scopes=scopes,
        user_roles=user_roles,
        app_roles=app_roles,
        match=match,
        auth_context=auth_context,
    )

    async def caller() -> Identity:
        identity = current_identity()
        if identity is None:
            raise MissingIdentityError(
                "no verified identity: add grpc_obo.BearerAuthMiddleware to the app (and keep "
                "this route off its public paths)"
            )
        rule.check(identity)
        return identity

    return caller


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The token of the one `Authorization` header (read as the gRPC side reads metadata)."""
    values = [value for name, value in headers if name.lower() == b"authorization"]
    if not values:
        raise MissingTokenError("no bearer token in the Authorization header")
    if len(values) > 1:
        raise MalformedTokenError(
            "more than one Authorization header", reason="multiple_authorization"
        )
    try:
        value = values[0].decode("ascii")
    except UnicodeDecodeError:
        raise MalformedTokenError(
            "the Authorization header is not ASCII", reason="malformed_header"
        ) from None
    return bearer_token_from_header(value)


# -- answers ------------------------------------------------------------------------------------


async def _refuse(scope: Scope, reply: _Reply, error: GrpcOboError) -> None:
    status = Code[status_for(error).name].http_status
    if status >= 500:
        _log.warning("front door failed a request: %s", type(error).__name__)
    else:
        _log.debug("refused %s: %s", scope.get("path", ""), type(error).__name__)
    challenge = www_authenticate_for(error) if status < 500 else None
    await reply.answer(status, error.message, challenge)


class _Reply:
    """What the route has sent on one connection, and the door's answer while it may give one.

    An HTTP request is answered with a JSON body. A websocket is answered in its own protocol
    (an HTTP response start there is an ASGI protocol error): before `accept`, with the HTTP
    answer itself when the server offers the websocket denial response extension; otherwise
    by closing it, 1008 (policy violation) for a refusal, 1011 for an internal failure (a
    close before `accept` is a 403 handshake answer, as the ASGI spec says).
    """

    __slots__ = ("_denial", "_send", "accepted", "ended", "websocket")

    def __init__(self, scope: Scope, send: Send) -> None:
        self._send = send
        self.websocket = scope["type"] == "websocket"
        self._denial = "websocket.http.response" in (scope.get("extensions") or {})
        self.accepted = False
        self.ended = False  # an HTTP response started, or the websocket closed or denied

    async def tracked(self, message: Message) -> None:
        kind = message["type"]
        if kind in ("http.response.start", "websocket.close", "websocket.http.response.start"):
            self.ended = True
        elif kind == "websocket.accept":
            self.accepted = True
        await self._send(message)

    async def answer(self, status: int, message: str, challenge: str | None) -> None:
        self.ended = True
        if not self.websocket:
            await _http_answer(self._send, "http.response", status, message, challenge)
        elif self._denial and not self.accepted:
            await _http_answer(self._send, "websocket.http.response", status, message, challenge)
        else:
            await self._send(
                {
                    "type": "websocket.close",
                    "code": 1008 if status in (401, 403) else 1011,
                    # A close frame's reason holds at most 123 bytes; the message is fixed text.
                    "reason": message.encode()[:123].decode(errors="ignore"),
                }
            )


async def _http_answer(
    send: Send, prefix: str, status: int, message: str, challenge: str | None
) -> None:
    body = json.dumps({"detail": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if challenge:
        headers.append((b"www-authenticate", challenge.encode("latin-1", "replace")))
    await send({"type": f"{prefix}.start", "status": status, "headers": headers})
    await send({"type": f"{prefix}.body", "body": body})
