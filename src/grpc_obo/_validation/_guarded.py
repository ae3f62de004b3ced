"""The validator, asked safely: the one guarded `validate` of every front door (the gRPC
server's gate, the ASGI middleware).

A validator is the application's choice (`TokenValidator` or its own), checked once when a
front door is built (a `ConfigurationError` naming `validator`); a bug in it becomes
`ValidatorFailedError` (INTERNAL, HTTP 500) and one ERROR line with the traceback for whoever
debugs it, every piece of the token cut out (a validator's message may quote the token); an
answer that is not an `Identity` likewise. A `cached()` that fails is a miss, never a refusal.
"""

from __future__ import annotations

import inspect
import logging
import traceback
from typing import Protocol

from grpc_obo._errors import ConfigurationError, GrpcOboError, ValidatorFailedError
from grpc_obo._identity import Identity

__all__ = ["Authenticator"]


class _Validates(Protocol):
    async def validate(self, token: str) -> Identity: ...


class Authenticator:
    """The validator, asked safely; failures logged on `log` (the front door's logger)."""

    __slots__ = ("_asks_cached", "_log", "_validator")

    def __init__(self, validator: object, log: logging.Logger, *, needs_cached: bool) -> None:
        """`validator` checked once, in the same words for every front door: an async
        `validate(token)`, and a `cached(token)` (required where `needs_cached`: the gRPC
        server asks it first; optional for the HTTP front door, which never does)."""
        if not inspect.iscoroutinefunction(getattr(validator, "validate", None)):
            raise ConfigurationError(
                "validator must have an async validate(token) method (grpc_obo.TokenValidator "
                "has one)",
                setting="validator",
            )
        cached = getattr(validator, "cached", None)
        if not callable(cached) and (needs_cached or cached is not None):
            raise ConfigurationError(
                "validator must have a cached(token) method (returning None when it has no cache)",
                setting="validator",
            )
        self._validator: _Validates = validator  # type: ignore[assignment]  # checked above
        # NOTE: decided once: a getattr per call cost the gRPC server's cached-token path ~300
        # instructions (the HTTP front door, whose validator may lack `cached`, never asks it).
        self._asks_cached = callable(cached)
        self._log = log

    def cached(self, token: str) -> Identity | None:
        """A token verified before, without I/O; None: call `validate` (never "invalid")."""
        if not self._asks_cached:  # optional for the ASGI front door
            return None
        try:
            found: object = self._validator.cached(token)  # type: ignore[attr-defined]
        except Exception:  # a cache bug is not a refusal: validate() decides
            self._log.debug("the validator's cached() failed; validating")
            return None
        return found if isinstance(found, Identity) else None

    async def validate(self, token: str, where: str) -> Identity:
        """The validator's verdict on `token`: an Identity, or a `GrpcOboError` saying why not.

        `where` names the call in the log line (a gRPC method, an HTTP path).
        """
        try:
            # `object`: a validator outside our control is checked, not trusted, to return Identity.
            identity: object = await self._validator.validate(token)
        except GrpcOboError:
            raise
        except Exception as exc:
            self._log.error("%s", _redacted(_unexpected(exc, where), token))
            raise ValidatorFailedError() from None
        if not isinstance(identity, Identity):
            self._log.error("validator returned %s, not an Identity", type(identity).__name__)
            raise ValidatorFailedError()
        return identity


def _unexpected(exc: Exception, where: str) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"validator failed unexpectedly on {where}:\n{text}"


def _redacted(text: str, token: str) -> str:
    # NOTE: a validator bug may put the token (or one of its segments) in its message; `where`
    # is the caller's own text (an HTTP path) and is cut too.
    for secret in sorted({token, *token.split(".")}, key=len, reverse=True):
        if len(secret) >= 8:
            text = text.replace(secret, "[redacted]")
    return text
