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

__all__ = ["BearerAuthMiddleware", "http_requires"]

_log = logging.getLogger("grpc_obo.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _ValidatorFailure(GrpcOboError):
    """The validator raised something unexpected: the caller learns nothing more (500)."""


class BearerAuthMiddleware:
    """Authenticates every HTTP request of an ASGI app (see the module docstring).

    `default` is the rule every non-public request must meet (a valid delegated token by
    default); routes add theirs with `http_requires`. `public_paths` need no token (exact
    paths, or prefixes ending in `/`). Websockets are refused unless public: a browser
    cannot send them an `Authorization` header. Lifespan events pass through.
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
        validate = getattr(validator, "validate", None)
        if not callable(validate):
            raise ConfigurationError("validator must have an async validate(token) method")
        if default is not None and not isinstance(default, MethodPolicy):
            raise ConfigurationError("default must be a grpc_obo.MethodPolicy")
        if (
            not isinstance(public_paths, Collection)
            or isinstance(public_paths, str)
            or not all(isinstance(p, str) and p.startswith("/") for p in public_paths)
        ):
            raise ConfigurationError("public_paths is a collection of paths starting with '/'")
        self.app = app
        self._validator = validator
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
        try:
            identity = await self._authenticate(scope)
        except GrpcOboError as refused:
            await _refuse(scope, send, refused, kind)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        failures = Failures()  # what the route's On-Behalf-Of calls record (grpc_obo._relay)
        relay = collect(failures)
        try:
            with use_identity(identity):
                await self.app(scope, receive, tracked)
        except GrpcOboError as error:  # raised in the route: the route's own exchange, say
            if started:
                raise
            await _refuse(scope, send, error, kind)
        except Exception as error:
            # A downstream's failure the route did not catch (or anything raised after one):
            # the relay's status and rebuilt challenge, never the downstream's text.
            relayed = failures.settle(downstream_in(error))
            if relayed is None or started:
                raise
            _log.log(
                logging.WARNING if relayed.operator else logging.INFO,
                "%s: relaying a downstream %s to the HTTP caller as %s",
                scope.get("path", ""),
                relayed.downstream.name if relayed.downstream else type(error).__name__,
                relayed.code.name,
            )
            await _answer(send, relayed.code.http_status, relayed.details, relayed.challenge)
        finally:
            uncollect(relay)

    async def _authenticate(self, scope: Scope) -> Identity:
        token = bearer_token(scope.get("headers", ()))
        started = time.time_ns()
        identity: Identity | None = None
        try:
            try:
                found: object = await self._validator.validate(token)
            except GrpcOboError:
                raise
            except Exception as unexpected:
                # NOTE: its message or traceback may quote the token: the class name only.
                _log.error("the validator failed unexpectedly: %s", type(unexpected).__name__)
                raise _ValidatorFailure("token validation failed") from None
            if not isinstance(found, Identity):
                _log.error("the validator returned %s, not an Identity", type(found).__name__)
                raise _ValidatorFailure("token validation failed")
            identity = found
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


async def _refuse(scope: Scope, send: Send, error: GrpcOboError, kind: str) -> None:
    status = Code[status_for(error).name].http_status
    if status >= 500:
        _log.warning("front door failed a request: %s", type(error).__name__)
    else:
        _log.debug("refused %s: %s", scope.get("path", ""), type(error).__name__)
    if kind == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    message = str(getattr(error, "message", "request refused"))
    await _answer(send, status, message, www_authenticate_for(error) if status < 500 else None)


async def _answer(send: Send, status: int, message: str, challenge: str | None) -> None:
    body = json.dumps({"detail": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if challenge:
        headers.append((b"www-authenticate", challenge.encode("latin-1", "replace")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
