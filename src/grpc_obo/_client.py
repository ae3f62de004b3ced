"""grpc.aio client interceptors that attach an exchanged token to every outbound call.

One class per RPC arity over one shared core: `grpc.aio.Channel` files an interceptor object
under the *first* interface it matches, so a single class implementing all four would be
registered as unary-unary only and streaming calls would go out without a token (grpc issues
31442, 36180, 43512). The core copies the call's metadata, replaces any `authorization` entry with
the exchanged token (keeping `traceparent` and everything else) and, when the downstream answers
UNAUTHENTICATED with a claims challenge, evicts the cached token so the next call exchanges anew.

`OnBehalfOf` and `AppOnly` are the exchangers with `client_interceptors()` and `channel()`
helpers: the only public face of this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import grpc
import grpc.aio

from grpc_obo._common import is_loopback
from grpc_obo._errors import ConfigurationError
from grpc_obo._exchange._cache import TokenCache
from grpc_obo._exchange._credentials import ConfidentialClient
from grpc_obo._exchange._exchanger import AppOnlyExchanger, OboExchanger
from grpc_obo._exchange._retry import RetryPolicy
from grpc_obo._identity import Identity, SecretToken, current_identity
from grpc_obo._relay import ClaimsMemory, Code, Failures, choose_challenge, claims_of, recording
from grpc_obo._telemetry import Telemetry, recorder_for

__all__ = ["AppOnly", "OnBehalfOf"]

_log = logging.getLogger("grpc_obo.client")

if TYPE_CHECKING:
    import httpx

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
Ready = Callable[[tuple[str, ...]], "SecretToken | None"]
Evict = Callable[[tuple[str, ...], Identity, "str | None"], Coroutine[Any, Any, None]]


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
        ready: Ready | None = None,
    ) -> None:
        self._acquire = acquire
        self._ready = ready  # a token at hand (cached, nothing to do), without a coroutine
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
        if self._pending or self._ready is None:
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
        return _with_token(details, await self._acquire(scopes, details.timeout))

    def watch(self, call: Any, method: str) -> None:
        """Look at how `call` ended, at no cost beyond a callback when it succeeded.

        A failure (any status but OK) is recorded with its chosen challenge for the server
        interceptor to relay (`grpc_obo._relay`); a claims challenge also evicts the cached token.
        """
        # The done callback runs in whatever context grpc calls it from: capture the caller's
        # identity and the served call's failure list now.
        failures = recording()
        identity = current_identity()
        if failures is None and (self._evict is None or identity is None):
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
        trailing = _result_now(call.trailing_metadata()) or ()
        # The same choice the server interceptor makes when it relays: one function decides.
        challenge = choose_challenge(
            value for key, value in trailing if str(key).lower() == "www-authenticate"
        )
        if failures is not None:
            failures.record(Code[code.name], challenge)
        if (
            code is grpc.StatusCode.UNAUTHENTICATED
            and challenge is not None
            and challenge.get("error") == "insufficient_claims"
            and self._evict is not None
            and identity is not None
        ):
            _log.info("downstream sent a claims challenge on %s: evicting", method)
            self._spawn(self._evict(self.scopes_for(method), identity, claims_of(challenge)))

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


class _UnaryUnary(_UU):
    def __init__(self, core: _Core) -> None:
        self._core = core

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        core = self._core
        name, scopes = core.route(details.method)
        outgoing = core.ready(details, scopes) or await core.authorize(details, scopes)
        call = await continuation(outgoing, request)
        core.watch(call, name)
        return call


class _UnaryStream(_US):
    def __init__(self, core: _Core) -> None:
        self._core = core

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        core = self._core
        name, scopes = core.route(details.method)
        outgoing = core.ready(details, scopes) or await core.authorize(details, scopes)
        call = await continuation(outgoing, request)
        core.watch(call, name)
        return call


class _StreamUnary(_SU):
    def __init__(self, core: _Core) -> None:
        self._core = core

    async def intercept_stream_unary(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        core = self._core
        name, scopes = core.route(details.method)
        outgoing = core.ready(details, scopes) or await core.authorize(details, scopes)
        call = await continuation(outgoing, request_iterator)
        core.watch(call, name)
        return call


class _StreamStream(_SS):
    def __init__(self, core: _Core) -> None:
        self._core = core

    async def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        core = self._core
        name, scopes = core.route(details.method)
        outgoing = core.ready(details, scopes) or await core.authorize(details, scopes)
        call = await continuation(outgoing, request_iterator)
        core.watch(call, name)
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


# -- channel(): the one place that sees the channel, so plaintext to a remote host is caught --

_LOCAL_SOCKET_SCHEMES = ("unix", "unix-abstract")


def _host_of(address: str) -> str:
    if address.startswith("["):  # [v6]:port
        return address[1:].partition("]")[0]
    if address.count(":") == 1:  # host:port
        return address.partition(":")[0]
    return address  # a host alone, a bare IPv6 address, or a target we cannot read


def _target_hosts(target: str) -> list[str]:
    """The hosts a grpc target names (none for a local socket). Unknown schemes such as
    `xds:` come back whole: they are not loopback, so they warn."""
    scheme, colon, rest = target.strip().partition(":")
    scheme = scheme.lower()
    if colon and scheme in _LOCAL_SOCKET_SCHEMES:
        return []
    if colon and scheme in ("ipv4", "ipv6"):
        return [_host_of(address) for address in rest.split(",")]
    if colon and scheme == "dns":
        if rest.startswith("//"):  # dns://[dns-server]/host:port
            rest = rest[2:].partition("/")[2]
        return [_host_of(rest)]
    if colon and rest.startswith("/"):  # another resolver's URI (xds:///name, ...)
        return [target.strip()]
    return [_host_of(target.strip())]  # host:port, resolved by grpc's default dns:///


def _is_plaintext(credentials: grpc.ChannelCredentials | None) -> bool:
    # NOTE: grpc.experimental.insecure_channel_credentials() given to secure_channel is plaintext
    # too; only grpc's private wrapped object says so (if that changes, such channels go unwarned).
    inner = getattr(credentials, "_credentials", None)
    return credentials is None or type(inner).__name__ == "InsecureChannelCredentials"


class _Channels:
    """`channel()` for `OnBehalfOf` and `AppOnly`, built on their `client_interceptors()`."""

    def client_interceptors(
        self,
        *,
        scopes: Sequence[str],
        method_scopes: Mapping[str, Sequence[str]] | None = None,
    ) -> list[grpc.aio.ClientInterceptor]:
        raise NotImplementedError

    def channel(
        self,
        target: str,
        *,
        scopes: Sequence[str],
        credentials: grpc.ChannelCredentials | None = None,
        method_scopes: Mapping[str, Sequence[str]] | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
        compression: grpc.Compression | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> grpc.aio.Channel:
        """A `grpc.aio` channel to `target` whose every call carries a token for `scopes`.

        TLS with `credentials` (`grpc.ssl_channel_credentials(...)`), plaintext without. A
        plaintext channel to anything but loopback or a unix socket logs one WARNING when it is
        built: its calls would send bearer tokens readable on the network. `interceptors` run
        before ours (an OpenTelemetry client interceptor given here wraps the token exchange).
        """
        attached = [
            *interceptors,
            *self.client_interceptors(scopes=scopes, method_scopes=method_scopes),
        ]
        if _is_plaintext(credentials):
            remote = [host for host in _target_hosts(target) if not is_loopback(host, by_name=True)]
            if remote:
                _log.warning(
                    "plaintext channel to %s: every call sends a bearer token unencrypted; "
                    "pass credentials=grpc.ssl_channel_credentials(...) for anything but "
                    "loopback",
                    ", ".join(remote),
                )
        if credentials is None:
            return grpc.aio.insecure_channel(
                target, options=options, compression=compression, interceptors=attached
            )
        return grpc.aio.secure_channel(
            target, credentials, options=options, compression=compression, interceptors=attached
        )


class OnBehalfOf(OboExchanger, _Channels):
    """On-Behalf-Of for the current user, cached; build outbound interceptors from it.

    ```
    obo = OnBehalfOf(ConfidentialClient.from_env())
    channel = obo.channel(target, credentials=creds, scopes=["api://downstream/Data.Read"])
    ```
    Every call on that channel must run inside an authenticated server call (the user's
    verified identity is in context); otherwise it fails with `MissingIdentityError`.
    """

    def __init__(
        self,
        client: ConfidentialClient,
        *,
        cache: TokenCache | None = None,
        retry: RetryPolicy | None = None,
        max_workers: int = 16,
        telemetry: Telemetry | None = None,
    ) -> None:
        """`telemetry` defaults to the global OpenTelemetry providers (see `grpc_obo.Telemetry`)."""
        super().__init__(
            client,
            cache=cache,
            retry=retry,
            max_workers=max_workers,
            observer=recorder_for(telemetry),
        )

    def client_interceptors(
        self,
        *,
        scopes: Sequence[str],
        method_scopes: Mapping[str, Sequence[str]] | None = None,
    ) -> list[grpc.aio.ClientInterceptor]:
        """The four interceptors (one per arity) for `grpc.aio.*_channel(interceptors=...)`.

        `method_scopes` overrides `scopes` per `/pkg.Service/Method` or per `pkg.Service`.
        """

        # Claims a downstream asked for (claims challenge), per user and scope set: the next
        # exchange for them carries the claims, so the token obtained meets the challenge;
        # once one did, they are forgotten (see grpc_obo._relay.ClaimsMemory).
        claims_for = ClaimsMemory()

        async def acquire(wanted: tuple[str, ...], timeout: float | None) -> SecretToken:
            identity = current_identity()
            claims = claims_for.get(identity, wanted)
            token = await self.acquire(wanted, timeout=timeout, claims=claims)
            if claims is not None:
                claims_for.forget(identity, wanted, claims)
            return token

        def ready(wanted: tuple[str, ...]) -> SecretToken | None:
            # `acquire`'s cache hit without its coroutines: anything else (no user, claims
            # to send, a miss, a token due for refresh) goes through `acquire`.
            identity = current_identity()
            if identity is None or not identity.is_user or claims_for.get(identity, wanted):
                return None
            return self._ready_token(identity, wanted)

        async def evict(wanted: tuple[str, ...], identity: Identity, claims: str | None) -> None:
            await self.invalidate(
                wanted, identity=identity, claims=claims_for.get(identity, wanted)
            )
            claims_for.put(identity, wanted, claims)

        core = _Core(
            acquire=acquire,
            evict=evict,
            scopes=scopes,
            method_scopes=method_scopes,
            ready=ready,
        )
        return _interceptors(core)

    def _ready_token(self, user: Identity, wanted: tuple[str, ...]) -> SecretToken | None:
        """A cached token for `user` and `wanted` that needs no work, or None (see `acquire`).

        `wanted` comes from the interceptor core, checked at construction (`_check_scopes`).
        """
        hit = self.cache.peek(self._key_for(user, wanted, None))
        if hit is None:
            return None
        self._observer.hit("on_behalf_of", wanted)
        return hit.access_token

    def http_auth(self, *, scopes: Sequence[str], timeout: float | None = None) -> httpx.Auth:
        """An `httpx.Auth` for HTTP downstreams (Microsoft Graph, your REST APIs), as the user.

        ```
        graph = httpx.AsyncClient(auth=obo.http_auth(scopes=["https://graph.microsoft.com/User.Read"]))
        ```
        Same cache, single flight, retries and telemetry as this object's channels. A 401
        claims challenge (CAE, authentication context) evicts the token, exchanges again with
        the claims and replays the request once; when only the user can satisfy them,
        `ClaimsChallengeError` ends the incoming call (UNAUTHENTICATED, claims relayed).
        `timeout` bounds each token acquisition. Needs `grpc-obo[http]` (httpx).
        """
        from grpc_obo._http_auth import obo_http_auth

        return obo_http_auth(self, scopes=scopes, timeout=timeout)


class AppOnly(AppOnlyExchanger, _Channels):
    """Client-credentials tokens for calls the service makes as itself, never for a user.

    A separate channel on purpose: app-only access is never a fallback for a missing user.
    """

    def __init__(
        self,
        client: ConfidentialClient,
        *,
        retry: RetryPolicy | None = None,
        max_workers: int = 4,
        telemetry: Telemetry | None = None,
    ) -> None:
        super().__init__(
            client,
            retry=retry,
            max_workers=max_workers,
            observer=recorder_for(telemetry),
        )

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

    def http_auth(self, *, scopes: Sequence[str], timeout: float | None = None) -> httpx.Auth:
        """An `httpx.Auth` sending this service's own token (`<resource>/.default`).

        Never a stand-in for a user: use `OnBehalfOf.http_auth` for calls made for one.
        Needs `grpc-obo[http]` (httpx).
        """
        from grpc_obo._http_auth import app_only_http_auth

        return app_only_http_auth(self, scopes=scopes, timeout=timeout)
