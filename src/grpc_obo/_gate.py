"""One method's gate on a grpc.aio server: who may call, how a call is refused, what is relayed.

The decisions are elsewhere (the validator, the policy, the error table in `_errors`, the relay
in `_relay`); a `_Gate` adapts them to grpc for one method: it checks an identity, turns a
grpc_obo error into (status, details, `www-authenticate`), ends a call for an uncaught
downstream failure the way `_relay` says, and puts the caller on the RPC's span from inside the
handler (the validation's own span is recorded where it runs, in `intercept_service`).
`Authenticator` (`_validation._guarded`) is the one guarded way to ask the validator, for the
interceptor, a gate and the ASGI front door alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import grpc
import grpc.aio

from grpc_obo._errors import (
    AccessDeniedError,
    DownstreamError,
    GrpcOboError,
    TokenExchangeError,
    status_for,
    www_authenticate_for,
)
from grpc_obo._identity import Identity
from grpc_obo._relay import UNHANDLED, Failures, Relayed, downstream_in
from grpc_obo._telemetry import Recorder
from grpc_obo._validation._bearer import bearer_token
from grpc_obo._validation._guarded import Authenticator

__all__ = ["Gate", "TokenValidatorLike"]

_LOGGER = logging.getLogger("grpc_obo.server")


class TokenValidatorLike(Protocol):
    """All grpc_obo calls on a validator (`grpc_obo.TokenValidator` is one), and nothing more.

    The gRPC server interceptor asks `cached` first and `validate` on a miss; the HTTP front
    door (`BearerAuthMiddleware`) calls `validate` only. `cached` answers a token verified
    before without I/O, or None ("call `validate`", never "invalid"); a validator without such
    a cache returns None. Neither may return anything but an `Identity` or raise anything but
    a grpc_obo error: anything else refuses the call as an internal failure.
    """

    async def validate(self, token: str) -> Identity: ...

    def cached(self, token: str) -> Identity | None: ...


Trailing = tuple[tuple[str, str], ...]


class Gate:
    """The authorization step of one method, shared by every handler kind."""

    __slots__ = ("_auth", "check", "method", "public", "telemetry")

    def __init__(
        self,
        auth: Authenticator,
        telemetry: Recorder,
        method: str,
        *,
        public: bool,
        check: Callable[[Identity], None],
    ) -> None:
        self._auth = auth
        self.telemetry = telemetry
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
            token = bearer_token(context.invocation_metadata() or ())
            identity = await self._auth.validate(token, self.method)
            self.check(identity)
            return identity
        except GrpcOboError as exc:
            await context.abort(*self.refusal(exc))
            raise AssertionError("context.abort returned") from None  # pragma: no cover

    def attributes(self, identity: Identity) -> Mapping[str, str]:
        """The caller's span attributes (as telemetry exports them: plain, hashed or none)."""
        return self.telemetry.identity_attributes(
            oid=identity.oid,
            tid=identity.tid,
            client_id=identity.client_id,
            kind=identity.kind.value,
        )

    def observe(self, identity: Identity, attributes: Mapping[str, str] | None) -> None:
        """The caller on the RPC's span, from inside the handler, where that span is current.

        `attributes` are the caller's as the validation recorded them (None after a
        verified-token cache hit: computed only if a span records). The validation's own span
        was recorded in intercept_service (see `Recorder.validating` for where it nests).
        """
        if attributes is not None:
            self.telemetry.annotate_current(attributes)
        else:
            self.telemetry.annotate_caller(
                oid=identity.oid,
                tid=identity.tid,
                client_id=identity.client_id,
                kind=identity.kind.value,
            )

    async def fail(self, context: grpc.aio.ServicerContext[Any, Any], exc: GrpcOboError) -> None:
        """End the call for a grpc_obo error the handler raised (the same status table)."""
        await context.abort(*self.refusal(exc))

    async def relay(
        self, context: grpc.aio.ServicerContext[Any, Any], error: Exception, failures: Failures
    ) -> None:
        """End the call for an exception the handler did not catch, if `_relay` says how.

        Only after a failure an On-Behalf-Of channel recorded during this call (an error from
        any other channel, before any such failure, stays the handler's own: grpc reports it as
        UNKNOWN). Returns without ending the call otherwise; never touches an abort.
        """
        if isinstance(error, grpc.aio.AbortError):  # the handler ended the call itself
            return
        relayed = relayed_for(error, failures)
        if relayed is None or relayed is UNHANDLED:
            await asyncio.sleep(0)  # the client's done callback may run just after our await
            relayed = relayed_for(error, failures)
        if relayed is not None:
            self._log_relayed(relayed, error)
            await self.fail(context, downstream_error(relayed))

    async def relay_ended(self, error: Exception, failures: Failures) -> bool:
        """`relay` for a call that ended before its handler finished closing (the client
        cancelled a streaming call, and the handler's `finally` called downstream): nothing
        reaches the caller any more, so the failure is logged as `relay` logs it and goes no
        further (raised, it would reach asyncio's log with the downstream's text). False when
        it is not the relay's business: the handler's own error, to raise."""
        if isinstance(error, grpc.aio.AbortError):
            return False
        if isinstance(error, GrpcOboError):  # the handler's own exchange, say
            self.refusal(error)  # its log line; the status has nowhere to go
            return True
        relayed = relayed_for(error, failures)
        if relayed is None or relayed is UNHANDLED:
            await asyncio.sleep(0)  # the client's done callback may run just after our await
            relayed = relayed_for(error, failures)
        if relayed is None:
            return False
        self._log_relayed(relayed, error, ended=True)
        return True

    def sync_relay(
        self,
        context: Any,
        error: Exception,
        failures: Failures,
        loop: asyncio.AbstractEventLoop | None,
    ) -> bool:
        """`relay` for a sync handler (in grpc's thread pool): sets the status on `context`;
        True when it did. `loop` is the server's, where the On-Behalf-Of calls ran."""
        if isinstance(error, grpc.aio.AbortError):
            return False
        relayed = relayed_for(error, failures)
        if (relayed is None or relayed is UNHANDLED) and loop is not None and loop.is_running():
            # One round trip through the loop: a done callback that records the failure and
            # was scheduled before has run after it.
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(timeout=1.0)
            relayed = relayed_for(error, failures)
        if relayed is None:
            return False
        self._log_relayed(relayed, error)
        code, details, trailing = self.refusal(downstream_error(relayed))
        context.set_trailing_metadata(trailing)
        context.set_code(code)
        context.set_details(details)
        return True

    def _log_relayed(self, relayed: Relayed, error: Exception, *, ended: bool = False) -> None:
        # One line an operator can act on (the method, the downstream's code); what the
        # downstream said only at DEBUG, with anything shaped like a JWT cut out.
        level = logging.WARNING if relayed.operator else logging.INFO
        if ended:
            _LOGGER.log(
                level,
                "%s: an outbound call failed with %s while the handler closed after the "
                "call ended (nothing more reaches the caller)",
                self.method,
                relayed.downstream.name if relayed.downstream else type(error).__name__,
            )
        elif relayed.downstream is None:
            _LOGGER.log(
                level,
                "%s: the handler raised %s after an outbound call failed: ending the call with %s",
                self.method,
                type(error).__name__,
                relayed.code.name,
            )
        else:
            _LOGGER.log(
                level,
                "%s: an outbound call failed with %s and the handler did not catch it: "
                "ending the call with %s",
                self.method,
                relayed.downstream.name,
                relayed.code.name,
            )
        if _LOGGER.isEnabledFor(logging.DEBUG):
            # NOTE: a gRPC downstream's details, JWT-shaped text cut; never `str(error)` of
            # anything else: an HTTP library's message holds the request URL, whose query may
            # carry a signature or a code.
            rpc = _rpc_error_in(error)
            said = _scrub(str(rpc.details())) if rpc is not None else type(error).__name__
            _LOGGER.debug("%s: the downstream said: %s", self.method, said)

    def refusal(self, exc: GrpcOboError) -> tuple[grpc.StatusCode, str, Trailing]:
        """(code, details, trailing metadata) that end a call refused for `exc`."""
        code = status_for(exc)
        challenge = www_authenticate_for(exc)
        trailing = (("www-authenticate", challenge),) if challenge else ()
        if isinstance(exc, TokenExchangeError) and exc.log_level >= logging.WARNING:
            # One line an operator can take to Entra: its error codes and correlation id.
            _LOGGER.warning(
                "%s: On-Behalf-Of exchange failed: %s (error=%s, error_codes=%s, "
                "correlation_id=%s)%s",
                self.method,
                type(exc).__name__,
                exc.error,
                ",".join(str(c) for c in exc.error_codes) or "-",
                exc.correlation_id or "-",
                # The setting to fix, when the authority refused our own configuration (the
                # hint names variables and ids, never a value; the caller never sees it).
                f": {exc.hint}" if exc.hint else "",
            )
        elif not isinstance(exc, DownstreamError):  # a relayed failure is logged by relay()
            _LOGGER.log(
                exc.log_level,
                "refused %s: %s (%s)",
                self.method,
                type(exc).__name__,
                exc.reason or code.name,
            )
        # The details are the error's fixed message: errors never carry the token or keys.
        return code, exc.message, trailing


# -- the grpc side of the relay -----------------------------------------------------------------


def relayed_for(error: BaseException, failures: Failures) -> Relayed | None:
    """How `_relay` ends the call for `error`, or None when it is not the relay's business."""
    return failures.settle(downstream_in(error))


def downstream_error(relayed: Relayed) -> DownstreamError:
    return DownstreamError(
        relayed.details, code=grpc.StatusCode[relayed.code.name], challenge=relayed.challenge
    )


def _rpc_error_in(error: BaseException) -> grpc.aio.AioRpcError | None:
    """`error`, or the first AioRpcError it was raised from (a handler that wrapped it)."""
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 8:
        if isinstance(current, grpc.aio.AioRpcError):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


_JWTISH = re.compile(r"eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){0,2}")


def _scrub(text: str) -> str:
    return _JWTISH.sub("[redacted]", text)[:500]


def deny_uncertain(identity: Identity) -> None:
    raise AccessDeniedError(
        "this method's access rule could not be established", reason="rule_unavailable"
    )
