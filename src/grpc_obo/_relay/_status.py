"""Canonical status codes, the complete mapping of an uncaught downstream failure to the caller's
status, and the failures outbound calls (On-Behalf-Of and app-only) record while one incoming
call runs."""

from __future__ import annotations

import contextvars
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from grpc_obo._relay._challenges import (
    Challenge,
    challenge_values,
    choose_challenge,
    rebuild_challenge,
)

__all__ = [
    "APP_REFUSED",
    "RELAY_TABLE",
    "UNHANDLED",
    "Code",
    "Failures",
    "Relayed",
    "collect",
    "downstream_in",
    "recording",
    "relayed_status",
    "uncollect",
]


class Code(enum.IntEnum):
    """Canonical status codes: gRPC's `StatusCode` numbers (google.rpc.Code), by the same names.

    `grpc.StatusCode[code.name]` and `Code[status.name]` convert; `http_status` and `from_http`
    follow google.rpc.Code's documented HTTP mapping.
    """

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @property
    def http_status(self) -> int:
        """The HTTP status an HTTP front door answers with for this code."""
        return _HTTP_STATUS[self]

    @classmethod
    def from_http(cls, status: int) -> Code:
        """The code of an HTTP downstream's answer: only 2xx is OK.

        NOTE: a 1xx or 3xx answer that reaches the handler (httpx follows no redirect unless
        asked) is a failure too: `raise_for_status()` raises for it with the URL in its message,
        so it must be relayed in fixed words like any other (INTERNAL: the middle tier's use of
        the downstream broke, not the caller's request).
        """
        if 200 <= status < 300:
            return cls.OK
        found = _FROM_HTTP.get(status)
        if found is not None:
            return found
        return cls.FAILED_PRECONDITION if 400 <= status < 500 else cls.INTERNAL


_HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}
_FROM_HTTP = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    408: Code.DEADLINE_EXCEEDED,
    409: Code.ABORTED,
    412: Code.FAILED_PRECONDITION,
    416: Code.OUT_OF_RANGE,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,
    501: Code.UNIMPLEMENTED,
    502: Code.UNAVAILABLE,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


# -- the status mapping ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Relayed:
    """How the incoming call ends for a downstream failure its handler did not catch."""

    code: Code
    """The caller's status."""
    details: str
    """A fixed sentence: never anything the downstream said."""
    challenge: str | None = None
    """A rebuilt `www-authenticate` value (UNAUTHENTICATED and PERMISSION_DENIED only)."""
    downstream: Code | None = None
    """The downstream's own code, for the middle tier's log (None: not a downstream status)."""
    operator: bool = False
    """Worth an operator's look (the middle tier's or the downstream's fault), not the caller's."""


_FAILED = "a downstream API failed"
# Downstream code -> (the caller's code, the fixed details, worth an operator's look).
# NOTE: a code stays when it tells the caller something about *their* request or their user
# (not found, invalid, quota, precondition, conflict, range, access); a code that only says the
# downstream (or the middle tier's use of it) broke becomes INTERNAL, and a cancelled downstream
# call UNAVAILABLE (retryable), so the caller never learns how the tiers behind are built.
RELAY_TABLE: dict[Code, tuple[Code, str, bool]] = {
    Code.CANCELLED: (Code.UNAVAILABLE, "a downstream API call was cancelled", True),
    Code.UNKNOWN: (Code.INTERNAL, _FAILED, True),
    Code.INVALID_ARGUMENT: (
        Code.INVALID_ARGUMENT,
        "a downstream API rejected the request as invalid",
        False,
    ),
    Code.DEADLINE_EXCEEDED: (
        Code.DEADLINE_EXCEEDED,
        "a downstream API did not answer within the deadline",
        True,
    ),
    Code.NOT_FOUND: (Code.NOT_FOUND, "a downstream API did not find what was asked for", False),
    Code.ALREADY_EXISTS: (
        Code.ALREADY_EXISTS,
        "a downstream API already has what was to be created",
        False,
    ),
    Code.PERMISSION_DENIED: (
        Code.PERMISSION_DENIED,
        "a downstream API denied the user access",
        False,
    ),
    Code.RESOURCE_EXHAUSTED: (
        Code.RESOURCE_EXHAUSTED,
        "a downstream API is out of quota or capacity",
        True,
    ),
    Code.FAILED_PRECONDITION: (
        Code.FAILED_PRECONDITION,
        "a downstream API refused: the system is not in the state the request needs",
        False,
    ),
    Code.ABORTED: (Code.ABORTED, "a downstream API aborted the operation (a conflict)", False),
    Code.OUT_OF_RANGE: (
        Code.OUT_OF_RANGE,
        "a downstream API was asked for something out of range",
        False,
    ),
    Code.UNIMPLEMENTED: (Code.INTERNAL, _FAILED, True),
    Code.INTERNAL: (Code.INTERNAL, _FAILED, True),
    Code.UNAVAILABLE: (Code.UNAVAILABLE, "a downstream API is unavailable", True),
    Code.DATA_LOSS: (Code.INTERNAL, _FAILED, True),
    Code.UNAUTHENTICATED: (
        Code.UNAUTHENTICATED,
        "a downstream API refused the user's token",
        False,
    ),
}
UNHANDLED = Relayed(
    Code.INTERNAL,
    "the service failed after a downstream API call failed",
    operator=True,
)
"""A handler raised something else (not the downstream's error) after such a failure."""

_CHALLENGED = frozenset({Code.UNAUTHENTICATED, Code.PERMISSION_DENIED})
APP_REFUSED = "a downstream API refused this service's own credentials"


def relayed_status(
    code: Code, challenge: Challenge | None = None, *, as_user: bool = True
) -> Relayed:
    """The caller's status for a downstream failure with `code` (not OK) and its challenge.

    `as_user=False`: the call carried the service's own (app-only) token. A refusal of it
    (UNAUTHENTICATED, PERMISSION_DENIED) is the service's problem, never the caller's: INTERNAL,
    no challenge (the user could not meet it by signing in again, and the client app must not be
    told to try). Every other code follows the table, as for On-Behalf-Of calls.
    """
    if not as_user and code in _CHALLENGED:
        return Relayed(Code.INTERNAL, APP_REFUSED, None, code, operator=True)
    mapped, details, operator = RELAY_TABLE.get(code, (Code.INTERNAL, _FAILED, True))
    rebuilt = rebuild_challenge(challenge) if code in _CHALLENGED else None
    return Relayed(mapped, details, rebuilt, code, operator)


class Failures:
    """The failed outbound calls of one incoming call: (code, rebuilt challenge, as the user).

    NOTE: app-only calls record too. Left out, their uncaught failures would reach the caller as
    grpc's `UNKNOWN` with the downstream's own text; recorded, they end in fixed words.
    """

    __slots__ = ("_seen",)

    _MAX = 64  # a handler looping over failing calls stays bounded

    def __init__(self) -> None:
        self._seen: list[tuple[Code, str | None, bool]] = []

    def __bool__(self) -> bool:
        return bool(self._seen)

    def record(self, code: Code, challenge: Challenge | None, *, as_user: bool = True) -> None:
        """An outbound call ended with `code` (not OK) and this chosen challenge; `as_user`:
        it carried the user's token (On-Behalf-Of), not the service's own (app-only)."""
        if len(self._seen) < self._MAX:
            self._seen.append((code, rebuild_challenge(challenge), as_user))

    def relayed(self, code: Code, challenge_values: Iterable[str | bytes]) -> Relayed | None:
        """How to end the incoming call for an uncaught downstream error, or None when it is
        not one these calls recorded (an error from another channel stays the handler's).

        Matched on what the relay will say (code, rebuilt challenge), never on raw trailers.
        """
        if code is Code.OK or not self._seen:
            return None
        challenge = choose_challenge(challenge_values)
        rebuilt = rebuild_challenge(challenge)
        matched = [as_user for seen, said, as_user in self._seen if (seen, said) == (code, rebuilt)]
        if not matched:
            return None
        # NOTE: the same failure seen on an app-only and an On-Behalf-Of call cannot be told
        # apart: it is relayed as the app-only one (no challenge for the user to act on).
        return relayed_status(code, challenge, as_user=all(matched))

    def settle(self, downstream: tuple[Code, Iterable[str | bytes]] | None) -> Relayed | None:
        """How to end the incoming call for an exception its handler did not catch, or None
        (no outbound call failed meanwhile: the exception is the handler's own business).

        `downstream` is the (code, `WWW-Authenticate` values) of the downstream error the
        exception is, or was raised from; None when there is none. Anything else raised after
        such a failure may quote the downstream: `UNHANDLED`, a fixed INTERNAL.
        """
        if not self._seen:
            return None
        if downstream is not None:
            found = self.relayed(*downstream)
            if found is not None:
                return found
        return UNHANDLED


_recording: contextvars.ContextVar[Failures | None] = contextvars.ContextVar(
    "grpc_obo_outbound_failures", default=None
)


def collect(failures: Failures) -> contextvars.Token[Failures | None]:
    """Record outbound failures into `failures` in this context; `uncollect` with the token."""
    return _recording.set(failures)


def uncollect(token: contextvars.Token[Failures | None]) -> None:
    _recording.reset(token)


def recording() -> Failures | None:
    """Where an outbound call made here records its failure (None outside a served call)."""
    return _recording.get()


def downstream_in(error: BaseException) -> tuple[Code, list[str | bytes]] | None:
    """(code, `WWW-Authenticate` values) of the downstream failure `error` is, or was raised
    from; None when there is none.

    A gRPC call's error (`code()`, `details()`, `trailing_metadata()`, as `grpc.aio.AioRpcError`)
    or an HTTP answer's (`response.status_code`, `response.headers`, as httpx's
    `HTTPStatusError`). Duck-typed: the relay imports neither grpc nor httpx, so the ASGI front
    door and the gRPC server read both kinds alike.
    """
    current: BaseException | None = error
    for _ in range(8):
        if current is None:
            return None
        found = _grpc_failure(current) or _http_failure(current)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


def _grpc_failure(error: BaseException) -> tuple[Code, list[str | bytes]] | None:
    code, details, trailing = (
        getattr(error, name, None) for name in ("code", "details", "trailing_metadata")
    )
    if not (callable(code) and callable(details) and callable(trailing)):
        return None
    name = getattr(code(), "name", None)
    if not isinstance(name, str) or name not in Code.__members__:
        return None
    return Code[name], challenge_values(trailing())


def _http_failure(error: BaseException) -> tuple[Code, list[str | bytes]] | None:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    headers = getattr(response, "headers", None)
    if not isinstance(status, int) or isinstance(status, bool) or headers is None:
        return None
    code = Code.from_http(status)
    if code is Code.OK:
        return None
    return code, challenge_values(headers)
