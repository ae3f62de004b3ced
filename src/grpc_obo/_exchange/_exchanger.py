"""The exchanger core: one cache-or-exchange path for every grant (`_grants.py`).

    acquire(scopes)
      └── the grant's subject: the user in context (On-Behalf-Of: a user, or a clear error,
          never an app fallback), or the service itself (client credentials)
          └── claims remembered for that subject and scope set (a downstream's challenge)
              └── TokenCache: a usable token needing no work (`ready`: no coroutine), else
                  get_or_fetch(key) -> one fetch per key: MSAL in a worker thread (`_runner.py`)

One instance serves every user of the service; `OnBehalfOf` and `AppOnly` each hold one, with
their grant, and hand it to their gRPC channels and HTTP auths, which so share its cache, single
flight, retries, telemetry and claims memory. `start()` proves the configuration at start-up
(the home tenant's metadata and one client-credentials token). No grpc import here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

from grpc_obo._common import LRU
from grpc_obo._errors import (
    AuthorityUnavailableError,
    ConfigurationError,
    ConsentRequiredError,
)
from grpc_obo._errors._checks import a_whole_number
from grpc_obo._exchange._cache import TokenCache
from grpc_obo._exchange._confidential import ConfidentialClient
from grpc_obo._exchange._grants import CLIENT_CREDENTIALS, Grant, scope_tuple
from grpc_obo._exchange._keys import log_ref
from grpc_obo._exchange._observe import ExchangeObserver, Observer
from grpc_obo._exchange._retry import RetryPolicy
from grpc_obo._exchange._runner import MsalRunner
from grpc_obo._exchange._store import TokenStore, a_store
from grpc_obo._exchange._token import CachedToken
from grpc_obo._identity import Identity, SecretToken, current_identity

__all__ = ["ClaimsLike", "Exchanger", "cache_of"]

_log = logging.getLogger("grpc_obo.exchange")


_MEMO_WITHOUT_BOUND = 10_000
"""The key memo's size when the cache's store states no in-process bound of its own."""
_MAX_SCOPE_SETS = 1024


class ClaimsLike(Protocol):
    """Claims a downstream asked for, per subject and scope set (`grpc_obo._relay.ClaimsMemory`)."""

    def get(self, identity: Identity | None, scopes: tuple[str, ...]) -> str | None: ...

    def put(self, identity: Identity, scopes: tuple[str, ...], claims: str | None) -> None: ...

    def forget(self, identity: Identity | None, scopes: tuple[str, ...], claims: str) -> None: ...


def cache_of(cache: TokenCache | None, store: TokenStore | None) -> TokenCache:
    """The cache an exchanger uses: `cache` as given, or one over `store` (wrapped once, here),
    or an in-process one."""
    if cache is not None and store is not None:
        raise ConfigurationError(
            "give cache= (a TokenCache) or store= (a token store), not both", setting="store"
        )
    if cache is not None and not isinstance(cache, TokenCache):
        raise ConfigurationError(
            f"cache= takes a TokenCache, not a {type(cache).__name__}: pass a store as store=",
            setting="cache",
        )
    if isinstance(store, TokenCache):
        raise ConfigurationError(
            "store= takes a token store, not a TokenCache: pass a cache as cache=",
            setting="store",
        )
    if cache is not None:
        return cache
    return TokenCache(store=a_store(store)) if store is not None else TokenCache()


class Exchanger:
    """Tokens for downstream scopes by one grant, cached: the core under `OnBehalfOf`/`AppOnly`."""

    def __init__(
        self,
        client: ConfidentialClient,
        grant: Grant,
        *,
        cache: TokenCache | None = None,
        store: TokenStore | None = None,
        retry: RetryPolicy | None = None,
        max_workers: int = 16,
        observer: Observer | None = None,
        claims: ClaimsLike | None = None,
    ) -> None:
        # Every setting checked before anything is built: a bad one leaves nothing to close.
        if not isinstance(client, ConfidentialClient):
            raise ConfigurationError(
                "client must be a grpc_obo.ConfidentialClient", setting="client"
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError("retry must be a grpc_obo.RetryPolicy", setting="retry")
        a_whole_number("max_workers", max_workers)
        self.client = client
        self.grant = grant
        # NOTE: closed by `close()` only when built here: a cache passed in is the caller's.
        self._owns_cache = cache is None
        self.cache = cache_of(cache, store)
        self.claims = claims if grant.as_user else None
        """Claims remembered per subject and scope set: the user's, never the service's."""
        # Looked up once: `ready` is the hot path of every outbound call.
        self._as_user = grant.as_user
        self._name = grant.name
        self._observer: Observer = observer if observer is not None else ExchangeObserver()
        self._runner = MsalRunner(
            client, retry=retry or RetryPolicy(), max_workers=max_workers, observer=self._observer
        )
        # Cache keys by (subject's token, scopes, claims): an LRU no larger than the number of
        # tokens the cache itself keeps here, so it holds no more tokens than the caches do.
        self._keys: LRU[tuple[str | None, tuple[str, ...], str | None], str] = LRU(
            self.cache.max_entries or _MEMO_WITHOUT_BOUND
        )
        # Scope tuples already checked, each to its one shared copy.
        self._checked: dict[tuple[str, ...], tuple[str, ...]] = {}

    def __repr__(self) -> str:
        return f"Exchanger({self.grant.name}, client_id={self.client.client_id!r})"

    def scopes(self, scopes: Sequence[str], what: str = "scopes") -> tuple[str, ...]:
        """`scopes` checked (`scope_tuple`, and what the grant can ask for), memoized."""
        # NOTE: a list (the usual spelling) is looked up as a tuple: checking it again on every
        # acquire() cost more than the rest of a cache hit.
        if type(scopes) is list:
            scopes = tuple(scopes)
        try:
            wanted = self._checked.get(scopes) if type(scopes) is tuple else None
        except TypeError:  # an unhashable entry: not a scope, scope_tuple says so below
            wanted = None
        if wanted is not None:
            return wanted
        wanted = scope_tuple(scopes, what)
        self.grant.check(wanted, what)
        # One tuple per scope set, shared by every memo entry that names it.
        known = self._checked.get(wanted)
        if known is not None:
            return known
        if len(self._checked) < _MAX_SCOPE_SETS:
            self._checked[wanted] = wanted
        return wanted

    def _key_for(
        self, subject: Identity | None, wanted: tuple[str, ...], claims: str | None
    ) -> str:
        """The grant's cache key, memoized per subject token, scope set and claims.

        NOTE: keyed by the token string in this process only (like the verified-token cache);
        the key it maps to is the SHA-256 digest that may leave the process. Least recently
        used first out, at the cache's own in-process bound (`max_entries`).
        """
        memo = (subject.token.reveal() if subject is not None else None, wanted, claims)
        key = self._keys.get(memo)
        if key is None:
            key = self.grant.key(self.client, subject, wanted, claims)
            self._keys.put(memo, key)
        return key

    def cache_key(
        self, scopes: Sequence[str], *, identity: Identity | None = None, claims: str | None = None
    ) -> str:
        subject = self.grant.subject(identity)
        return self.grant.key(self.client, subject, self.scopes(scopes), claims)

    def ready(self, wanted: tuple[str, ...]) -> SecretToken | None:
        """A cached token for the subject in context that needs no work at all, or None (then
        `acquire`: no subject, claims to send, a miss, a token due for refresh).

        NOTE: the hot path of every outbound call, synchronous: a cached token costs no
        coroutine, task or lock (issue 23). `wanted` comes checked (`scopes()`).
        """
        subject: Identity | None = None
        if self._as_user:
            # NOTE: the grant's rule (a user in context) as a yes/no, not a call to its
            # `subject()`: a frame less on every call; a no goes to `acquire`, which raises.
            subject = current_identity()
            if subject is None or not subject.is_user:
                return None
            memory = self.claims
            if memory is not None and memory.get(subject, wanted) is not None:
                return None
        return self._cached(self._key_for(subject, wanted, None), wanted)

    def _cached(self, key: str, wanted: tuple[str, ...]) -> SecretToken | None:
        """The one cache-hit path: a token needing no work (no task, timer or coroutine; a
        deadline bounds the exchange, never this lookup), reported to telemetry."""
        hit = self.cache.peek(key)
        if hit is None:
            return None
        self._observer.hit(self._name, wanted)
        return hit.access_token

    async def acquire(
        self,
        scopes: Sequence[str],
        *,
        identity: Identity | None = None,
        claims: str | None = None,
        timeout: float | None = None,
    ) -> SecretToken:
        """A token for `scopes`, for the grant's subject (On-Behalf-Of: `identity`, default
        the current one), with `claims` (default: those a downstream asked for, remembered).

        `timeout` bounds this caller's wait; the shared exchange may go on and fill the cache.
        """
        subject = self.grant.subject(identity)
        wanted = self.scopes(scopes)
        memory = self.claims
        if claims is None and memory is not None:
            claims = memory.get(subject, wanted)
        key = self._key_for(subject, wanted, claims)
        token = self._cached(key, wanted)
        if token is None:
            token = await self._exchange(subject, wanted, claims, key, timeout)
        if claims is not None and memory is not None and subject is not None:
            # A token carrying the claims was obtained: they are met, stop asking for them.
            memory.forget(subject, wanted, claims)
        return token

    async def _exchange(
        self,
        subject: Identity | None,
        wanted: tuple[str, ...],
        claims: str | None,
        key: str,
        timeout: float | None,
    ) -> SecretToken:
        grant = self.grant
        request = grant.request(subject, wanted, claims)
        tenant = grant.tenant(self.client, subject)

        async def fetch() -> CachedToken:
            _log.debug("%s (%s)", grant.describe(subject), log_ref(key))
            return await self._runner.acquire(tenant, request)

        with self._observer.acquisition(grant.name, wanted) as note:
            try:
                # `timeout=` also to the cache: waiting on another replica's exchange (Redis
                # store) stops early enough to exchange here within the deadline.
                token = await _bounded(
                    self.cache.get_or_fetch(key, fetch, note=note, timeout=timeout), timeout
                )
            except ConsentRequiredError as missing:
                # Name what lacks consent and who grants it (scope names are configuration,
                # never secrets).
                raise ConsentRequiredError(
                    f"consent is missing for {' '.join(wanted)}: {grant.consent}",
                    error=missing.error,
                    suberror=missing.suberror,
                    error_codes=missing.error_codes,
                    correlation_id=missing.correlation_id,
                ) from None
        return token.access_token

    def challenged(
        self, scopes: Sequence[str], identity: Identity, claims: str | None
    ) -> Coroutine[Any, Any, None]:
        """A downstream refused the subject's token with a claims challenge: remember `claims`
        for the next exchange (now, for every transport sharing this core) and evict the tokens
        that cannot meet them (the returned coroutine; on every replica with a shared store):
        the one cached under the claims remembered until now (the refused token, most likely),
        and any under `claims` (asked for again: the token obtained with them did not do)."""
        wanted = self.scopes(scopes)
        memory = self.claims
        remembered = memory.get(identity, wanted) if memory is not None else None
        refused = {self.cache_key(wanted, identity=identity, claims=remembered)}
        if claims is not None:
            refused.add(self.cache_key(wanted, identity=identity, claims=claims))
        if memory is not None:
            memory.put(identity, wanted, claims)
        return self._evict(refused)

    async def _evict(self, keys: set[str]) -> None:
        for key in keys:
            await self.cache.invalidate(key)

    async def invalidate(
        self, scopes: Sequence[str], *, identity: Identity | None = None, claims: str | None = None
    ) -> None:
        """Forget the cached token (the downstream answered with a claims challenge)."""
        await self.cache.invalidate(self.cache_key(scopes, identity=identity, claims=claims))

    async def start(self, *, scope: str | None = None) -> None:
        """Prove the configuration: the home tenant's metadata (host, tenant, TLS) and one
        client-credentials token for `scope` (default `<client_id>/.default`)."""
        tenant = self.client.tenant
        if tenant.lower() == "organizations":
            raise ConfigurationError(
                "start() proves the credential in the app's home tenant: tenant "
                "(AZURE_TENANT_ID) 'organizations' names none; give the home tenant's GUID"
            )
        wanted = scope_tuple([scope or f"{self.client.client_id}/.default"], "scope")
        await self._runner.acquire(tenant, CLIENT_CREDENTIALS.request(None, wanted, None))

    async def close(self) -> None:
        """Close the MSAL runner, and the cache if it was built here (over `store=`, or the
        in-process default); a cache or store passed in is the caller's to close."""
        if self._owns_cache:
            await self.cache.close()
        await self._runner.close()

    async def __aenter__(self) -> Exchanger:
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
