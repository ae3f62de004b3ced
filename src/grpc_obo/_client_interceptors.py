"""The grpc.aio client interceptors: one class per RPC arity over one shared core and one body.

`grpc.aio.Channel` files an interceptor object under the *first* interface it matches, so a
single class implementing all four would be registered as unary-unary only and streaming calls
would go out without a token (grpc issues 31442, 36180, 43512). The core copies the call's
metadata, replaces any `authorization` entry with the exchanged token (keeping `traceparent`
and everything else), records a failed call for the relay (marked app-only when it carried the
service's own token) and, when the downstream answers a call made as the user UNAUTHENTICATED
with a claims challenge, evicts the token and remembers the claims (`Exchanger.challenged`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import grpc
import grpc.aio

from grpc_obo._errors import ConfigurationError
from grpc_obo._exchange._exchanger import Exchanger
from grpc_obo._identity import Identity, SecretToken, current_identity
from grpc_obo._relay import (
    Code,
    Failures,
    challenge_values,
    choose_challenge,
    claims_of,
    recording,
)

__all__ = ["client_interceptors"]

_log = logging.getLogger("grpc_obo.client")

if TYPE_CHECKING:
    _UU = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _US = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
    _SU = grpc.aio.StreamUnaryClientInterceptor[Any, Any]
    _SS = grpc.aio.StreamStreamClientInterceptor[Any, Any]
else:  # the runtime classes are not generic
    _UU = grpc.aio.UnaryUnaryClientInterceptor
    _US = grpc.aio.UnaryStreamClientInterceptor
    _SU = grpc.aio.StreamUnaryClientInterceptor
    _SS = grpc.aio.StreamStreamClientInterceptor


def _method_name(method: str | bytes) -> str:
    # grpc.aio hands the method over as bytes; users configure it as text.
    return method.decode("ascii", "replace") if isinstance(method, bytes) else method


class _Core:
    """Scope choice, metadata rewriting, failure recording and claims-challenge eviction, shared
    by all arities, over one exchanger core."""

    def __init__(
        self,
        exchanger: Exchanger,
        *,
        scopes: Sequence[str],
        method_scopes: Mapping[str, Sequence[str]] | None,
    ) -> None:
        self._exchanger = exchanger
        self._ready = exchanger.ready  # a token at hand (cached, nothing to do), no coroutine
        self._acquire = exchanger.acquire
        self._as_user = exchanger.grant.as_user
        self._default = exchanger.scopes(scopes, "scopes")
        self._by_name: dict[str, tuple[str, ...]] = {}
        if method_scopes is not None and not isinstance(method_scopes, Mapping):
            raise ConfigurationError(
                "method_scopes must be a mapping of method or service names to scope lists",
                setting="method_scopes",
            )
        for name, value in (method_scopes or {}).items():
            if (
                not isinstance(name, str)
                or not name
                or not (name.startswith("/") or "/" not in name)
            ):
                given = repr(name) if isinstance(name, str) else f"a {type(name).__name__}"
                raise ConfigurationError(
                    f"method_scopes keys are '/pkg.Service/Method' or 'pkg.Service', not {given}",
                    setting="method_scopes",
                )
            self._by_name[name] = exchanger.scopes(value, f"method_scopes[{name!r}]")
        # Strong references to eviction tasks (the loop keeps only weak ones).
        self._pending: set[asyncio.Task[None]] = set()
        # Each method as grpc hands it over (bytes): its name and scopes, worked out once.
        self._routes: dict[str | bytes, tuple[str, tuple[str, ...]]] = {}

    def scopes_for(self, method: str) -> tuple[str, ...]:
        if method in self._by_name:
            return self._by_name[method]
        service = method.lstrip("/").split("/", 1)[0]
        return self._by_name.get(service, self._default)

    def route(self, method: str | bytes) -> tuple[str, tuple[str, ...]]:
        """(the method's name, its scopes), memoized: this runs on every outbound call."""
        found = self._routes.get(method)
        if found is None:
            name = _method_name(method)
            found = (name, self.scopes_for(name))
            if len(self._routes) < _MAX_ROUTES:  # a generic stub may name endless methods
                self._routes[method] = found
        return found

    def ready(
        self, details: grpc.aio.ClientCallDetails, scopes: tuple[str, ...]
    ) -> grpc.aio.ClientCallDetails | None:
        """The call's details with a token at hand (a cache hit), or None: `authorize`.

        NOTE: the hot path of every outbound call, synchronous: a cached token costs no
        coroutine, task or lock (issue 23: the chain's client side was ~12 µs over a floor
        interceptor that attaches a ready token).
        """
        if self._pending:
            return None
        token = self._ready(scopes)
        return None if token is None else _with_token(details, token)

    async def authorize(
        self, details: grpc.aio.ClientCallDetails, scopes: tuple[str, ...]
    ) -> grpc.aio.ClientCallDetails:
        if self._pending:
            # A call just failed with a claims challenge: let its eviction land first so this
            # call does not reuse the rejected token.
            await asyncio.gather(*self._pending, return_exceptions=True)
        return _with_token(details, await self._acquire(scopes, timeout=details.timeout))

    def watch(self, call: Any, method: str) -> None:
        """Look at how `call` ended, at no cost beyond a callback when it succeeded.

        A failure (any status but OK) is recorded with its chosen challenge for the server
        interceptor to relay (`grpc_obo._relay`), marked app-only when the call carried the
        service's own token; a claims challenge to a call made as the user also evicts the
        cached token and remembers the claims for the user's next exchange.
        """
        # The done callback runs in whatever context grpc calls it from: capture the caller's
        # identity and the served call's failure list now.
        failures = recording()
        identity = current_identity() if self._as_user else None
        if failures is None and identity is None:
            return
        call.add_done_callback(_Watch(self, method, identity, failures))

    def _failed(
        self,
        call: Any,
        code: grpc.StatusCode,
        method: str,
        identity: Identity | None,
        failures: Failures | None,
    ) -> None:
        trailing = _result_now(call.trailing_metadata())
        # The same reading and choice the server interceptor makes when it relays.
        challenge = choose_challenge(challenge_values(trailing))
        if failures is not None:
            failures.record(Code[code.name], challenge, as_user=self._as_user)
        if (
            code is grpc.StatusCode.UNAUTHENTICATED
            and challenge is not None
            and challenge.get("error") == "insufficient_claims"
            and identity is not None
            and identity.is_user
        ):
            _log.info("downstream sent a claims challenge on %s: evicting", method)
            self._spawn(
                self._exchanger.challenged(self.scopes_for(method), identity, claims_of(challenge))
            )

    async def _check_later(
        self,
        call: Any,
        method: str,
        identity: Identity | None,
        failures: Failures | None,
    ) -> None:
        try:
            code = await call.code()
        except Exception:
            return
        if code is not grpc.StatusCode.OK:
            self._failed(call, code, method, identity, failures)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        # Kept until done: the next authorize() waits for evictions, so no call reuses a
        # token the downstream has just rejected.
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


_MAX_ROUTES = 4096


def _with_token(
    details: grpc.aio.ClientCallDetails, token: SecretToken
) -> grpc.aio.ClientCallDetails:
    """`details` with a copy of its metadata whose `authorization` is the token (the rest,
    `traceparent` included, kept in order)."""
    metadata = grpc.aio.Metadata()
    given = details.metadata
    if given is not None:
        for key, value in given:
            if key.lower() != "authorization":
                metadata.add(key, value)
    metadata.add("authorization", f"Bearer {token.reveal()}")
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout,
        metadata,
        details.credentials,
        details.wait_for_ready,
    )


class _Watch:
    """`_Core.watch`'s done callback: one slotted object per call (a closure would be five)."""

    __slots__ = ("core", "failures", "identity", "method")

    def __init__(
        self, core: _Core, method: str, identity: Identity | None, failures: Failures | None
    ) -> None:
        self.core = core
        self.method = method
        self.identity = identity
        self.failures = failures

    def __call__(self, finished: Any) -> None:
        code = _result_now(finished.code())
        if code is grpc.StatusCode.OK:
            return
        core = self.core
        if code is None:  # never seen: the status was not there yet; look later
            core._spawn(core._check_later(finished, self.method, self.identity, self.failures))
            return
        core._failed(finished, code, self.method, self.identity, self.failures)


def _result_now(awaitable: Any) -> Any:
    """The result of a coroutine that completes without suspending, else None.

    NOTE: in a done callback grpc.aio's `code()` and `trailing_metadata()` only read the status
    that has arrived; driving them here costs microseconds where a task per call cost a visible
    share of every outbound call. A coroutine that would suspend is closed (never seen).
    """
    try:
        awaitable.send(None)
    except StopIteration as finished:
        return finished.value
    except Exception:
        return None
    awaitable.close()
    return None


class _Intercept:
    """The one body of the four arity interceptors: a token on the way out, the outcome watched."""

    __slots__ = ("_core",)

    def __init__(self, core: _Core) -> None:
        self._core = core

    async def _intercept(self, continuation: Any, details: Any, request: Any) -> Any:
        core = self._core
        name, scopes = core.route(details.method)
        outgoing = core.ready(details, scopes) or await core.authorize(details, scopes)
        call = await continuation(outgoing, request)
        core.watch(call, name)
        return call


# NOTE: four classes, each matching one grpc interface only (see the module docstring), over
# the same function: `request` is the request, or the request iterator of streaming calls (the
# stubs name it per arity, hence `Any`). An alias, not a method calling it: no extra frame on
# the hot path.
class _UnaryUnary(_Intercept, _UU):
    __slots__ = ()
    intercept_unary_unary: Any = _Intercept._intercept


class _UnaryStream(_Intercept, _US):
    __slots__ = ()
    intercept_unary_stream: Any = _Intercept._intercept


class _StreamUnary(_Intercept, _SU):
    __slots__ = ()
    intercept_stream_unary: Any = _Intercept._intercept


class _StreamStream(_Intercept, _SS):
    __slots__ = ()
    intercept_stream_stream: Any = _Intercept._intercept


def client_interceptors(
    exchanger: Exchanger,
    scopes: Sequence[str],
    method_scopes: Mapping[str, Sequence[str]] | None,
) -> list[grpc.aio.ClientInterceptor]:
    core = _Core(exchanger, scopes=scopes, method_scopes=method_scopes)
    # grpc-stubs declares ClientInterceptor as an opaque placeholder: the cast is the stub's ask.
    interceptors: list[Any] = [
        _UnaryUnary(core),
        _UnaryStream(core),
        _StreamUnary(core),
        _StreamStream(core),
    ]
    return cast("list[grpc.aio.ClientInterceptor]", interceptors)
