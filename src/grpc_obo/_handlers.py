"""Handler shapes on a grpc.aio server: the servicer's behaviour rebuilt behind a `Gate`.

grpc.aio runs four RPC kinds in several shapes: a coroutine (one response, or responses sent
with `context.write`), an async generator, and sync functions or generators run in grpc's thread
pool. Each wrapper here keeps the shape and the serializers, sets `current_identity()` for exactly
the servicer's own code, collects the failures of On-Behalf-Of calls made meanwhile, and hands
what the servicer did not catch to the gate (a grpc_obo error: its status; a downstream failure:
the relay). A refused call gets a handler of the same kind that only ends it.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import grpc

from grpc_obo._errors import GrpcOboError
from grpc_obo._gate import Gate, Trailing
from grpc_obo._identity import Identity, _current
from grpc_obo._relay import Failures, collect, uncollect

__all__ = ["behavior_of", "guarded", "handoff", "rebuild", "refusing", "sync_call"]

# The identity, and its span attributes when the validation computed them (else None).
Handed = tuple[Identity, "Mapping[str, str] | None"]

# NOTE: a one-item list, not the identity itself: a task that copies this context shares the
# list, so whoever takes the identity first empties it for every copy. Only code running for
# this call can see it: grpc sets it in the RPC's own task and our handler takes it before
# the servicer's code runs (see AuthServerInterceptor.intercept_service).
handoff: contextvars.ContextVar[list[Handed] | None] = contextvars.ContextVar(
    "grpc_obo_handoff", default=None
)


def _handed() -> Handed | None:
    """What intercept_service handed to this call's handler, taken once; else None."""
    cell = handoff.get()
    return cell.pop() if cell else None


def behavior_of(handler: grpc.RpcMethodHandler[Any, Any]) -> object:
    return (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )


Wrap = Callable[[Any, bool], Callable[[Any, Any], Any]]


def rebuild(
    handler: grpc.RpcMethodHandler[Any, Any], wrap: Wrap, *, parse_requests: bool = True
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


def guarded(gate: Gate) -> Wrap:
    """The wrapper of an async behaviour behind `gate`, keeping its shape."""

    def wrap(fn: Any, streaming: bool) -> Callable[[Any, Any], Any]:
        if inspect.isasyncgenfunction(fn):
            return _async_generator(fn, gate)
        return _coroutine(fn, gate)

    return wrap


def refusing(
    handler: grpc.RpcMethodHandler[Any, Any],
    code: grpc.StatusCode,
    details: str,
    trailing: Trailing,
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same kind that only ends the call; the request is never deserialized."""

    async def refuse(request: Any, context: Any) -> None:
        await context.abort(code, details, trailing)

    async def refuse_stream(request: Any, context: Any) -> AsyncIterator[Any]:
        await context.abort(code, details, trailing)
        yield  # pragma: no cover - abort raises; the yield makes this an async generator

    # NOTE: a response-streaming refusal must be an async generator: an interceptor around ours
    # may iterate the behaviour with `async for` (opentelemetry-instrumentation-grpc does), and
    # a coroutine there ends as UNKNOWN without our status and challenge.
    return rebuild(
        handler, lambda fn, streaming: refuse_stream if streaming else refuse, parse_requests=False
    )


def _coroutine(fn: Any, gate: Gate) -> Callable[[Any, Any], Any]:
    """A coroutine handler: one response, or streamed responses through `context.write`."""

    async def behavior(request: Any, context: Any) -> Any:
        # `_handed()` inlined: this runs on every call.
        cell = None if gate.public else handoff.get()
        identity: Identity | None
        if cell:
            identity, attributes = cell.pop()
            gate.observe(identity, attributes)
        else:
            identity = await gate.recover(context)
        failures = Failures()
        token = _current.set(identity)
        relay_token = collect(failures)
        try:
            return await fn(request, context)
        except GrpcOboError as exc:  # e.g. the handler's own On-Behalf-Of exchange
            await gate.fail(context, exc)
        except Exception as exc:  # e.g. a downstream call the handler did not catch
            await gate.relay(context, exc, failures)
            raise
        finally:
            uncollect(relay_token)
            _current.reset(token)

    return behavior


def _async_generator(fn: Any, gate: Gate) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def behavior(request: Any, context: Any) -> AsyncIterator[Any]:
        handed = None if gate.public else _handed()
        if handed is not None:
            identity: Identity | None = handed[0]
            gate.observe(*handed)
        else:
            identity = None if gate.public else await gate.recover(context)
        inner = fn(request, context)
        failures = Failures()
        rpc_task = asyncio.current_task()
        try:
            while True:
                # NOTE: set the identity only while the handler's own code runs, never across
                # our `yield`: the generator may be resumed or closed from another context
                # (cancellation, GC finalizer), where a reset would fail.
                token = _current.set(identity)
                relay_token = collect(failures)
                try:
                    item = await inner.__anext__()
                except StopAsyncIteration:
                    return
                except GrpcOboError as exc:
                    await gate.fail(context, exc)
                except Exception as exc:
                    await gate.relay(context, exc, failures)
                    raise
                finally:
                    uncollect(relay_token)
                    _current.reset(token)
                yield item
        finally:
            # NOTE: closing runs the handler's own `finally`, whose On-Behalf-Of calls are this
            # call's: recorded here, never in the context of whoever closes us (grpc leaves a
            # cancelled call's generator to asyncio's finalizer, an unrelated task).
            token = _current.set(identity)
            relay_token = collect(failures)
            try:
                await inner.aclose()
            except Exception as exc:
                # Closed in the call's own task: early, by a wrapper, while the call goes on.
                # In another: grpc has given up on the call (the client cancelled it).
                if asyncio.current_task() is rpc_task and not context.done():
                    if isinstance(exc, GrpcOboError):
                        await gate.fail(context, exc)
                    await gate.relay(context, exc, failures)
                    raise
                if not await gate.relay_ended(exc, failures):
                    raise
            finally:
                uncollect(relay_token)
                _current.reset(token)

    return behavior


class _SyncCall:
    """One call of a sync handler, which grpc runs in its thread pool.

    NOTE: contextvars do not cross into that pool (grpc issue 37881), so the identity, checked
    on the event loop in intercept_service, travels with the call; every step of the handler
    runs in a private copy of the RPC's context holding it (and the call's failure list), never
    touching the thread's own.
    """

    __slots__ = ("_context", "_loop", "failures", "gate")

    def __init__(self, gate: Gate, identity: Identity | None) -> None:
        self.gate = gate
        self.failures = Failures()
        self._loop = asyncio.get_running_loop()  # built in intercept_service, on the server's
        self._context = contextvars.copy_context()
        self._context.run(_current.set, identity)
        self._context.run(collect, self.failures)

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._context.run(fn, *args)

    def fail(self, context: Any, exc: Exception) -> bool:
        """Set the status for what the handler raised on its context; False: not ours to end.

        NOTE: not `context.abort()`: grpc.aio sometimes hangs a sync generator that raises
        AbortError (seen with no interceptor at all), while a handler that returns with a
        non-OK code ends cleanly with that status and the trailing metadata.
        """
        if not isinstance(exc, GrpcOboError):
            return self.gate.sync_relay(context, exc, self.failures, self._loop)
        code, details, trailing = self.gate.refusal(exc)
        context.set_trailing_metadata(trailing)
        context.set_code(code)
        context.set_details(details)
        return True


def sync_call(gate: Gate, identity: Identity | None) -> Wrap:
    """The wrapper of a sync behaviour for one call (its identity travels with it)."""
    call = _SyncCall(gate, identity)

    def wrap(fn: Any, streaming: bool) -> Callable[[Any, Any], Any]:
        return _sync_generator(fn, call) if streaming else _sync_function(fn, call)

    return wrap


def _sync_function(fn: Any, call: _SyncCall) -> Callable[[Any, Any], Any]:
    def behavior(request: Any, context: Any) -> Any:
        try:
            return call.run(fn, request, context)
        except Exception as exc:
            if not call.fail(context, exc):
                raise
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
                except Exception as exc:
                    if not call.fail(context, exc):
                        raise
                    return
                yield item
        finally:
            # NOTE: the handler's `finally` runs in the call's own context (its failures are
            # this call's). After a cancel grpc does not close it: its pool thread waits to queue
            # the next item for a consumer that is gone (grpc's generator_to_async_generator).
            close = getattr(inner, "close", None)
            if close is not None:
                call.run(close)

    return behavior
