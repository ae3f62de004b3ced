"""The two public faces for outbound calls: `OnBehalfOf` (as the user) and `AppOnly` (as the
service itself), and `channel()`, the one place that sees the channel being built.

Each composes one exchanger core (`grpc_obo._exchange._exchanger.Exchanger`) with its grant;
its gRPC interceptors (`_client_interceptors.py`) and HTTP auths (`_http_auth.py`) share that
core: one cache, single flight, retries, telemetry and, as the user, one claims memory.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from grpc_obo._client_interceptors import client_interceptors
from grpc_obo._common import is_loopback
from grpc_obo._errors import ConfigurationError
from grpc_obo._exchange import TokenCache, TokenStore
from grpc_obo._exchange._confidential import ConfidentialClient
from grpc_obo._exchange._exchanger import Exchanger
from grpc_obo._exchange._grants import CLIENT_CREDENTIALS, ON_BEHALF_OF
from grpc_obo._exchange._retry import RetryPolicy
from grpc_obo._identity import Identity, SecretToken
from grpc_obo._relay import ClaimsMemory
from grpc_obo._telemetry import Telemetry, recorder_for

__all__ = ["AppOnly", "OnBehalfOf"]

_log = logging.getLogger("grpc_obo.client")

if TYPE_CHECKING:
    import httpx


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


def _channel(
    target: str,
    given: Sequence[grpc.aio.ClientInterceptor],
    ours: list[grpc.aio.ClientInterceptor],
    credentials: grpc.ChannelCredentials | None,
    options: Sequence[tuple[str, Any]] | None,
    compression: grpc.Compression | None,
) -> grpc.aio.Channel:
    """The channel `channel()` builds (`given` interceptors before `ours`), its settings
    checked, warning once for plaintext to anything but loopback."""
    _check_channel(target, given, credentials, options, compression)
    attached = [*given, *ours]
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


def _check_channel(
    target: object, given: object, credentials: object, options: object, compression: object
) -> None:
    """What grpc would refuse with a `TypeError` (or take, to fail on the first call), refused
    here as a `ConfigurationError` naming the setting."""
    if not isinstance(target, str) or not target.strip():
        raise ConfigurationError(
            "target must be a grpc target string ('host:port')", setting="target"
        )
    if credentials is not None and not isinstance(credentials, grpc.ChannelCredentials):
        raise ConfigurationError(
            "credentials must be grpc.ChannelCredentials (grpc.ssl_channel_credentials(...))",
            setting="credentials",
        )
    if (
        isinstance(given, str)
        or not isinstance(given, Sequence)
        or not all(isinstance(i, grpc.aio.ClientInterceptor) for i in given)
    ):
        raise ConfigurationError(
            "interceptors must be a list of grpc.aio client interceptors", setting="interceptors"
        )
    if options is not None and (
        isinstance(options, str)
        or not isinstance(options, Sequence)
        or not all(isinstance(o, tuple) and len(o) == 2 and isinstance(o[0], str) for o in options)
    ):
        raise ConfigurationError("options must be a list of (name, value) pairs", setting="options")
    if compression is not None and not isinstance(compression, grpc.Compression):
        raise ConfigurationError("compression must be a grpc.Compression", setting="compression")


class OnBehalfOf:
    """On-Behalf-Of for the current user, cached; build outbound channels and interceptors
    (gRPC) and HTTP auths (`httpx.Auth`) from it.

    ```
    obo = OnBehalfOf(ConfidentialClient.from_env())
    channel = obo.channel(target, credentials=creds, scopes=["api://downstream/Data.Read"])
    ```
    Every call on that channel must run inside an authenticated server call (the user's
    verified identity is in context); otherwise it fails with `MissingIdentityError`. One
    instance serves every user of the service; share it: its channels and HTTP auths share
    one cache, single flight and claims memory.
    """

    def __init__(
        self,
        client: ConfidentialClient,
        *,
        cache: TokenCache | None = None,
        store: TokenStore | None = None,
        retry: RetryPolicy | None = None,
        max_workers: int = 16,
        telemetry: Telemetry | None = None,
    ) -> None:
        """`cache=` a `TokenCache`, or `store=` a token store (`RedisTokenStore` for replicas)
        that a cache is built over; default: in-process. A cache or store passed in is the
        caller's to close (`close()` closes what this object built). `telemetry` defaults to
        the global OpenTelemetry providers (see `grpc_obo.Telemetry`)."""
        # Claims a downstream asked for (claims challenge), per user and scope set, for every
        # channel and HTTP auth of this object: the next exchange for them carries the claims,
        # whichever transport it is for; once one did, they are forgotten.
        self._exchanger = Exchanger(
            client,
            ON_BEHALF_OF,
            cache=cache,
            store=store,
            retry=retry,
            max_workers=max_workers,
            observer=recorder_for(telemetry),
            claims=ClaimsMemory(),
        )

    def __repr__(self) -> str:
        return f"OnBehalfOf(client_id={self.client.client_id!r})"

    @property
    def client(self) -> ConfidentialClient:
        return self._exchanger.client

    @property
    def cache(self) -> TokenCache:
        return self._exchanger.cache

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
        """A `grpc.aio` channel to `target` whose every call carries the user's token for `scopes`.

        TLS with `credentials` (`grpc.ssl_channel_credentials(...)`), plaintext without. A
        plaintext channel to anything but loopback or a unix socket logs one WARNING when it is
        built: its calls would send bearer tokens readable on the network. `interceptors` run
        before ours (an OpenTelemetry client interceptor given here wraps the token exchange).
        """
        ours = self.client_interceptors(scopes=scopes, method_scopes=method_scopes)
        return _channel(target, interceptors, ours, credentials, options, compression)

    def client_interceptors(
        self,
        *,
        scopes: Sequence[str],
        method_scopes: Mapping[str, Sequence[str]] | None = None,
    ) -> list[grpc.aio.ClientInterceptor]:
        """The four interceptors (one per arity) for `grpc.aio.*_channel(interceptors=...)`.

        `method_scopes` overrides `scopes` per `/pkg.Service/Method` or per `pkg.Service`.
        A downstream's uncaught refusal is relayed to the caller (`grpc_obo._relay`).
        """
        return client_interceptors(self._exchanger, scopes, method_scopes)

    def http_auth(self, *, scopes: Sequence[str], timeout: float | None = None) -> httpx.Auth:
        """An `httpx.Auth` for HTTP downstreams (Microsoft Graph, your REST APIs), as the user.

        ```
        graph = httpx.AsyncClient(auth=obo.http_auth(scopes=["https://graph.microsoft.com/User.Read"]))
        ```
        Same cache, single flight, retries, claims memory and telemetry as this object's
        channels. A 401 claims challenge (CAE, authentication context) evicts the token,
        exchanges again with the claims and replays the request once; when only the user can
        satisfy them, `ClaimsChallengeError` ends the incoming call (UNAUTHENTICATED, claims
        relayed). `timeout` bounds each token acquisition. Needs `grpc-obo[http]` (httpx).
        """
        from grpc_obo._http_auth import http_auth

        return http_auth(self._exchanger, scopes=scopes, timeout=timeout)

    async def acquire(
        self,
        scopes: Sequence[str],
        *,
        identity: Identity | None = None,
        claims: str | None = None,
        timeout: float | None = None,
    ) -> SecretToken:
        """A token for the downstream `scopes`, for the user in `identity` (default: current).

        `timeout` bounds this caller's wait; the shared exchange may go on and fill the cache.
        """
        return await self._exchanger.acquire(
            scopes, identity=identity, claims=claims, timeout=timeout
        )

    def cache_key(
        self, scopes: Sequence[str], *, identity: Identity | None = None, claims: str | None = None
    ) -> str:
        """The cache key of the user's token for `scopes` (a SHA-256 digest, never a token)."""
        return self._exchanger.cache_key(scopes, identity=identity, claims=claims)

    async def invalidate(
        self, scopes: Sequence[str], *, identity: Identity | None = None, claims: str | None = None
    ) -> None:
        """Forget the cached token (the downstream answered with a claims challenge)."""
        await self._exchanger.invalidate(scopes, identity=identity, claims=claims)

    async def start(self, *, scope: str | None = None) -> None:
        """Check the configuration now, at start-up, instead of at the first call.

        Fetches the home tenant's metadata (authority host, tenant, TLS and `ca_file`) and
        requests one client-credentials token for `scope` (default: this app itself,
        `<client_id>/.default`; any `<resource>/.default` the app may ask for works), which
        proves the credential. Raises `ConfigurationError` for a `tenant` of
        'organizations', `TokenExchangeError` whose `str()` names the setting or variable to
        fix (AZURE_CLIENT_SECRET, AZURE_CLIENT_CERTIFICATE_PATH, AZURE_TENANT_ID, ...; the TLS
        problem and GRPC_OBO_CA_FILE), or `AuthorityUnavailableError` once retries are spent.
        """
        await self._exchanger.start(scope=scope)

    async def close(self) -> None:
        """Wait for the exchanges in flight, then close the worker threads, the connection
        pool and the cache this object built; a `cache=` or `store=` passed in stays open."""
        await self._exchanger.close()

    async def __aenter__(self) -> OnBehalfOf:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class AppOnly:
    """Client-credentials tokens for calls the service makes as itself, never for a user.

    A separate object and channel on purpose: app-only access is never a fallback for a missing
    user. Its channels' uncaught failures are relayed in fixed words like an On-Behalf-Of
    channel's, but a refusal of the service's own token is the service's problem: the caller
    gets `INTERNAL`, never a challenge to sign in again for (see downstream failures).
    """

    def __init__(
        self,
        client: ConfidentialClient,
        *,
        cache: TokenCache | None = None,
        store: TokenStore | None = None,
        retry: RetryPolicy | None = None,
        max_workers: int = 4,
        telemetry: Telemetry | None = None,
    ) -> None:
        """`cache=`/`store=` as `OnBehalfOf`'s: replicas sharing a `RedisTokenStore` share the
        service's tokens too."""
        self._exchanger = Exchanger(
            client,
            CLIENT_CREDENTIALS,
            cache=cache,
            store=store,
            retry=retry,
            max_workers=max_workers,
            observer=recorder_for(telemetry),
        )

    def __repr__(self) -> str:
        return f"AppOnly(client_id={self.client.client_id!r})"

    @property
    def client(self) -> ConfidentialClient:
        return self._exchanger.client

    @property
    def cache(self) -> TokenCache:
        return self._exchanger.cache

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
        """A `grpc.aio` channel to `target` whose every call carries this service's own token
        (`scopes`: one `<resource>/.default`); TLS and the plaintext warning as
        `OnBehalfOf.channel`."""
        ours = self.client_interceptors(scopes=scopes, method_scopes=method_scopes)
        return _channel(target, interceptors, ours, credentials, options, compression)

    def client_interceptors(
        self,
        *,
        scopes: Sequence[str],
        method_scopes: Mapping[str, Sequence[str]] | None = None,
    ) -> list[grpc.aio.ClientInterceptor]:
        """The four interceptors (one per arity) sending this service's own token."""
        return client_interceptors(self._exchanger, scopes, method_scopes)

    def http_auth(self, *, scopes: Sequence[str], timeout: float | None = None) -> httpx.Auth:
        """An `httpx.Auth` sending this service's own token (`<resource>/.default`).

        Never a stand-in for a user: use `OnBehalfOf.http_auth` for calls made for one.
        Needs `grpc-obo[http]` (httpx).
        """
        from grpc_obo._http_auth import http_auth

        return http_auth(self._exchanger, scopes=scopes, timeout=timeout)

    async def acquire(self, scopes: Sequence[str], *, timeout: float | None = None) -> SecretToken:
        """This service's own token for `scopes` (one `<resource>/.default`)."""
        return await self._exchanger.acquire(scopes, timeout=timeout)

    async def start(self, *, scope: str | None = None) -> None:
        """Check the configuration now, as `OnBehalfOf.start()` does."""
        await self._exchanger.start(scope=scope)

    async def close(self) -> None:
        """Wait for the exchanges in flight, then close the worker threads, the connection
        pool and the cache this object built; a `cache=` or `store=` passed in stays open."""
        await self._exchanger.close()

    async def __aenter__(self) -> AppOnly:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
