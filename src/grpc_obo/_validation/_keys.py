"""Signing keys: JWKS parsing, and the two key sources (static document, discovery + JWKS).

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

JWKS parsing is tolerant of real documents and strict about what becomes a key: RSA only, at
least 2048 bits, not `use: enc`. Accepted on purpose: `n`/`e` in padded or standard-alphabet
base64 (Microsoft's own test JWKS does this; the key came over TLS from the configured authority,
so this tolerance does not reach token parsing), unknown members, and a key `alg` that is not a
JWS algorithm name at all (Microsoft's legacy "SHA256"). A key whose `alg` names another JWS
algorithm (PS256, RS512, ...) is skipped, since we only ever verify RS256.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers

from grpc_obo._errors import KeySourceUnavailableError, UnknownKeyError
from grpc_obo._validation._jose import ALGORITHM, loads_strict
from grpc_obo._validation._options import ValidatorOptions, check_fetch_url

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "KeySet",
    "KeySource",
    "RemoteKeySource",
    "SigningKey",
    "StaticKeySource",
    "parse_jwks",
]

logger = logging.getLogger("grpc_obo.validation")

MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192  # bigger moduli only make each verify slower, which helps an attacker
MAX_DOCUMENT_BYTES = 1024 * 1024
_MAX_KEYS = 100
_MAX_MISSING_NAMES = 1024  # names looked up and not found (kids <= 256 chars: < 1 MB)

_JWS_ALGS = frozenset(
    {
        "none",
        *(f"{family}{bits}" for family in ("HS", "RS", "PS", "ES") for bits in (256, 384, 512)),
        "ES256K",
        "EdDSA",
        "Ed25519",
        "Ed448",
    }
)
_SIGNING_OPS = frozenset({"verify", "sign", "signing"})


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One usable RS256 verification key from a JWKS."""

    kid: str | None
    x5t: str | None
    public_key: RSAPublicKey = field(repr=False)
    issuer: str | None
    """The key's `issuer` template (Entra: `https://login.microsoftonline.com/{tenantid}/v2.0`)."""
    fingerprint: str
    """SHA-256 of the modulus and exponent: identifies the key material, not its name."""


@dataclass(frozen=True, slots=True)
class KeySet:
    """An immutable key set: replaced as a whole on refresh, so readers never see half of one."""

    keys: tuple[SigningKey, ...] = ()
    by_kid: Mapping[str, SigningKey] = field(default_factory=dict)
    by_x5t: Mapping[str, SigningKey] = field(default_factory=dict)
    fingerprints: frozenset[str] = frozenset()

    def find(self, kid: str | None, x5t: str | None) -> SigningKey | None:
        # `kid` decides when present; `x5t` is the fallback for old v1 tokens that carry only it.
        if kid is not None:
            return self.by_kid.get(kid)
        if x5t is not None:
            return self.by_x5t.get(x5t)
        return None


def _b64_int(value: object) -> int | None:
    if not isinstance(value, str) or not value or len(value) > 2 * MAX_RSA_BITS // 6:
        return None
    text = value.rstrip("=").replace("+", "-").replace("/", "_")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return int.from_bytes(raw, "big") if raw else None


def _parse_key(jwk: object) -> SigningKey | str:
    """A usable key, or the (loggable, key-free) reason this JWK is skipped."""
    if not isinstance(jwk, Mapping):
        return "not an object"
    if jwk.get("kty") != "RSA":
        return "not RSA"
    use = jwk.get("use")
    if use is not None and use != "sig":
        return "not a signing key (use)"
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or not _SIGNING_OPS.intersection(ops)):
        return "not a signing key (key_ops)"
    alg = jwk.get("alg")
    if alg is not None and alg != ALGORITHM and alg in _JWS_ALGS:
        return "for another algorithm"
    kid, x5t = jwk.get("kid"), jwk.get("x5t")
    if kid is not None and not isinstance(kid, str):
        return "non-string kid"
    if x5t is not None and not isinstance(x5t, str):
        return "non-string x5t"
    if kid is None and x5t is None:
        return "no kid or x5t"
    issuer = jwk.get("issuer")
    if issuer is not None and not isinstance(issuer, str):
        return "non-string issuer"
    n, e = _b64_int(jwk.get("n")), _b64_int(jwk.get("e"))
    if n is None or e is None:
        return "bad n/e"
    if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
        return "key size out of range"
    try:
        public_key = RSAPublicNumbers(e, n).public_key()
    except ValueError:
        return "invalid RSA numbers"
    digest = hashlib.sha256(f"{n:x}.{e:x}".encode("ascii")).hexdigest()
    return SigningKey(kid=kid, x5t=x5t, public_key=public_key, issuer=issuer, fingerprint=digest)


def parse_jwks(document: object) -> KeySet:
    """Every usable key in a JWKS document (possibly none). Never raises on odd content."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        logger.warning("JWKS document has no 'keys' list")
        return KeySet()
    keys: list[SigningKey] = []
    for jwk in document["keys"][:_MAX_KEYS]:
        parsed = _parse_key(jwk)
        if isinstance(parsed, str):
            name = jwk.get("kid") if isinstance(jwk, Mapping) else None
            name = name if isinstance(name, str) else None
            logger.debug("skipping JWKS key %r: %s", name, parsed)
        else:
            keys.append(parsed)
    by_kid: dict[str, SigningKey] = {}
    by_x5t: dict[str, SigningKey] = {}
    for key in keys:
        # First wins on a repeated name, so a later entry cannot shadow an earlier one.
        if key.kid is not None:
            by_kid.setdefault(key.kid, key)
        if key.x5t is not None:
            by_x5t.setdefault(key.x5t, key)
    return KeySet(
        keys=tuple(keys),
        by_kid=by_kid,
        by_x5t=by_x5t,
        fingerprints=frozenset(k.fingerprint for k in keys),
    )


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
    """Hooks for observing key fetches (no OpenTelemetry here: `grpc_obo.Telemetry` is one).

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

    def __init__(self, options: ValidatorOptions) -> None:
        self._options = options
        self._clock = options.clock
        self._keys: KeySet | None = None
        self._jwks_uri: str | None = None
        self._fetched_at = 0.0  # last successful fetch
        self._attempted_at: float | None = None  # last fetch attempt, successful or not
        self._unknown_kid_at: float | None = None  # last refresh on the long unknown-kid budget
        self._new_kid_at: float | None = None  # last refresh on the short never-seen-kid budget
        self._missing: OrderedDict[str, None] = OrderedDict()  # looked up after a good fetch
        self._cold_failures = 0  # failed attempts in a row while no key set was ever loaded
        self._last_failure: tuple[str, str] | None = None  # (url, what happened): for errors
        self._cold_failed_at: float | None = None
        self._refresh: asyncio.Task[bool] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.fetch_count = 0
        """JWKS fetches started (for tests and metrics)."""
        self.observer: KeyFetchObserver = _NO_OBSERVER
        """Told about each discovery/JWKS fetch; the server interceptor plugs telemetry in."""

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
        self._missing[name] = None
        self._missing.move_to_end(name)
        while len(self._missing) > _MAX_MISSING_NAMES:
            self._missing.popitem(last=False)

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
            self.fetch_count += 1
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
        with self.observer.key_fetch(url):
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
