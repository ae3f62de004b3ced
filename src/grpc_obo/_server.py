"""The grpc.aio server interceptor: bearer token in, verified identity in the handler's context.

`intercept_service` sees the method name and the metadata grpc has already parsed. It reads
`authorization`, validates the token and applies the method's rule (resolved once per method)
right there, in the RPC's own task. A refused call gets a handler of the same kind that only
ends it with `context.abort`, the code from `status_for` and a `www-authenticate` challenge in
the trailing metadata; its request is never deserialized. An accepted call gets the method's
handler rebuilt once with the same serializers and kind (coroutine, async generator,
`context.write` coroutine, or sync function run in grpc's thread pool), which sets
`current_identity()` for exactly the original handler's execution (`_handlers`).
Decisions live in `_policy`, `_declared`, the validator and `_relay`; this module and its
`_gate` (refusals, relay, telemetry per method) only adapt them to grpc. A grpc_obo error raised
by the handler itself (its On-Behalf-Of exchange needing a claims challenge, the authority
down) ends the call through the same table, and an On-Behalf-Of call's failure it does not
catch through the relay's, so the client can act and never reads what a downstream wrote.

Public methods never look at `authorization`: a token sent to one is neither validated nor
exposed (`current_identity()` is None there), so a stale token cannot break a health probe.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from grpc_obo._declared import explain_uncertain, resolve_declared
from grpc_obo._errors import ConfigurationError, GrpcOboError
from grpc_obo._gate import Gate, TokenValidatorLike, deny_uncertain
from grpc_obo._handlers import behavior_of, guarded, handoff, rebuild, refusing, sync_call
from grpc_obo._identity import Identity
from grpc_obo._policy import Policy
from grpc_obo._telemetry import Telemetry, recorder_for
from grpc_obo._validation._bearer import bearer_token
from grpc_obo._validation._guarded import Authenticator

__all__ = ["TokenValidatorLike", "server_interceptor"]

_LOGGER = logging.getLogger("grpc_obo.server")

if TYPE_CHECKING:
    _InterceptorBase = grpc.aio.ServerInterceptor[Any, Any]
else:  # the runtime class is not generic
    _InterceptorBase = grpc.aio.ServerInterceptor


def server_interceptor(
    validator: TokenValidatorLike,
    *,
    policy: Policy | None = None,
    telemetry: Telemetry | None = None,
) -> grpc.aio.ServerInterceptor[Any, Any]:
    """Build the interceptor that authenticates and authorizes every call of a grpc.aio server.

    It validates `authorization: Bearer` with `validator` (a `TokenValidator`, or anything with
    its `validate` and `cached`: see `TokenValidatorLike`) and applies `policy` to each call.
    `policy` defaults to `Policy()`: every method needs a valid delegated token, health and
    reflection are public. `telemetry` defaults to the global OpenTelemetry providers. Pass it
    to `grpc.aio.server(interceptors=[...])`, last (see the README on interceptor order).
    Misconfiguration raises `ConfigurationError` here, not on the first call.
    """
    return AuthServerInterceptor(validator, policy=policy, telemetry=telemetry)


class AuthServerInterceptor(_InterceptorBase):
    """Validates `authorization: Bearer` and applies a `Policy` to each call (see module doc).

    Private: `server_interceptor` is the one public way to build it.
    """

    def __init__(
        self,
        validator: TokenValidatorLike,
        *,
        policy: Policy | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        auth = Authenticator(validator, _LOGGER, needs_cached=True)
        if policy is None:
            policy = Policy()
        if not isinstance(policy, Policy):
            raise ConfigurationError("policy must be a grpc_obo.Policy", setting="policy")
        self._auth = auth
        self._policy = policy
        self._recorder = recorder_for(telemetry)
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
            return entry.rebuilt or rebuild(handler, sync_call(gate, None))
        # NOTE: authenticate here, from the metadata grpc already parsed: the handler's own
        # `context.invocation_metadata()` rebuilds it on every call and cost more than all our
        # other per-call work (benchmarks/server_bench.py). A refused call never reaches the
        # handler, nor the request deserializer: an unauthenticated caller's payload is not parsed.
        metadata = handler_call_details.invocation_metadata
        identity: Identity | None = None
        try:
            token = bearer_token(metadata)
            # A token verified before costs a lookup, without a coroutine (nor a span).
            identity = self._auth.cached(token)
            if identity is None:
                return await self._validate(entry, handler, token, metadata)
            gate.check(identity)
        except GrpcOboError as exc:  # refused without validation work: no token, or the policy
            attributes = gate.attributes(identity) if identity is not None else {}
            self._recorder.refusal(attributes=attributes, error=exc, metadata=metadata)
            return refusing(handler, *gate.refusal(exc))
        return _accepted(entry, handler, identity, None)

    async def _validate(
        self,
        entry: _Method,
        handler: grpc.RpcMethodHandler[Any, Any],
        token: str,
        metadata: Any,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Validate a token the verified-token cache did not know, inside its span."""
        gate = entry.gate
        with self._recorder.validating(metadata or ()) as record:
            try:
                identity = await self._auth.validate(token, gate.method)
                record.attributes = gate.attributes(identity)
                gate.check(identity)
            except GrpcOboError as exc:
                record.error = exc
                return refusing(handler, *gate.refusal(exc))
        return _accepted(entry, handler, identity, record.attributes)

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
        behavior = behavior_of(handler)
        declared, certain = resolve_declared(behavior, method)
        if certain:
            public = self._policy.is_public(method, declared)
            check = self._policy.checker(method, declared)
        else:
            public, check = False, deny_uncertain
            if method not in self._reported:  # once: a rebuilt wrapper comes with every call
                self._reported.add(method)
                _log_uncertain(method, explain_uncertain(behavior, method))
        gate = Gate(self._auth, self._recorder, method, public=public, check=check)
        is_async = inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)
        entry = _Method(handler, gate, rebuild(handler, guarded(gate)) if is_async else None)
        if len(self._methods) < _MAX_METHODS or method in self._methods:
            self._methods[method] = entry
        return entry


def _accepted(
    entry: _Method,
    handler: grpc.RpcMethodHandler[Any, Any],
    identity: Identity,
    attributes: Mapping[str, str] | None,
) -> grpc.RpcMethodHandler[Any, Any]:
    if entry.rebuilt is None:  # a sync behaviour: its call carries the identity
        entry.gate.observe(identity, attributes)  # its thread would not see the RPC's span
        return rebuild(handler, sync_call(entry.gate, identity))
    # grpc.aio runs intercept_service and the handler in the RPC's own task: hand the identity
    # over through that task's context; the handler sets it for exactly its run.
    handoff.set([(identity, attributes)])
    return entry.rebuilt


class _Method:
    """One method as first seen: grpc's handler, its gate, and the handler rebuilt behind it."""

    __slots__ = ("gate", "original", "rebuilt")

    def __init__(
        self,
        original: grpc.RpcMethodHandler[Any, Any],
        gate: Gate,
        rebuilt: grpc.RpcMethodHandler[Any, Any] | None,
    ) -> None:
        self.original = original  # kept alive and compared by identity: a new handler, new entry
        self.gate = gate
        self.rebuilt = rebuilt  # None for a sync behaviour, rebuilt per call (see sync_call)


_MAX_METHODS = 4096


def _log_uncertain(method: str, why: str) -> None:
    # NOTE: fail closed. The handler is another interceptor's wrapper we cannot see through,
    # and a `requires` rule may hide behind it: the policy's own rule could be looser than
    # that one, so it cannot stand in for it.
    _LOGGER.error("refusing every call of %s: %s", method, why)
