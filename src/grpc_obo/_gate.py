"""One method's gate on a grpc.aio server: who may call, how a call is refused, what is relayed.

The decisions are elsewhere (the validator, the policy, the error table in `_errors`, the relay
in `_relay`); a `_Gate` adapts them to grpc for one method: it checks an identity, turns a
grpc_obo error into (status, details, `www-authenticate`), ends a call for an uncaught
downstream failure the way `_relay` says, and puts the caller on the RPC's span from inside the
handler (the validation's own span is recorded where it runs, in `intercept_service`).
`Authenticator` is the one guarded way to ask the validator, for the interceptor and for a gate
alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import grpc
import grpc.aio

from grpc_obo._errors import (
    AccessDeniedError,
    DownstreamError,
    GrpcOboError,
    TokenExchangeError,
    ValidatorFailedError,
    status_for,
    www_authenticate_for,
)
from grpc_obo._identity import Identity
from grpc_obo._relay import UNHANDLED, Code, Failures, Relayed, downstream_in
from grpc_obo._telemetry import Recorder
from grpc_obo._validation._bearer import bearer_token

__all__ = ["Authenticator", "TokenValidatorLike"]

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


class Authenticator:
    """The validator, asked safely: a bug in it becomes INTERNAL without the token in a log."""

    __slots__ = ("_validator",)

    def __init__(self, validator: TokenValidatorLike) -> None:
        self._validator = validator

    def cached(self, token: str) -> Identity | None:
        try:
            found: object = self._validator.cached(token)
        except Exception:  # a cache bug is not a refusal: validate() decides
            _LOGGER.debug("the validator's cached() failed; validating")
            return None
        return found if isinstance(found, Identity) else None

    async def validate(self, token: str, method: str) -> Identity:
        """The validator's verdict on `token`: an Identity, or a `GrpcOboError` saying why not."""
        try:
            # `object`: a validator outside our control is checked, not trusted, to return Identity.
            identity: object = await self._validator.validate(token)
        except GrpcOboError:
            raise
        except Exception as exc:
            _log_unexpected(exc, token, method)
            raise ValidatorFailedError() from None
        if not isinstance(identity, Identity):
            _LOGGER.error("validator returned %s, not an Identity", type(identity).__name__)
            raise ValidatorFailedError()
        return identity


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

    def _log_relayed(self, relayed: Relayed, error: Exception) -> None:
        # One line an operator can act on (the method, the downstream's code); what the
        # downstream said only at DEBUG, with anything shaped like a JWT cut out.
        level = logging.WARNING if relayed.operator else logging.INFO
        if relayed.downstream is None:
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
    rpc = _rpc_error_in(error)
    if rpc is not None:
        return failures.settle((code_of(rpc.code()), challenge_values(rpc.trailing_metadata())))
    # An HTTP downstream's answer the handler raised (httpx's raise_for_status), or none.
    return failures.settle(downstream_in(error))


def downstream_error(relayed: Relayed) -> DownstreamError:
    return DownstreamError(
        relayed.details, code=grpc.StatusCode[relayed.code.name], challenge=relayed.challenge
    )


def code_of(status: grpc.StatusCode | None) -> Code:
    return Code.UNKNOWN if status is None else Code[status.name]


def challenge_values(trailing: Any) -> list[str | bytes]:
    """The `www-authenticate` values of a call's trailing metadata (any container grpc gives)."""
    return [
        value
        for key, value in (trailing or ())
        if isinstance(key, str) and key.lower() == "www-authenticate"
    ]


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


def _log_unexpected(exc: Exception, token: str, method: str) -> None:
    # NOTE: a validator bug may put the token (or one of its segments) in its message; log the
    # traceback for whoever debugs it, with every piece of the token cut out.
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    for secret in sorted({token, *token.split(".")}, key=len, reverse=True):
        if len(secret) >= 8:
            text = text.replace(secret, "[redacted]")
    _LOGGER.error("validator failed unexpectedly on %s:\n%s", method, text)
