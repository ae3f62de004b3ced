"""The verified caller: `Identity`, the redacted `SecretToken`, and the request contextvar.

Only the server interceptor (after validating a token) and tests set the identity; everything
else reads it with `current_identity()`. This module imports nothing but the standard library so
that every other part may depend on it.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = [
    "Identity",
    "IdentityKind",
    "SecretToken",
    "current_identity",
    "use_identity",
]


class SecretToken:
    """A bearer token or assertion whose `repr`/`str` never show it.

    The raw value comes out only through `reveal()`, so a token cannot reach a log line, an
    exception message or a span by accident (`f"{identity}"` prints `SecretToken('**********')`).
    `copy`/`deepcopy` return the same object (it is never changed); pickling is refused.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("SecretToken takes a str")
        self._value = value

    def reveal(self) -> str:
        """Return the raw token. Call only where it must go on the wire or into MSAL."""
        return self._value

    def sha256(self) -> str:
        """Hex SHA-256 of the token: safe to use as a cache key or to correlate in logs."""
        return hashlib.sha256(self._value.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return "SecretToken('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretToken):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self.sha256())

    def __copy__(self) -> SecretToken:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> SecretToken:
        # NOTE: without this, deepcopy falls back to __reduce__ (refused below), so deepcopy of
        # an Identity raised. The token never changes, so every copy may share this object.
        return self

    def __reduce__(self) -> tuple[object, ...]:
        # NOTE: pickling would write the raw token into whatever stores the pickle (a cache
        # backend, a crash dump). Nothing in grpc_obo needs it, so refuse loudly.
        raise TypeError("SecretToken is not picklable")


class IdentityKind(str, enum.Enum):
    """Whether a token acts for a signed-in user (delegated) or for an application itself."""

    USER = "user"
    APP = "app"


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Who made this call, taken only from a token this process validated itself.

    The user is `tid` + `oid`: the same `sub` or `oid` in two tenants is two principals.
    """

    tid: str
    oid: str | None
    sub: str
    kind: IdentityKind
    scopes: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    client_id: str | None = None
    """The calling client app (`azp` in v2 tokens, `appid` in v1)."""
    audience: str = ""
    issuer: str = ""
    token_version: str = "2.0"
    expires_at: int = 0
    name: str | None = None
    username: str | None = None
    """`preferred_username` (v2) or `upn`/`unique_name` (v1); informational, never a key."""
    client_capabilities: frozenset[str] = frozenset()
    """`xms_cc`: `cp1` means the client handles claims challenges (CAE)."""
    auth_contexts: frozenset[str] = frozenset()
    """`acrs`: the Conditional Access authentication contexts (`c1`...) the sign-in satisfied."""
    token: SecretToken = field(repr=False, compare=False)
    """The validated token itself, kept for On-Behalf-Of; redacted in every repr."""

    @property
    def is_user(self) -> bool:
        return self.kind is IdentityKind.USER

    @property
    def is_app(self) -> bool:
        return self.kind is IdentityKind.APP

    @property
    def principal(self) -> str:
        """A stable, loggable key for the principal: `tid/oid` (or `tid/sub` without `oid`)."""
        return f"{self.tid}/{self.oid or self.sub}"


_current: ContextVar[Identity | None] = ContextVar("grpc_obo_identity", default=None)


def current_identity() -> Identity | None:
    """The identity of the RPC this code runs for, or None outside an authenticated call."""
    return _current.get()


@contextlib.contextmanager
def use_identity(identity: Identity | None) -> Iterator[Identity | None]:
    """Set the identity for the enclosed block and restore the previous one after it.

    The server interceptor uses this around each handler; tests and background jobs that act for
    a user they validated themselves may use it too.
    """
    token = _current.set(identity)
    try:
        yield identity
    finally:
        _current.reset(token)
