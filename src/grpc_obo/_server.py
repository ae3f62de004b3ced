"""The grpc.aio server interceptor: bearer token in, verified identity in the handler's context.

`intercept_service` only sees the method name and the metadata, so it resolves the method's rule
and returns the handler rebuilt with the same serializers and the same kind (coroutine, async
generator, `context.write` coroutine, or sync function run in grpc's thread pool). The wrapped
behaviour reads `authorization`, validates the token, applies the `Policy`, and runs the original
handler with `current_identity()` set for exactly its execution. Failures end the call with
`context.abort`, the code from `status_for` and a `www-authenticate` challenge in the trailing
metadata. Decisions live in `_policy` and the validator; this module only adapts them to grpc.
A grpc_obo error raised by the handler itself (its On-Behalf-Of exchange needing a claims
challenge, the authority down) ends the call through the same table, so the client can act.

Public methods never look at `authorization`: a token sent to one is neither validated nor
exposed (`current_identity()` is None there), so a stale token cannot break a health probe.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import grpc.aio

from grpc_obo._errors import (
    ConfigurationError,
    GrpcOboError,
    KeySourceUnavailableError,
    MalformedTokenError,
    MissingTokenError,
    status_for,
    www_authenticate_for,
)
from grpc_obo._identity import Identity, _current
from grpc_obo._policy import MethodPolicy, Policy, declared_policy

__all__ = ["AuthServerInterceptor", "TokenValidatorLike", "server_interceptor"]

_LOGGER = logging.getLogger("grpc_obo.server")

if TYPE_CHECKING:
    _InterceptorBase = grpc.aio.ServerInterceptor[Any, Any]
else:  # the runtime class is not generic
    _InterceptorBase = grpc.aio.ServerInterceptor


class TokenValidatorLike(Protocol):
    """What the interceptor needs from a validator (`grpc_obo.TokenValidator` is one)."""

    async def validate(self, token: str) -> Identity: ...


class _ValidatorFailure(GrpcOboError):
    """The validator raised something unexpected; the client learns nothing more (INTERNAL)."""


_VALIDATOR_FAILURE = "token validation failed"


def server_interceptor(
    validator: TokenValidatorLike, *, policy: Policy | None = None
) -> grpc.aio.ServerInterceptor[Any, Any]:
    """Build the interceptor that authenticates and authorizes every call of a grpc.aio server.

    `policy` defaults to `Policy()`: every method needs a valid delegated token, health and
    reflection are public. Pass it to `grpc.aio.server(interceptors=[...])`.
    """
    return AuthServerInterceptor(validator, policy=policy)


class AuthServerInterceptor(_InterceptorBase):
    """Validates `authorization: Bearer` and applies a `Policy` to each call (see module doc)."""

    def __init__(self, validator: TokenValidatorLike, *, policy: Policy | None = None) -> None:
        if not inspect.iscoroutinefunction(getattr(validator, "validate", None)):
            raise ConfigurationError("validator must have an async validate(token) method")
        if policy is None:
            policy = Policy()
        if not isinstance(policy, Policy):
            raise ConfigurationError("policy must be a grpc_obo.Policy")
        self._validator = validator
        self._policy = policy
        # Rebuilt handlers of async behaviours, per method: the per-call work is then only the
        # token check itself. Keyed by method and handler identity (the handler is kept alive
        # so its id stays unique); bounded in case a generic handler makes new objects per call.
        self._rebuilt: dict[tuple[str, int], tuple[object, grpc.RpcMethodHandler[Any, Any]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler: grpc.RpcMethodHandler[Any, Any] | None = await continuation(handler_call_details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED
            return handler  # type: ignore[return-value]
        method = handler_call_details.method  # str in grpc.aio (bytes only on the client side)
        # NOTE: `context.invocation_metadata()` rebuilds the metadata on every call and costs
        # more than all our other per-call work together (see benchmarks/server_bench.py). grpc.aio
        # runs intercept_service and the handler in the RPC's own task, so hand the parsed
        # metadata over, tagged with that task: a handler in any other task ignores it.
        _call_metadata.set((asyncio.current_task(), handler_call_details.invocation_metadata))
        key = (method, id(handler))
        cached = self._rebuilt.get(key)
        if cached is not None and cached[0] is handler:
            return cached[1]
        behavior = _behavior_of(handler)
        declared = declared_policy(behavior)
        public = self._policy.is_public(method, declared)
        is_async = inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)
        rebuilt = _rebuild(handler, _Gate(self, method, declared, public, for_sync=not is_async))
        # A sync handler's gate holds this call's context (see _Gate), so it is never reused.
        if is_async and len(self._rebuilt) < _MAX_REBUILT:
            self._rebuilt[key] = (handler, rebuilt)
        return rebuilt

    async def _authenticate(
        self,
        metadata: Iterable[tuple[str, str | bytes]],
        method: str,
        declared: MethodPolicy | None,
    ) -> Identity:
        """The caller's identity, or a `GrpcOboError` saying why the call may not proceed."""
        token = _bearer_token(metadata)
        try:
            # `object`: a validator outside our control is checked, not trusted, to return Identity.
            identity: object = await self._validator.validate(token)
        except GrpcOboError:
            raise
        except Exception as exc:
            _log_unexpected(exc, token, method)
            raise _ValidatorFailure(_VALIDATOR_FAILURE) from None
        if not isinstance(identity, Identity):
            _LOGGER.error("validator returned %s, not an Identity", type(identity).__name__)
            raise _ValidatorFailure(_VALIDATOR_FAILURE)
        self._policy.decide(identity, method, declared)
        return identity


class _Gate:
    """The per-call authorization step shared by every handler kind."""

    __slots__ = ("_context", "_declared", "_interceptor", "_loop", "_method", "_public")

    def __init__(
        self,
        interceptor: AuthServerInterceptor,
        method: str,
        declared: MethodPolicy | None,
        public: bool,
        *,
        for_sync: bool,
    ) -> None:
        self._interceptor = interceptor
        self._method = method
        self._declared = declared
        self._public = public  # a public method: no token is read
        # NOTE: intercept_service runs in the RPC's own task. Sync handlers run in grpc's thread
        # pool where that context is lost (grpc issue 37881), so keep a copy for them, plus the
        # loop the validator must run on. Async handlers run in the RPC's task: nothing to keep.
        self._context = contextvars.copy_context() if for_sync else None
        self._loop = asyncio.get_running_loop() if for_sync else None

    async def _identity(self, metadata: Iterable[tuple[str, str | bytes]]) -> Identity | None:
        if self._public:
            return None
        return await self._interceptor._authenticate(metadata, self._method, self._declared)

    async def authorize(self, context: grpc.aio.ServicerContext[Any, Any]) -> Identity | None:
        """The identity for an async handler; aborts the call (raises AbortError) on refusal."""
        if self._public:
            return None
        try:
            return await self._identity(_metadata_of(context) or ())
        except GrpcOboError as exc:
            code, details, trailing = self._refusal(exc)
            await context.abort(code, details, trailing)

    def authorize_sync(self, context: Any) -> tuple[bool, Identity | None]:
        """The same for a sync handler, in grpc's thread pool: (allowed, identity).

        A refusal is written to the context by `fail_sync`, not raised with `context.abort()`.
        """
        if self._public:
            return True, None
        assert self._loop is not None, "a sync gate is built with for_sync=True"
        metadata = tuple(context.invocation_metadata() or ())
        future = asyncio.run_coroutine_threadsafe(self._identity(metadata), self._loop)
        try:
            return True, future.result()
        except GrpcOboError as exc:
            self.fail_sync(context, exc)
            return False, None

    async def fail(self, context: grpc.aio.ServicerContext[Any, Any], exc: GrpcOboError) -> None:
        """End the call for a grpc_obo error the handler raised (the same status table)."""
        code, details, trailing = self._refusal(exc)
        await context.abort(code, details, trailing)

    def fail_sync(self, context: Any, exc: GrpcOboError) -> None:
        """Set the refusal on a sync handler's context; the caller then ends the handler.

        NOTE: not `context.abort()`: grpc.aio sometimes hangs a sync generator that raises
        AbortError (seen with no interceptor at all), while a handler that returns with a
        non-OK code ends cleanly with that status and the trailing metadata.
        """
        code, details, trailing = self._refusal(exc)
        context.set_trailing_metadata(trailing)
        context.set_code(code)
        context.set_details(details)

    def sync_context(self, identity: Identity | None) -> contextvars.Context:
        """A private copy of the RPC's context with the identity set, for one sync handler."""
        assert self._context is not None, "a sync gate is built with for_sync=True"
        ctx = self._context.copy()
        ctx.run(_current.set, identity)
        return ctx

    def _refusal(
        self, exc: GrpcOboError
    ) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
        code = status_for(exc)
        challenge = www_authenticate_for(exc)
        trailing = (("www-authenticate", challenge),) if challenge else ()
        reason = getattr(exc, "reason", None)
        level = logging.WARNING if isinstance(exc, KeySourceUnavailableError) else logging.DEBUG
        _LOGGER.log(
            level, "refused %s: %s (%s)", self._method, type(exc).__name__, reason or code.name
        )
        # The details are the error's fixed message: errors never carry the token or keys.
        return code, str(getattr(exc, "message", _VALIDATOR_FAILURE)), trailing


_MAX_REBUILT = 4096
_call_metadata: contextvars.ContextVar[tuple[object, Any] | None] = contextvars.ContextVar(
    "grpc_obo_call_metadata", default=None
)


def _metadata_of(context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    """This call's metadata: handed over by intercept_service in this task, else the context's."""
    handed = _call_metadata.get()
    if handed is not None:
        _call_metadata.set(None)  # read once: a later step of this task must not reuse it
        task, metadata = handed
        if task is asyncio.current_task():
            return metadata
    return context.invocation_metadata()


def _bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    values = [value for key, value in metadata if key.lower() == "authorization"]
    if not values:
        raise MissingTokenError("no bearer token in the authorization metadata")
    if len(values) > 1:
        raise MalformedTokenError(
            "more than one authorization value", reason="multiple_authorization"
        )
    value = values[0]
    if not isinstance(value, str):
        raise MalformedTokenError("the authorization value is not text", reason="malformed_header")
    scheme, _, rest = value.partition(" ")
    if scheme.lower() != "bearer":
        # RFC 6750 §3.1: another scheme counts as "no authentication": no error code.
        raise MissingTokenError(
            "the authorization scheme is not Bearer", reason="unsupported_scheme"
        )
    token = rest.lstrip(" ")  # RFC 7235: one or more spaces after the scheme
    if not token:
        raise MalformedTokenError("the bearer token is empty", reason="empty_token")
    # NOTE: gRPC metadata values are printable ASCII, so a space is the only whitespace that can
    # get here; `in` is a memchr, where a regex or per-character loop costs microseconds per call
    # over a 1-2 KB token. The validator checks the token's alphabet strictly anyway.
    if " " in token or not token.isprintable():
        raise MalformedTokenError("the bearer token contains whitespace", reason="malformed_header")
    return token


def _log_unexpected(exc: Exception, token: str, method: str) -> None:
    # NOTE: a validator bug may put the token (or one of its segments) in its message; log the
    # traceback for whoever debugs it, with every piece of the token cut out.
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    for secret in sorted({token, *token.split(".")}, key=len, reverse=True):
        if len(secret) >= 8:
            text = text.replace(secret, "[redacted]")
    _LOGGER.error("validator failed unexpectedly on %s:\n%s", method, text)


def _behavior_of(handler: grpc.RpcMethodHandler[Any, Any]) -> object:
    return (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )


def _rebuild(
    handler: grpc.RpcMethodHandler[Any, Any], gate: _Gate
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler kind with the same serializers, its behaviour behind the gate."""
    des, ser = handler.request_deserializer, handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(
            _stream_response(handler.stream_stream, gate), des, ser
        )
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(
            _unary_response(handler.stream_unary, gate), des, ser
        )
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            _stream_response(handler.unary_stream, gate), des, ser
        )
    return grpc.unary_unary_rpc_method_handler(_unary_response(handler.unary_unary, gate), des, ser)


def _unary_response(fn: Any, gate: _Gate) -> Callable[[Any, Any], Any]:
    """Wrap a handler with one response (unary-unary, stream-unary)."""
    if inspect.iscoroutinefunction(fn):

        async def behavior(request: Any, context: Any) -> Any:
            identity = await gate.authorize(context)
            token = _current.set(identity)
            try:
                return await fn(request, context)
            except GrpcOboError as exc:  # e.g. the handler's own On-Behalf-Of exchange
                await gate.fail(context, exc)
            finally:
                _current.reset(token)

        return behavior

    def sync_behavior(request: Any, context: Any) -> Any:
        allowed, identity = gate.authorize_sync(context)
        if not allowed:
            return None  # grpc drops the response of a call whose code is not OK
        try:
            return gate.sync_context(identity).run(fn, request, context)
        except GrpcOboError as exc:
            gate.fail_sync(context, exc)
            return None

    return sync_behavior


def _stream_response(fn: Any, gate: _Gate) -> Callable[[Any, Any], Any]:
    """Wrap a handler with streamed responses (unary-stream, stream-stream), keeping its shape."""
    if inspect.iscoroutinefunction(fn):
        # `context.write()` style: a coroutine that returns None.
        return _unary_response(fn, gate)

    if inspect.isasyncgenfunction(fn):

        async def agen_behavior(request: Any, context: Any) -> AsyncIterator[Any]:
            identity = await gate.authorize(context)
            inner = fn(request, context)
            try:
                while True:
                    # NOTE: set the identity only while the handler's own code runs, never
                    # across our `yield`: the generator may be resumed or closed from another
                    # context (cancellation, GC finalizer), where a reset would fail.
                    token = _current.set(identity)
                    try:
                        item = await inner.__anext__()
                    except StopAsyncIteration:
                        return
                    except GrpcOboError as exc:
                        await gate.fail(context, exc)
                    finally:
                        _current.reset(token)
                    yield item
            finally:
                token = _current.set(identity)
                try:
                    await inner.aclose()
                finally:
                    _current.reset(token)

        return agen_behavior

    def gen_behavior(request: Any, context: Any) -> Iterator[Any]:
        # grpc iterates a sync generator in one pool thread; each step runs in a private
        # context holding the identity, so the thread's own context is never touched.
        allowed, identity = gate.authorize_sync(context)
        if not allowed:
            return
        ctx = gate.sync_context(identity)
        inner = ctx.run(fn, request, context)
        try:
            while True:
                try:
                    item = ctx.run(next, inner)
                except StopIteration:
                    return
                except GrpcOboError as exc:
                    gate.fail_sync(context, exc)
                    return
                yield item
        finally:
            close = getattr(inner, "close", None)
            if close is not None:
                ctx.run(close)

    return gen_behavior
