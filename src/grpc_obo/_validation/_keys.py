"""Signing keys: the two key sources (static document, discovery + JWKS).

The remote source fetches `{authority}/{tenant}/v2.0/.well-known/openid-configuration` once for
its `jwks_uri` (again only after a JWKS fetch fails), then the JWKS, over https only and without
following redirects. Its refresh rules follow Entra's signing-key-rollover guidance:

* a scheduled refresh at most `key_refresh_interval` apart (daily by default), started in the
  background by any validation (cache hits included) so no request waits for it;
* until a key set was loaded once, a failed fetch is retried after a short backoff
  (`key_fetch_backoff_initial`, 1 s, doubling up to `key_fetch_backoff_max`, 30 s): a replica
  whose authority blipped while it started recovers within a second or two; callers in between
  get UNAVAILABLE without a request; `start()` always tries at once;
* one fetch in flight at a time, shared by every caller; a caller that waited for a fetch (the
  first one, or one in flight) never starts another, since nothing newer could come of it: the
  first token naming an unknown key costs one fetch, not two;
* a refresh when a token names an unknown key, from two budgets: one fetch per
  `unknown_kid_refresh_interval` (300 s) for any unknown key, counted between such refreshes (so
  a key published right after start-up is picked up at once), and one per
  `new_kid_refresh_interval` (30 s) kept for key names never looked up. A bounded memory of
  names looked up after a good fetch and not found keeps a repeated junk `kid` on the long
  budget. So one junk token cannot hold back a freshly rolled key (its first token spends the
  short budget), a flood of random `kid`s costs at most one fetch per 30 s plus one per 300 s
  (not one per token), and a rolled key waits at most 30 s even under such a flood;
* a failed or empty fetch never replaces the last good key set, which keeps serving; while the
  authority is down, attempts are spaced by `unknown_kid_refresh_interval` too.

JWKS parsing is `_jwks.py`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from grpc_obo._common import LRU
from grpc_obo._errors import KeySourceUnavailableError, UnknownKeyError
from grpc_obo._validation._jose import loads_strict
from grpc_obo._validation._jwks import KeySet, SigningKey, parse_jwks
from grpc_obo._validation._options import ValidatorOptions
from grpc_obo._validation._urls import check_fetch_url

if TYPE_CHECKING:
    import aiohttp

__all__ = ["KeySource", "RemoteKeySource", "StaticKeySource"]

logger = logging.getLogger("grpc_obo.validation")

MAX_DOCUMENT_BYTES = 1024 * 1024
_MAX_MISSING_NAMES = 1024  # names looked up and not found (kids <= 256 chars: < 1 MB)


class KeySource:
    """Where a validator gets signing keys. Subclasses: static or remote."""

    async def start(self) -> None:
        """Make sure keys are loaded (raise `KeySourceUnavailableError` when none can be)."""

    async def get_key(self, kid: str | None, x5t: str | None) -> SigningKey:
        """The key a token names, or `UnknownKeyError` / `KeySourceUnavailableError`."""
        raise NotImplementedError

    def has_key(self, fingerprint: str) -> bool:
        """Whether key material is still in the current set (verified-token cache check)."""
        raise NotImplementedError

    def known_key(self, kid: str | None, x5t: str | None) -> SigningKey | None:
        """The key a token names if the current set has it, without I/O; None: `get_key`.

        Spares a coroutine on the path of every never-seen token (the common case: keys are
        loaded and the token names one of them)."""
        return None

    def poll(self) -> None:
        """Start a due scheduled refresh in the background; never blocks, never raises.

        Called on every validation, cache hits included, so an API whose traffic is all
        cached tokens still notices keys that were withdrawn.
        """

    async def close(self) -> None:
        """Release network resources."""


class StaticKeySource(KeySource):
    """A fixed JWKS: no network, no refresh."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._keys = parse_jwks(document)

    async def get_key(self, kid: str | None, x5t: str | None) -> SigningKey:
        key = self._keys.find(kid, x5t)
        if key is None:
            raise UnknownKeyError("token is signed with an unknown key")
        return key

    def has_key(self, fingerprint: str) -> bool:
        return fingerprint in self._keys.fingerprints

    def known_key(self, kid: str | None, x5t: str | None) -> SigningKey | None:
        return self._keys.find(kid, x5t)


class KeyFetchObserver(Protocol):
    """Hooks for observing key fetches (no OpenTelemetry here: telemetry's recorder is one).

    The context manager sees the fetch's exception, if any; the URL is public.
    """

    def key_fetch(self, url: str) -> AbstractContextManager[object]: ...


class _NoObserver:
    def key_fetch(self, url: str) -> AbstractContextManager[object]:
        return contextlib.nullcontext()


_NO_OBSERVER = _NoObserver()


class _FetchError(Exception):
    """A discovery or JWKS fetch failed; the message holds no secrets (URLs are public).

    `reason` is a bounded name for telemetry (`error.type`): the message is never exported.
    """

    def __init__(self, message: str, reason: str, url: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.url = url


class RemoteKeySource(KeySource):
    """OIDC discovery + JWKS over https, with the refresh rules in the module docstring."""

    def __init__(
        self, options: ValidatorOptions, *, observer: KeyFetchObserver | None = None
    ) -> None:
        self._options = options
        self._clock = options.clock
        self._keys: KeySet | None = None
        self._jwks_uri: str | None = None
        self._fetched_at = 0.0  # last successful fetch
        self._attempted_at: float | None = None  # last fetch attempt, successful or not
        self._unknown_kid_at: float | None = None  # last refresh on the long unknown-kid budget
        self._new_kid_at: float | None = None  # last refresh on the short never-seen-kid budget
        self._missing: LRU[str, bool] = LRU(_MAX_MISSING_NAMES)  # looked up after a good fetch
        self._cold_failures = 0  # failed attempts in a row while no key set was ever loaded
        self._last_failure: tuple[str, str] | None = None  # (url, what happened): for errors
        self._cold_failed_at: float | None = None
        self._refresh: asyncio.Task[bool] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        # Told about each discovery/JWKS fetch (spans and metrics, which tests count too).
        self._observer: KeyFetchObserver = observer if observer is not None else _NO_OBSERVER

    # -- refresh decisions -------------------------------------------------------------------

    def _since(self, moment: float | None) -> float:
        return float("inf") if moment is None else self._clock() - moment

    def _in_flight(self) -> bool:
        return self._refresh is not None and not self._refresh.done()

    def _scheduled_refresh_due(self) -> bool:
        if self._clock() - self._fetched_at < self._options.key_refresh_interval:
            return False
        # NOTE: while the authority is down, retry no more often than the unknown-kid interval
        # instead of on every request.
        return self._since(self._attempted_at) >= self._options.unknown_kid_refresh_interval

    def _failed_recently(self) -> bool:
        # NOTE: the last attempt (whatever caused it) failed less than an interval ago: an
        # unknown kid must not send the down authority another request right after it.
        return (
            self._attempted_at is not None
            and self._fetched_at < self._attempted_at
            and self._since(self._attempted_at) < self._options.unknown_kid_refresh_interval
        )

    def _cold_retry_due(self) -> bool:
        """No key set yet: whether the backoff since the last failed attempt has passed."""
        if self._cold_failed_at is None:
            return True
        options = self._options
        doublings = min(self._cold_failures - 1, 32)  # bounded: 2**n of a large n overflows
        delay = min(
            options.key_fetch_backoff_initial * 2.0**doublings, options.key_fetch_backoff_max
        )
        return self._since(self._cold_failed_at) >= delay

    def _take_refresh_budget(self, name: str) -> bool:
        """Whether a token naming the unknown key `name` may cause a fetch now (spends a budget)."""
        if self._failed_recently():
            return False
        options = self._options
        if self._since(self._unknown_kid_at) >= options.unknown_kid_refresh_interval:
            self._unknown_kid_at = self._clock()
            return True
        # NOTE: the short budget only for names never looked up: a junk `kid` replayed by one
        # client (or tokens from another authority) stays on the long budget, while the first
        # token of a freshly rolled key finds this budget unspent unless a flood of ever-new
        # names is under way, and then waits for it at most `new_kid_refresh_interval`.
        if (
            name not in self._missing
            and self._since(self._new_kid_at) >= options.new_kid_refresh_interval
        ):
            self._new_kid_at = self._clock()
            return True
        return False

    def _remember_missing(self, name: str) -> None:
        self._missing.put(name, True)

    def _refresh_once(self) -> asyncio.Task[bool]:
        """The refresh in flight, or a new one: the single flight every caller shares."""
        if self._refresh is None or self._refresh.done():
            self._attempted_at = self._clock()
            self._refresh = asyncio.get_running_loop().create_task(self._do_refresh())
        return self._refresh

    async def _await_refresh(self) -> bool:
        """Wait for the shared refresh; whether it installed a key set."""
        # shield: a caller whose RPC is cancelled must not cancel the fetch others wait on.
        return await asyncio.shield(self._refresh_once())

    # -- public ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._keys is None:
            await self._await_refresh()
        if self._keys is None:
            raise self._unavailable()

    def _unavailable(self) -> KeySourceUnavailableError:
        url, detail = self._last_failure or (self._options.discovery_url, "not fetched yet")
        return KeySourceUnavailableError(url=url, detail=detail)

    async def get_key(self, kid: str | None, x5t: str | None) -> SigningKey:
        if self._closed:
            raise KeySourceUnavailableError("the validator is closed")
        waited: bool | None = None  # whether a fetch this caller waited for succeeded
        if self._keys is None:
            # Never fetched successfully: callers join the fetch in flight, or start one once
            # the backoff since the last failure has passed.
            if self._in_flight() or self._cold_retry_due():
                waited = await self._await_refresh()
            if self._keys is None:
                raise self._unavailable()
        else:
            self.poll()
        key = self._keys.find(kid, x5t)
        if key is not None:
            return key
        name = f"kid:{kid}" if kid is not None else f"x5t:{x5t}"
        if waited is None:
            if self._in_flight() or self._take_refresh_budget(name):
                waited = await self._await_refresh()
            key = self._keys.find(kid, x5t)
            if key is not None:
                return key
        if waited:
            self._remember_missing(name)
        raise UnknownKeyError("token is signed with an unknown key")

    def has_key(self, fingerprint: str) -> bool:
        return self._keys is not None and fingerprint in self._keys.fingerprints

    def known_key(self, kid: str | None, x5t: str | None) -> SigningKey | None:
        # The validator polled for a due refresh already (on its cache lookup).
        keys = self._keys
        return None if keys is None or self._closed else keys.find(kid, x5t)

    def poll(self) -> None:
        if self._keys is not None and not self._closed and self._scheduled_refresh_due():
            self._refresh_once()  # background: the caller goes on with the current keys

    async def close(self) -> None:
        self._closed = True
        task, self._refresh = self._refresh, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- fetching ----------------------------------------------------------------------------

    async def _do_refresh(self) -> bool:
        """Fetch and install a new key set; never raises (the last good set stays on failure)."""
        try:
            if self._jwks_uri is None:
                self._jwks_uri = await self._discover()
            try:
                document = await self._get_json(self._jwks_uri)
            except _FetchError:
                # The jwks_uri may have moved: discover again next time.
                self._jwks_uri = None
                raise
            keys = parse_jwks(document)
            if not keys.keys:
                raise _FetchError(
                    f"{self._jwks_uri} has no usable signing key", "no_usable_key", self._jwks_uri
                )
        except Exception as exc:
            # _FetchError texts name only public URLs and statuses; for anything else the class
            # name is enough (and cannot leak a response body into the log).
            why = str(exc) if isinstance(exc, _FetchError) else type(exc).__name__
            url = exc.url if isinstance(exc, _FetchError) else self._options.discovery_url
            self._last_failure = (url, why.removeprefix(f"{url} ").strip())
            have = "keeping the last good key set" if self._keys else "no keys yet"
            logger.warning("signing key refresh failed (%s); %s", why, have)
            if self._keys is None:
                self._cold_failures += 1
                self._cold_failed_at = self._clock()
            return False
        self._keys = keys
        self._fetched_at = self._clock()
        self._cold_failures = 0
        logger.info("signing keys refreshed: %d keys", len(keys.keys))
        return True

    async def _discover(self) -> str:
        document = await self._get_json(self._options.discovery_url)
        jwks_uri = document.get("jwks_uri") if isinstance(document, Mapping) else None
        if not isinstance(jwks_uri, str):
            raise _FetchError(
                "discovery document has no jwks_uri", "no_jwks_uri", self._options.discovery_url
            )
        problem = check_fetch_url(jwks_uri, allow_loopback_http=self._options.allow_loopback_http)
        if problem:
            raise _FetchError(f"jwks_uri {problem}", "bad_jwks_uri", self._options.discovery_url)
        return jwks_uri

    def _client(self) -> aiohttp.ClientSession:
        import aiohttp  # imported lazily: static-JWKS users never load the HTTP stack

        if self._session is None:
            connector = aiohttp.TCPConnector(
                ssl=self._options.ssl_context if self._options.ssl_context is not None else True
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._options.http_timeout),
            )
        return self._session

    async def _get_json(self, url: str) -> Any:
        with self._observer.key_fetch(url):
            return await self._fetch_json(url)

    async def _fetch_json(self, url: str) -> Any:
        import aiohttp

        problem = check_fetch_url(url, allow_loopback_http=self._options.allow_loopback_http)
        if problem:
            raise _FetchError(f"{url} {problem}", "bad_url", url)
        try:
            # No redirects: a redirect could leave https or the configured authority.
            async with self._client().get(
                url, allow_redirects=False, headers={"Accept": "application/json"}
            ) as response:
                if response.status != 200:
                    raise _FetchError(f"{url} answered HTTP {response.status}", "http_status", url)
                body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _FetchError(
                f"{url} failed: {type(exc).__name__}",
                "timeout" if isinstance(exc, TimeoutError) else "network",
                url,
            ) from None
        if len(body) > MAX_DOCUMENT_BYTES:
            raise _FetchError(
                f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes", "too_large", url
            )
        try:
            return loads_strict(body)
        except ValueError:
            raise _FetchError(f"{url} did not answer JSON", "not_json", url) from None
