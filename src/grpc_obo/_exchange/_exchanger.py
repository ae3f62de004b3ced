"""The exchangers: On-Behalf-Of for the current user, and client credentials for app-only calls.

    acquire(scopes)
      └── identity from the request context (a user, or a clear error: never an app fallback)
          └── TokenCache.get_or_fetch(key = H(assertion, client, authority, scopes, claims))
                └── one fetch per key: MSAL in a worker thread, retried with backoff + jitter
                    on 429/5xx/network within a time budget, errors classified (`_retry.py`)

MSAL is synchronous: it runs in a bounded thread pool owned by the exchanger, so a slow
authority ties up those threads, never the event loop. `start()` proves the configuration at
start-up (the home tenant's metadata and one client-credentials token); a refusal of this
client's own configuration names the setting to fix (`explain_refusal`). No grpc import here.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msal

from grpc_obo._common import LRU
from grpc_obo._errors import (
    AppTokenNotAllowedError,
    AuthorityUnavailableError,
    ConfigurationError,
    ConsentRequiredError,
    MissingIdentityError,
    TokenExchangeError,
)
from grpc_obo._exchange._cache import TokenCache
from grpc_obo._exchange._confidential import ConfidentialClient
from grpc_obo._exchange._http import AuthorityHttpClient, DiscardingTokenCache, NoHttpCache
from grpc_obo._exchange._keys import log_ref, obo_cache_key
from grpc_obo._exchange._observe import ExchangeObserver, Observer
from grpc_obo._exchange._refusal import explain_refusal
from grpc_obo._exchange._retry import Outcome, RetryPolicy, classify, unavailable
from grpc_obo._exchange._sources import CredentialChain, Resolved
from grpc_obo._exchange._token import CachedToken
from grpc_obo._identity import Identity, SecretToken, current_identity

__all__ = ["AppOnlyExchanger", "OboExchanger"]

_log = logging.getLogger("grpc_obo.exchange")


_MEMO_WITHOUT_BOUND = 10_000
"""The key memo's size when the cache's store states no in-process bound of its own."""


def _scope_tuple(scopes: Iterable[str]) -> tuple[str, ...]:
    if isinstance(scopes, str):
        raise ConfigurationError("scopes must be a collection of strings, not a string")
    result = tuple(scopes)
    if not result or not all(isinstance(s, str) and s and " " not in s for s in result):
        raise ConfigurationError("scopes must be non-empty strings without spaces")
    return result


class _MsalRunner:
    """One MSAL ConfidentialClientApplication, built lazily off the loop, and its retries."""

    def __init__(
        self,
        client: ConfidentialClient,
        *,
        retry: RetryPolicy,
        max_workers: int,
        token_cache: Any,
        observer: Observer,
    ) -> None:
        self.client = client
        self.retry = retry
        self.observer = observer
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="grpc-obo-msal")
        self._http = AuthorityHttpClient(
            ca_file=client.ca_file, timeout=client.http_timeout, pool_size=max_workers
        )
        self._token_cache = token_cache
        self._credentials = CredentialChain(
            [
                c.source(ca_file=client.ca_file, timeout=client.http_timeout, clock=time.time)
                for c in client.credentials
            ]
        )
        # One MSAL app per tenant: On-Behalf-Of must go to the tenant that issued the user's
        # token (a multi-tenant middle tier serves users of several tenants). Each is kept with
        # the version of the credential it was built with: a fallback or a rotated certificate
        # builds a new one.
        self._apps: dict[str, tuple[Hashable, Any]] = {}
        self._app_lock = asyncio.Lock()

    async def _run(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        # NOTE: run_in_executor does not carry contextvars into the thread (asyncio.to_thread
        # does): copy them, so the current span parents whatever MSAL's HTTP client traces.
        context = contextvars.copy_context()
        return await loop.run_in_executor(
            self._executor, lambda: context.run(func, *args, **kwargs)
        )

    def _build(self, tenant: str, credential: Resolved) -> Any:
        # Constructing the app fetches the authority's discovery document (network I/O).
        return msal.ConfidentialClientApplication(
            self.client.client_id,
            client_credential=credential.credential,
            authority=self.client.authority_for(tenant),
            # Anything but Microsoft's own hosts would otherwise be checked against
            # login.microsoftonline.com's instance discovery.
            instance_discovery=False,
            http_client=self._http,
            http_cache=NoHttpCache(),
            token_cache=self._token_cache,
            client_capabilities=list(self.client.client_capabilities) or None,
        )

    async def _application(self, tenant: str) -> tuple[Resolved, Any]:
        # The credential is resolved for every token request (a file read, a cached assertion;
        # the managed identity's endpoint when its assertion is due), off the loop.
        credential = self._credentials.static or await self._run(self._credentials.resolve)
        held = self._apps.get(tenant)
        if held is None or held[0] != credential.version:
            async with self._app_lock:
                held = self._apps.get(tenant)
                if held is None or held[0] != credential.version:
                    built = await self._with_retries(
                        lambda: self._build_attempt(tenant, credential),
                        "set-up",
                        tenant,
                        self._credentials.index_of(credential.version),
                    )
                    held = self._apps[tenant] = (credential.version, built["app"])
        return credential, held[1]

    def _build_attempt(self, tenant: str, credential: Resolved) -> Outcome:
        # NOTE: facts are per worker thread and outlive a request: a status left from another
        # user's earlier request on this thread must not decide this attempt's outcome.
        self._http.facts.clear()
        try:
            app = self._build(tenant, credential)
        except Exception as exc:  # classified below; MSAL raises plain exceptions
            facts = self._http.facts
            return classify(
                None,
                raised=exc,
                status=facts.status,
                error_body=facts.error_body,
                ca_file=self.client.ca_file,
            )
        return Outcome(result={"app": app})

    def _token_attempt(self, call: Callable[[], Any]) -> Outcome:
        facts = self._http.facts
        facts.clear()  # see _build_attempt
        try:
            result = call()
        except Exception as exc:
            return classify(
                None,
                raised=exc,
                status=facts.status,
                retry_after=facts.retry_after,
                error_body=facts.error_body,
                ca_file=self.client.ca_file,
            )
        return classify(result, status=facts.status, retry_after=facts.retry_after)

    async def _with_retries(
        self, attempt: Callable[[], Outcome], what: str, tenant: str, source: int = 0
    ) -> Mapping[str, Any]:
        started = time.monotonic()
        last: Outcome | None = None
        for number in range(self.retry.max_attempts):
            with self.observer.authority_request(number + 1, what) as note:
                outcome: Outcome = await self._run(attempt)
                if outcome.error is not None:
                    note.fail(outcome.error)
                    raise explain_refusal(self.client, outcome.error, tenant, source)
                if not outcome.retry and outcome.result is not None:
                    return outcome.result
                note.fail(unavailable("transient failure", outcome), retry=True)
            last = outcome
            delay = self.retry.delay(number, outcome.retry_after)
            if number + 1 >= self.retry.max_attempts:
                break
            if time.monotonic() - started + delay > self.retry.budget:
                raise unavailable("retry budget exhausted", last)
            _log.info("authority %s attempt %d failed transiently; retrying", what, number + 1)
            await asyncio.sleep(delay)
        raise unavailable(f"{self.retry.max_attempts} attempts failed", last)

    async def acquire(self, tenant: str, call: Callable[[Any], Any]) -> CachedToken:
        while True:  # at most once per credential source: each refusal skips one
            credential, app = await self._application(tenant)
            attempt = functools.partial(self._token_attempt, functools.partial(call, app))
            try:
                source = self._credentials.index_of(credential.version)
                result = await self._with_retries(attempt, "token", tenant, source)
            except TokenExchangeError as exc:
                if exc.error == "invalid_client" and self._credentials.refused(
                    credential.version, exc.error_codes
                ):
                    continue
                raise
            return CachedToken.from_msal(result)

    async def check(self, scope: str | None) -> None:
        """Prove the configuration: the home tenant's metadata (host, tenant, TLS) and one
        client-credentials token (the credential), as `start()` promises."""
        tenant = self.client.tenant
        if tenant.lower() == "organizations":
            raise ConfigurationError(
                "start() proves the credential in the app's home tenant: tenant "
                "(AZURE_TENANT_ID) 'organizations' names none; give the home tenant's GUID"
            )
        wanted = _scope_tuple([scope or f"{self.client.client_id}/.default"])
        await self.acquire(tenant, lambda app: app.acquire_token_for_client(list(wanted)))

    async def close(self) -> None:
        # Wait for the requests already running in the worker threads (each bounded by
        # http_timeout): once close() returns, this client sends nothing more.
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self._http.close()
        self._credentials.close()


class OboExchanger:
    """Exchanges the current user's token for one to a downstream API (On-Behalf-Of), cached.

    One instance serves every user of the service; share it. Build the outbound channel's
    interceptors from it with `client_interceptors()` (see `grpc_obo.OnBehalfOf`).
    """

    def __init__(
        self,
        client: ConfidentialClient,
        *,
        cache: TokenCache | None = None,
        retry: RetryPolicy | None = None,
        max_workers: int = 16,
        observer: Observer | None = None,
    ) -> None:
        if not isinstance(client, ConfidentialClient):
            raise ConfigurationError("client must be a ConfidentialClient")
        self.client = client
        self.cache = cache if cache is not None else TokenCache()
        self._observer: Observer = observer if observer is not None else ExchangeObserver()
        self._runner = _MsalRunner(
            client,
            retry=retry or RetryPolicy(),
            max_workers=max_workers,
            token_cache=DiscardingTokenCache(),
            observer=self._observer,
        )
        self.exchanges = 0
        """How many token requests this exchanger has started (for tests and metrics)."""
        # Cache keys by (incoming token, scopes, claims): an LRU no larger than the number of
        # tokens the cache itself keeps here, so it holds no more tokens than the caches do.
        self._keys: LRU[tuple[str, tuple[str, ...], str | None], str] = LRU(
            self.cache.max_entries or _MEMO_WITHOUT_BOUND
        )
        # Scope tuples already validated, each to its one shared copy.
        self._checked: dict[tuple[str, ...], tuple[str, ...]] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(client_id={self.client.client_id!r})"

    def _user(self, identity: Identity | None) -> Identity:
        identity = identity if identity is not None else current_identity()
        if identity is None:
            raise MissingIdentityError(
                "no verified user identity in this context: On-Behalf-Of runs only inside an "
                "authenticated call (never falls back to an app token)"
            )
        if not identity.is_user:
            raise AppTokenNotAllowedError(
                "the caller is an application: there is no user to act on behalf of"
            )
        return identity

    def _key_for(self, user: Identity, wanted: tuple[str, ...], claims: str | None) -> str:
        """`cache_key`, memoized per token, scope set and claims (computed once per user).

        NOTE: keyed by the token string in this process only (like the verified-token cache);
        the key it maps to is the SHA-256 digest that may leave the process. Least recently
        used first out, at the cache's own in-process bound (`max_entries`).
        """
        memo = (user.token.reveal(), wanted, claims)
        key = self._keys.get(memo)
        if key is None:
            key = self.cache_key(wanted, identity=user, claims=claims)
            self._keys.put(memo, key)
        return key

    def cache_key(
        self, scopes: Iterable[str], *, identity: Identity | None = None, claims: str | None = None
    ) -> str:
        user = self._user(identity)
        return obo_cache_key(
            assertion=user.token,
            client_id=self.client.client_id,
            authority=self.client.authority_for(user.tid),
            scopes=_scope_tuple(scopes),
            claims=claims,
        )

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
        user = self._user(identity)
        checked = self._checked
        wanted = checked.get(scopes) if type(scopes) is tuple else None
        if wanted is None:
            wanted = _scope_tuple(scopes)
            # One tuple per scope set, shared by every memo entry that names it.
            known = checked.get(wanted)
            if known is not None:
                wanted = known
            elif len(checked) < 1024:
                checked[wanted] = wanted
        key = self._key_for(user, wanted, claims)
        # The hot path: a cached token needs no task, timer or coroutine of its own; the
        # deadline bounds the exchange below, not this lookup.
        hit = self.cache.peek(key)
        if hit is not None:
            self._observer.hit("on_behalf_of", wanted)
            return hit.access_token
        assertion = user.token

        async def fetch() -> CachedToken:
            self.exchanges += 1
            _log.debug("On-Behalf-Of exchange for %s (%s)", user.principal, log_ref(key))
            return await self._runner.acquire(
                user.tid,
                lambda app: app.acquire_token_on_behalf_of(
                    assertion.reveal(), list(wanted), claims_challenge=claims
                ),
            )

        with self._observer.acquisition("on_behalf_of", wanted) as note:
            try:
                # `timeout=` also to the cache: waiting on another replica's exchange (Redis
                # store) stops early enough to exchange here within the deadline.
                token = await _bounded(
                    self.cache.get_or_fetch(key, fetch, note=note, timeout=timeout), timeout
                )
            except ConsentRequiredError as missing:
                # Name what lacks consent: the client app's user or admin must grant exactly
                # this (scope names are configuration, never secrets).
                raise ConsentRequiredError(
                    f"consent is missing for {' '.join(wanted)}: the user or an administrator "
                    "must grant it to this API",
                    error=missing.error,
                    suberror=missing.suberror,
                    error_codes=missing.error_codes,
                    correlation_id=missing.correlation_id,
                ) from None
        return token.access_token

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
        await self._runner.check(scope)

    async def invalidate(
        self, scopes: Sequence[str], *, identity: Identity | None = None, claims: str | None = None
    ) -> None:
        """Forget the cached token (the downstream answered with a claims challenge)."""
        await self.cache.invalidate(self.cache_key(scopes, identity=identity, claims=claims))

    async def close(self) -> None:
        await self.cache.close()
        await self._runner.close()

    async def __aenter__(self) -> OboExchanger:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class AppOnlyExchanger:
    """Client-credentials tokens for calls the service makes as itself (never for a user)."""

    def __init__(
        self,
        client: ConfidentialClient,
        *,
        retry: RetryPolicy | None = None,
        max_workers: int = 4,
        observer: Observer | None = None,
    ) -> None:
        if not isinstance(client, ConfidentialClient):
            raise ConfigurationError("client must be a ConfidentialClient")
        self.client = client
        self._observer: Observer = observer if observer is not None else ExchangeObserver()
        # Our cache (single flight, proactive refresh) fronts MSAL's, so MSAL's would only
        # duplicate it.
        self._runner = _MsalRunner(
            client,
            retry=retry or RetryPolicy(),
            max_workers=max_workers,
            token_cache=DiscardingTokenCache(),
            observer=self._observer,
        )
        self.cache = TokenCache()
        self.exchanges = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(client_id={self.client.client_id!r})"

    async def start(self, *, scope: str | None = None) -> None:
        """Check the configuration now, as `OboExchanger.start()` does."""
        await self._runner.check(scope)

    async def acquire(self, scopes: Sequence[str], *, timeout: float | None = None) -> SecretToken:
        wanted = _scope_tuple(scopes)
        if len(wanted) != 1 or not wanted[0].endswith("/.default"):
            raise ConfigurationError("app-only tokens take exactly one '<resource>/.default' scope")
        key = "grpc_obo:app:v1:" + "|".join((self.client.client_id, self.client.authority, *wanted))

        async def fetch() -> CachedToken:
            self.exchanges += 1
            return await self._runner.acquire(
                self.client.tenant, lambda app: app.acquire_token_for_client(list(wanted))
            )

        hit = self.cache.peek(key)
        if hit is not None:
            self._observer.hit("client_credentials", wanted)
            return hit.access_token
        with self._observer.acquisition("client_credentials", wanted) as note:
            token = await _bounded(self.cache.get_or_fetch(key, fetch, note=note), timeout)
        return token.access_token

    async def close(self) -> None:
        await self.cache.close()
        await self._runner.close()

    async def __aenter__(self) -> AppOnlyExchanger:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def _bounded(awaitable: Any, timeout: float | None) -> CachedToken:
    if timeout is None:
        result: CachedToken = await awaitable
        return result
    if timeout <= 0:
        awaitable.close()
        raise AuthorityUnavailableError("no time left in the call's deadline for a token exchange")
    try:
        result = await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise AuthorityUnavailableError(
            "the token exchange did not finish within the call's deadline"
        ) from None
    return result
