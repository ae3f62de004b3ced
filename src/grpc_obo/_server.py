"""The grpc.aio server interceptor: bearer token in, verified identity in the handler's context.

`intercept_service` sees the method name and the metadata grpc has already parsed. It reads
`authorization`, validates the token and applies the method's rule (resolved once per method)
right there, in the RPC's own task. A refused call gets a handler of the same kind that only
ends it with `context.abort`, the code from `status_for` and a `www-authenticate` challenge in
the trailing metadata; its request is never deserialized. An accepted call gets the method's
handler rebuilt once with the same serializers and kind (coroutine, async generator,
`context.write` coroutine, or sync function run in grpc's thread pool), which sets
`current_identity()` for exactly the original handler's execution.
Decisions live in `_policy` and the validator; this module only adapts them to grpc.
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
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import grpc.aio

from grpc_obo._errors import (
    AccessDeniedError,
    ClaimsChallengeError,
    ConfigurationError,
    ConsentRequiredError,
    DownstreamError,
    GrpcOboError,
    InvalidGrantError,
    KeySourceUnavailableError,
    MalformedTokenError,
    MissingTokenError,
    TokenExchangeError,
    status_for,
    www_authenticate_for,
)
from grpc_obo._identity import Identity, _current, _outbound_failures
from grpc_obo._policy import Policy, resolve_declared
from grpc_obo._telemetry import Telemetry
from grpc_obo._validation import TokenValidator

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
    validator: TokenValidatorLike,
    *,
    policy: Policy | None = None,
    telemetry: Telemetry | None = None,
) -> grpc.aio.ServerInterceptor[Any, Any]:
    """Build the interceptor that authenticates and authorizes every call of a grpc.aio server.

    `policy` defaults to `Policy()`: every method needs a valid delegated token, health and
    reflection are public. `telemetry` defaults to the global OpenTelemetry providers. Pass it
    to `grpc.aio.server(interceptors=[...])`, last (see the README on interceptor order).
    """
    return AuthServerInterceptor(validator, policy=policy, telemetry=telemetry)


class AuthServerInterceptor(_InterceptorBase):
    """Validates `authorization: Bearer` and applies a `Policy` to each call (see module doc)."""

    def __init__(
        self,
        validator: TokenValidatorLike,
        *,
        policy: Policy | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        if not inspect.iscoroutinefunction(getattr(validator, "validate", None)):
            raise ConfigurationError("validator must have an async validate(token) method")
        if policy is None:
            policy = Policy()
        if not isinstance(policy, Policy):
            raise ConfigurationError("policy must be a grpc_obo.Policy")
        if telemetry is not None and not isinstance(telemetry, Telemetry):
            raise ConfigurationError("telemetry must be a grpc_obo.Telemetry")
        self._validator = validator
        self._policy = policy
        self.telemetry = telemetry if telemetry is not None else Telemetry()
        # Key fetches are traced through the validator's key source, when it takes an observer.
        source = getattr(validator, "key_source", None)
        if source is not None and hasattr(source, "observer"):
            source.observer = self.telemetry
        # Our own validator answers repeat tokens synchronously (see TokenValidator.cached).
        # NOTE: only when `validate` is ours: a subclass that adds checks to `validate` (say, a
        # revocation list) must see every call, cached tokens included.
        uses_ours = type(validator).validate is TokenValidator.validate
        self._lookup = (
            validator.cached if uses_ours and isinstance(validator, TokenValidator) else None
        )
        # What each method needs, built on its first call (rule resolved, async handler
        # rebuilt) so the per-call work is the token check itself. Bounded in case a generic
        # handler serves an open-ended set of method names.
        self._methods: dict[str, _Method] = {}
        # The policy's method names are checked against what the server serves once, at the
        # first call (the interceptor never sees the server itself).
        self._served_checked = False
        self._reported: set[str] = set()  # methods refused for an uncertain rule, logged once

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler: grpc.RpcMethodHandler[Any, Any] | None = await continuation(handler_call_details)
        if not self._served_checked:
            await self._warn_unserved(continuation, type(handler_call_details))
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED
            return handler  # type: ignore[return-value]
        method = handler_call_details.method  # str in grpc.aio (bytes only on the client side)
        entry = self._methods.get(method)
        if entry is None or entry.original is not handler:
            entry = self._prepare(method, handler)
        gate = entry.gate
        if gate.public:
            return entry.rebuilt or _rebuild(handler, _SyncCall(gate, None).wrap)
        # NOTE: authenticate here, from the metadata grpc already parsed: the handler's own
        # `context.invocation_metadata()` rebuilds it on every call and cost more than all our
        # other per-call work (benchmarks/server_bench.py). A refused call never reaches the
        # handler, nor the request deserializer: an unauthenticated caller's payload is not parsed.
        metadata = handler_call_details.invocation_metadata
        started = 0  # when validation work started: only then is there something to trace
        identity: Identity | None = None
        try:
            token = _bearer_token(metadata)
            # A token verified before costs a lookup, without a coroutine (nor a span).
            identity = self._lookup(token) if self._lookup is not None else None
            if identity is None:
                started = time.time_ns()
                with self.telemetry.caller_context(metadata):
                    identity = await self._validate(token, gate)
            gate.check(identity)
        except GrpcOboError as exc:
            refused = _Note(started, exc, identity, metadata)
            return _refusing(handler, *gate.refusal(exc), gate, refused)
        note = _Note(started, None, identity, metadata) if started else None
        if entry.rebuilt is None:  # a sync behaviour: its call carries the identity
            gate.observe(identity, note)  # its thread would not see the RPC's span anyway
            return _rebuild(handler, _SyncCall(gate, identity).wrap)
        # grpc.aio runs intercept_service and the handler in the RPC's own task: hand the
        # identity over through that task's context; the handler sets it for exactly its run.
        _handoff.set([(identity, note)])
        return entry.rebuilt

    async def _warn_unserved(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details_type: Callable[..., grpc.HandlerCallDetails],
    ) -> None:
        """Warn once about policy entries naming a method the server does not serve (a typo).

        NOTE: grpc.aio's continuation consumes its interceptor chain on the first call, so these
        lookups reach the registered handlers directly, not the interceptors after ours (which
        never see a call that does not exist); grpc.aio only takes call details of its own type.
        Service names cannot be probed this way:
        `Policy.check_served` checks them against the service descriptors at start-up.
        """
        self._served_checked = True
        for name in sorted(self._policy.named()):
            if not name.startswith("/"):
                continue
            try:
                found = await continuation(details_type(name, ()))
            except Exception:
                _LOGGER.debug("could not look up %s in the server's handlers", name)
                continue
            if found is None:
                _LOGGER.warning(
                    "the policy names %r, which this server does not serve: a typo protects "
                    "nothing (check the name, or call Policy.check_served at start-up)",
                    name,
                )

    def _prepare(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> _Method:
        behavior = _behavior_of(handler)
        declared, certain = resolve_declared(behavior, method)
        if certain:
            public = self._policy.is_public(method, declared)
            check = self._policy.checker(method, declared)
        else:
            public, check = False, _deny_uncertain
            if method not in self._reported:  # once: a rebuilt wrapper comes with every call
                self._reported.add(method)
                _log_uncertain(method)
        gate = _Gate(self, method, public=public, check=check)
        is_async = inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)
        entry = _Method(handler, gate, _rebuild(handler, gate.wrap) if is_async else None)
        if len(self._methods) < _MAX_METHODS or method in self._methods:
            self._methods[method] = entry
        return entry

    async def _validate(self, token: str, gate: _Gate) -> Identity:
        """The validator's verdict on `token`: an Identity, or a `GrpcOboError` saying why not."""
        try:
            # `object`: a validator outside our control is checked, not trusted, to return Identity.
            identity: object = await self._validator.validate(token)
        except GrpcOboError:
            raise
        except Exception as exc:
            _log_unexpected(exc, token, gate.method)
            raise _ValidatorFailure(_VALIDATOR_FAILURE) from None
        if not isinstance(identity, Identity):
            _LOGGER.error("validator returned %s, not an Identity", type(identity).__name__)
            raise _ValidatorFailure(_VALIDATOR_FAILURE)
        return identity


class _Method:
    """One method as first seen: grpc's handler, its gate, and the handler rebuilt behind it."""

    __slots__ = ("gate", "original", "rebuilt")

    def __init__(
        self,
        original: grpc.RpcMethodHandler[Any, Any],
        gate: _Gate,
        rebuilt: grpc.RpcMethodHandler[Any, Any] | None,
    ) -> None:
        self.original = original  # kept alive and compared by identity: a new handler, new entry
        self.gate = gate
        self.rebuilt = rebuilt  # None for a sync behaviour, rebuilt per call (see _SyncCall)


class _Gate:
    """The authorization step of one method, shared by every handler kind."""

    __slots__ = ("_interceptor", "check", "method", "public")

    def __init__(
        self,
        interceptor: AuthServerInterceptor,
        method: str,
        *,
        public: bool,
        check: Callable[[Identity], None],
    ) -> None:
        self._interceptor = interceptor
        self.method = method
        self.check = check  # the policy's decision for this method, resolved once
        self.public = public  # a public method: no token is read

    async def recover(self, context: grpc.aio.ServicerContext[Any, Any]) -> Identity | None:
        """The identity when none was handed over in this task; aborts the call on refusal.

        Reached only when another interceptor runs our handler outside the RPC's own task:
        authenticate again from the context, never go on without an identity.
        """
        if self.public:
            return None
        try:
            token = _bearer_token(context.invocation_metadata() or ())
            identity = await self._interceptor._validate(token, self)
            self.check(identity)
            return identity
        except GrpcOboError as exc:
            await context.abort(*self.refusal(exc))
            raise AssertionError("context.abort returned") from None  # pragma: no cover

    def observe(self, identity: Identity | None, note: _Note | None) -> None:
        """Telemetry for this call, from inside the handler, where the RPC's span is current.

        NOTE: the validation ran in intercept_service, before an instrumentation's server span
        existed; its span is recorded here with its real start and end times, as a child of
        that span. A verified-token cache hit records nothing but the caller's attributes.
        """
        telemetry = self._interceptor.telemetry
        if note is not None:
            who = note.identity
            attributes = (
                telemetry.identity_attributes(
                    oid=who.oid, tid=who.tid, client_id=who.client_id, kind=who.kind.value
                )
                if who is not None
                else {}
            )
            telemetry.validation(
                start_ns=note.start_ns or note.end_ns,
                end_ns=note.end_ns,
                attributes=attributes,
                error=note.error,
                metadata=note.metadata,
                worked=note.start_ns != 0,
            )
            if identity is not None:
                telemetry.annotate_current(attributes)
        elif identity is not None:
            telemetry.annotate_caller(
                oid=identity.oid,
                tid=identity.tid,
                client_id=identity.client_id,
                kind=identity.kind.value,
            )

    async def fail(self, context: grpc.aio.ServicerContext[Any, Any], exc: GrpcOboError) -> None:
        """End the call for a grpc_obo error the handler raised (the same status table)."""
        await context.abort(*self.refusal(exc))

    async def relay(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        error: grpc.aio.AioRpcError,
        failures: list[tuple[object, str | None]],
    ) -> None:
        """End the call with a downstream's refusal the handler did not catch, if it is one.

        Only failures an On-Behalf-Of channel recorded during this call are relayed (an error
        from any other channel stays the handler's own: grpc reports it as UNKNOWN). The client
        gets the downstream's status and challenge, never its details (they may name inner
        hosts); returns without ending the call when `error` is not such a failure.
        """
        downstream = _downstream_error(error, failures)
        if downstream is None:
            await asyncio.sleep(0)  # the client's done callback may run just after our await
            downstream = _downstream_error(error, failures)
        if downstream is not None:
            await self.fail(context, downstream)

    def wrap(self, fn: Any, streaming: bool) -> Callable[[Any, Any], Any]:
        """`fn` (async) behind this gate, keeping its shape."""
        if inspect.isasyncgenfunction(fn):
            return _async_generator(fn, self)
        return _coroutine(fn, self)

    def refusal(
        self, exc: GrpcOboError
    ) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
        """(code, details, trailing metadata) that end a call refused for `exc`."""
        code = status_for(exc)
        challenge = www_authenticate_for(exc)
        trailing = (("www-authenticate", challenge),) if challenge else ()
        reason = getattr(exc, "reason", None)
        if isinstance(exc, TokenExchangeError) and _not_the_users_fault(exc):
            # One line an operator can take to Entra: its error codes and correlation id.
            _LOGGER.warning(
                "%s: On-Behalf-Of exchange failed: %s (error=%s, error_codes=%s, "
                "correlation_id=%s)",
                self.method,
                type(exc).__name__,
                exc.error,
                ",".join(str(c) for c in exc.error_codes) or "-",
                exc.correlation_id or "-",
            )
        else:
            level = logging.WARNING if isinstance(exc, KeySourceUnavailableError) else logging.DEBUG
            _LOGGER.log(
                level, "refused %s: %s (%s)", self.method, type(exc).__name__, reason or code.name
            )
        # The details are the error's fixed message: errors never carry the token or keys.
        return code, str(getattr(exc, "message", _VALIDATOR_FAILURE)), trailing


class _SyncCall:
    """One call of a sync handler, which grpc runs in its thread pool.

    NOTE: contextvars do not cross into that pool (grpc issue 37881), so the identity, checked
    on the event loop in intercept_service, travels with the call; every step of the handler
    runs in a private copy of the RPC's context holding it, never touching the thread's own.
    """

    __slots__ = ("_context", "_gate")

    def __init__(self, gate: _Gate, identity: Identity | None) -> None:
        self._gate = gate
        self._context = contextvars.copy_context()
        self._context.run(_current.set, identity)

    def wrap(self, fn: Any, streaming: bool) -> Callable[[Any, Any], Any]:
        return _sync_generator(fn, self) if streaming else _sync_function(fn, self)

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._context.run(fn, *args)

    def fail(self, context: Any, exc: GrpcOboError) -> None:
        """Set the refusal on a sync handler's context; the caller then ends the handler.

        NOTE: not `context.abort()`: grpc.aio sometimes hangs a sync generator that raises
        AbortError (seen with no interceptor at all), while a handler that returns with a
        non-OK code ends cleanly with that status and the trailing metadata.
        """
        code, details, trailing = self._gate.refusal(exc)
        context.set_trailing_metadata(trailing)
        context.set_code(code)
        context.set_details(details)


def _not_the_users_fault(error: TokenExchangeError) -> bool:
    """A claims challenge or an expired assertion is for the user to fix; the rest is ours."""
    if isinstance(error, ConsentRequiredError):
        return True
    return not isinstance(error, ClaimsChallengeError | InvalidGrantError)


_RELAYED = {
    grpc.StatusCode.UNAUTHENTICATED: "a downstream API refused the user's token",
    grpc.StatusCode.PERMISSION_DENIED: "a downstream API denied the user access",
    grpc.StatusCode.UNAVAILABLE: "a downstream API is unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "a downstream API did not answer within the deadline",
}


def _downstream_error(
    error: grpc.aio.AioRpcError, failures: list[tuple[object, str | None]]
) -> DownstreamError | None:
    code = error.code()
    message = _RELAYED.get(code)
    if message is None or not failures:
        return None
    challenge = None
    trailing: Iterable[Any] = error.trailing_metadata() or ()
    for key, value in trailing:
        if key == "www-authenticate":
            challenge = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    if (code, challenge) not in failures:
        return None
    return DownstreamError(message, code=code, challenge=challenge)


def _log_uncertain(method: str) -> None:
    # NOTE: fail closed. The handler is another interceptor's wrapper we cannot see through,
    # and a `requires` rule may hide behind it: the policy's own rule could be looser than
    # that one, so it cannot stand in for it.
    _LOGGER.error(
        "refusing every call of %s: its handler is wrapped by another interceptor in a way "
        "grpc_obo cannot see through (or is a hand-written handler not named like the method), "
        "so a rule declared with grpc_obo.requires cannot be established. Put grpc_obo's "
        "interceptor last in the server's interceptor list, have the wrapping interceptor use "
        "functools.wraps, or mark the handler itself with grpc_obo.requires(...)",
        method,
    )


def _deny_uncertain(identity: Identity) -> None:
    raise AccessDeniedError(
        "this method's access rule could not be established", reason="rule_unavailable"
    )


class _Note:
    """What a call's validation did, kept for the handler to record in telemetry."""

    __slots__ = ("end_ns", "error", "identity", "metadata", "start_ns")

    def __init__(
        self,
        start_ns: int,
        error: GrpcOboError | None,
        identity: Identity | None,
        metadata: Any,
    ) -> None:
        self.start_ns = start_ns
        self.end_ns = time.time_ns()
        self.error = error
        self.identity = identity
        self.metadata = metadata or ()


_Handed = tuple[Identity, "_Note | None"]


def _handed() -> _Handed | None:
    """What intercept_service handed to this call's handler, taken once; else None."""
    cell = _handoff.get()
    return cell.pop() if cell else None


_MAX_METHODS = 4096
# NOTE: a one-item list, not the identity itself: a task that copies this context shares the
# list, so whoever takes the identity first empties it for every copy. Only code running for
# this call can see it: grpc sets it in the RPC's own task and our handler takes it before
# the servicer's code runs (see intercept_service).
_handoff: contextvars.ContextVar[list[_Handed] | None] = contextvars.ContextVar(
    "grpc_obo_handoff", default=None
)


def _bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    value: str | bytes | None = None
    for key, item in metadata:
        # gRPC delivers metadata keys in lower case (HTTP/2 refuses upper-case header names).
        if key == "authorization":
            if value is not None:
                raise MalformedTokenError(
                    "more than one authorization value", reason="multiple_authorization"
                )
            value = item
    if value is None:
        raise MissingTokenError("no bearer token in the authorization metadata")
    if not isinstance(value, str):
        raise MalformedTokenError("the authorization value is not text", reason="malformed_header")
    scheme, _, rest = value.partition(" ")
    if scheme != "Bearer" and scheme.lower() != "bearer":  # the usual spelling costs no copy
        # RFC 6750 §3.1: another scheme counts as "no authentication": no error code.
        raise MissingTokenError(
            "the authorization scheme is not Bearer", reason="unsupported_scheme"
        )
    token = rest.lstrip(" ")  # RFC 7235: one or more spaces after the scheme
    if not token:
        raise MalformedTokenError("the bearer token is empty", reason="empty_token")
    # NOTE: gRPC metadata values are printable ASCII, so a space is the only whitespace a gRPC
    # client can send. Both checks are C scans (tens of nanoseconds over a 1-2 KB token, where
    # `str.isprintable` costs microseconds); the validator checks the token's alphabet strictly.
    if not token.isascii() or " " in token:
        raise MalformedTokenError(
            "the bearer token is not one ASCII word", reason="malformed_header"
        )
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


_Wrap = Callable[[Any, bool], Callable[[Any, Any], Any]]


def _rebuild(
    handler: grpc.RpcMethodHandler[Any, Any], wrap: _Wrap, *, parse_requests: bool = True
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler kind with the same serializers, its behaviour wrapped."""
    des = handler.request_deserializer if parse_requests else None
    ser = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream, True), des, ser)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary, False), des, ser)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream, True), des, ser)
    return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary, False), des, ser)


def _refusing(
    handler: grpc.RpcMethodHandler[Any, Any],
    code: grpc.StatusCode,
    details: str,
    trailing: tuple[tuple[str, str], ...],
    gate: _Gate,
    note: _Note,
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same kind that only ends the call; the request is never deserialized."""

    async def refuse(request: Any, context: Any) -> None:
        gate.observe(None, note)
        await context.abort(code, details, trailing)

    async def refuse_stream(request: Any, context: Any) -> AsyncIterator[Any]:
        gate.observe(None, note)
        await context.abort(code, details, trailing)
        yield  # pragma: no cover - abort raises; the yield makes this an async generator

    # NOTE: a response-streaming refusal must be an async generator: an interceptor around ours
    # may iterate the behaviour with `async for` (opentelemetry-instrumentation-grpc does), and
    # a coroutine there ends as UNKNOWN without our status and challenge.
    return _rebuild(
        handler, lambda fn, streaming: refuse_stream if streaming else refuse, parse_requests=False
    )


def _coroutine(fn: Any, gate: _Gate) -> Callable[[Any, Any], Any]:
    """A coroutine handler: one response, or streamed responses through `context.write`."""

    async def behavior(request: Any, context: Any) -> Any:
        # `_handed()` inlined: this runs on every call.
        cell = None if gate.public else _handoff.get()
        identity: Identity | None
        if cell:
            identity, note = cell.pop()
            gate.observe(identity, note)
        else:
            identity = await gate.recover(context)
        failures: list[tuple[object, str | None]] = []
        token = _current.set(identity)
        relay_token = _outbound_failures.set(failures)
        try:
            return await fn(request, context)
        except GrpcOboError as exc:  # e.g. the handler's own On-Behalf-Of exchange
            await gate.fail(context, exc)
        except grpc.aio.AioRpcError as exc:  # a downstream call the handler did not catch
            await gate.relay(context, exc, failures)
            raise
        finally:
            _outbound_failures.reset(relay_token)
            _current.reset(token)

    return behavior


def _async_generator(fn: Any, gate: _Gate) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def behavior(request: Any, context: Any) -> AsyncIterator[Any]:
        handed = None if gate.public else _handed()
        if handed is not None:
            identity: Identity | None = handed[0]
            gate.observe(*handed)
        else:
            identity = None if gate.public else await gate.recover(context)
        inner = fn(request, context)
        failures: list[tuple[object, str | None]] = []
        try:
            while True:
                # NOTE: set the identity only while the handler's own code runs, never across
                # our `yield`: the generator may be resumed or closed from another context
                # (cancellation, GC finalizer), where a reset would fail.
                token = _current.set(identity)
                relay_token = _outbound_failures.set(failures)
                try:
                    item = await inner.__anext__()
                except StopAsyncIteration:
                    return
                except GrpcOboError as exc:
                    await gate.fail(context, exc)
                except grpc.aio.AioRpcError as exc:
                    await gate.relay(context, exc, failures)
                    raise
                finally:
                    _outbound_failures.reset(relay_token)
                    _current.reset(token)
                yield item
        finally:
            token = _current.set(identity)
            try:
                await inner.aclose()
            finally:
                _current.reset(token)

    return behavior


def _sync_function(fn: Any, call: _SyncCall) -> Callable[[Any, Any], Any]:
    def behavior(request: Any, context: Any) -> Any:
        try:
            return call.run(fn, request, context)
        except GrpcOboError as exc:
            call.fail(context, exc)
            return None  # grpc drops the response of a call whose code is not OK

    return behavior


def _sync_generator(fn: Any, call: _SyncCall) -> Callable[[Any, Any], Iterator[Any]]:
    def behavior(request: Any, context: Any) -> Iterator[Any]:
        # grpc iterates a sync generator in one pool thread; each step runs in the call's
        # private context, so the thread's own context is never touched.
        inner = call.run(fn, request, context)
        try:
            while True:
                try:
                    item = call.run(next, inner)
                except StopIteration:
                    return
                except GrpcOboError as exc:
                    call.fail(context, exc)
                    return
                yield item
        finally:
            close = getattr(inner, "close", None)
            if close is not None:
                call.run(close)

    return behavior
