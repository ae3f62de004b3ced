"""grpc.aio client interceptors that attach an exchanged token to every outbound call.

One class per RPC arity over one shared core: `grpc.aio.Channel` files an interceptor object
under the *first* interface it matches, so a single class implementing all four would be
registered as unary-unary only and streaming calls would go out without a token (grpc issues
31442, 36180, 43512). The core copies the call's metadata, replaces any `authorization` entry with
the exchanged token (keeping `traceparent` and everything else) and, when the downstream answers
UNAUTHENTICATED with a claims challenge, evicts the cached token so the next call exchanges anew.

`OnBehalfOf` and `AppOnly` are the exchangers with a `client_interceptors()` helper: the only
public face of this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import grpc
import grpc.aio

from grpc_obo._errors import ConfigurationError
from grpc_obo._exchange._exchanger import AppOnlyExchanger, OboExchanger
from grpc_obo._identity import Identity, SecretToken, current_identity

__all__ = ["AppOnly", "OnBehalfOf"]

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

Acquire = Callable[[tuple[str, ...], "float | None"], Awaitable[SecretToken]]
Evict = Callable[[tuple[str, ...], Identity], Awaitable[None]]


def _method_name(method: str | bytes) -> str:
    # grpc.aio hands the method over as bytes; users configure it as text.
    return method.decode("ascii", "replace") if isinstance(method, bytes) else method


def _check_scopes(scopes: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(scopes, str) or not scopes or not all(isinstance(s, str) and s for s in scopes):
        raise ConfigurationError(f"{what} must be a non-empty list of scope strings")
    return tuple(scopes)


class _Core:
    """Scope choice, metadata rewriting and claims-challenge eviction, shared by all arities."""

    def __init__(
        self,
        *,
        acquire: Acquire,
        evict: Evict | None,
        scopes: Sequence[str],
        method_scopes: Mapping[str, Sequence[str]] | None,
    ) -> None:
        self._acquire = acquire
        self._evict = evict
        self._default = _check_scopes(scopes, "scopes")
        self._by_name: dict[str, tuple[str, ...]] = {}
        for name, value in (method_scopes or {}).items():
            if not name or not (name.startswith("/") or "/" not in name):
                raise ConfigurationError(
                    f"method_scopes keys are '/pkg.Service/Method' or 'pkg.Service', not {name!r}"
                )
            self._by_name[name] = _check_scopes(value, f"method_scopes[{name!r}]")
        # Strong references to eviction tasks (the loop keeps only weak ones).
        self._pending: set[asyncio.Task[None]] = set()

    def scopes_for(self, method: str) -> tuple[str, ...]:
        if method in self._by_name:
            return self._by_name[method]
        service = method.lstrip("/").split("/", 1)[0]
        return self._by_name.get(service, self._default)

    async def authorize(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        if self._pending:
            # A call just failed with a claims challenge: let its eviction land first so this
            # call does not reuse the rejected token.
            await asyncio.gather(*self._pending, return_exceptions=True)
        method = _method_name(details.method)
        scopes = self.scopes_for(method)
        token = await self._acquire(scopes, details.timeout)
        metadata = grpc.aio.Metadata()
        for key, value in details.metadata or ():
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

    def watch(self, call: Any, method: str) -> None:
        if self._evict is None:
            return
        scopes = self.scopes_for(method)
        evict = self._evict
        # The done callback runs in whatever context grpc calls it from: capture the caller now.
        identity = current_identity()
        if identity is None:
            return

        async def check() -> None:
            if await call.code() != grpc.StatusCode.UNAUTHENTICATED:
                return
            trailing = await call.trailing_metadata() or ()
            for key, value in trailing:
                text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                if key.lower() == "www-authenticate" and "insufficient_claims" in text:
                    _log.info("downstream sent a claims challenge on %s: evicting", method)
                    await evict(scopes, identity)
                    return

        def done(_: object) -> None:
            task = asyncio.get_running_loop().create_task(check())
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        call.add_done_callback(done)


class _UnaryUnary(_UU):
    def __init__(self, core: _Core) -> None:
        self._core = core

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        call = await continuation(await self._core.authorize(details), request)
        self._core.watch(call, _method_name(details.method))
        return call


class _UnaryStream(_US):
    def __init__(self, core: _Core) -> None:
        self._core = core

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        call = await continuation(await self._core.authorize(details), request)
        self._core.watch(call, _method_name(details.method))
        return call


class _StreamUnary(_SU):
    def __init__(self, core: _Core) -> None:
        self._core = core

    async def intercept_stream_unary(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        call = await continuation(await self._core.authorize(details), request_iterator)
        self._core.watch(call, _method_name(details.method))
        return call


class _StreamStream(_SS):
    def __init__(self, core: _Core) -> None:
        self._core = core

    async def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        call = await continuation(await self._core.authorize(details), request_iterator)
        self._core.watch(call, _method_name(details.method))
        return call


def _interceptors(core: _Core) -> list[grpc.aio.ClientInterceptor]:
    # grpc-stubs declares ClientInterceptor as an opaque placeholder: the cast is the stub's ask.
    interceptors: list[Any] = [
        _UnaryUnary(core),
        _UnaryStream(core),
        _StreamUnary(core),
        _StreamStream(core),
    ]
    return cast("list[grpc.aio.ClientInterceptor]", interceptors)


class OnBehalfOf(OboExchanger):
    """On-Behalf-Of for the current user, cached; build outbound interceptors from it.

    ```
    obo = OnBehalfOf(ConfidentialClient.from_env())
    channel = grpc.aio.secure_channel(
        target, creds, interceptors=obo.client_interceptors(scopes=["api://downstream/Data.Read"])
    )
    ```
    Every call on that channel must run inside an authenticated server call (the user's
    verified identity is in context); otherwise it fails with `MissingIdentityError`.
    """

    def client_interceptors(
        self,
        *,
        scopes: Sequence[str],
        method_scopes: Mapping[str, Sequence[str]] | None = None,
    ) -> list[grpc.aio.ClientInterceptor]:
        """The four interceptors (one per arity) for `grpc.aio.*_channel(interceptors=...)`.

        `method_scopes` overrides `scopes` per `/pkg.Service/Method` or per `pkg.Service`.
        """

        async def acquire(wanted: tuple[str, ...], timeout: float | None) -> SecretToken:
            return await self.acquire(wanted, timeout=timeout)

        async def evict(wanted: tuple[str, ...], identity: Identity) -> None:
            await self.invalidate(wanted, identity=identity)

        core = _Core(acquire=acquire, evict=evict, scopes=scopes, method_scopes=method_scopes)
        return _interceptors(core)


class AppOnly(AppOnlyExchanger):
    """Client-credentials tokens for calls the service makes as itself, never for a user.

    A separate channel on purpose: app-only access is never a fallback for a missing user.
    """

    def client_interceptors(
        self,
        *,
        scopes: Sequence[str],
        method_scopes: Mapping[str, Sequence[str]] | None = None,
    ) -> list[grpc.aio.ClientInterceptor]:
        async def acquire(wanted: tuple[str, ...], timeout: float | None) -> SecretToken:
            return await self.acquire(wanted, timeout=timeout)

        core = _Core(acquire=acquire, evict=None, scopes=scopes, method_scopes=method_scopes)
        return _interceptors(core)
