"""Fixtures for the exchange tests: a real Redis, a private key namespace per test, stores."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import jwt
import pytest
import pytest_asyncio
import redis

from grpc_obo import (
    CachedToken,
    ClientCredential,
    ConfidentialClient,
    Identity,
    RedisTokenStore,
    RetryPolicy,
    SecretToken,
    TokenCache,
    TokenSealer,
    TokenValidator,
    ValidatorOptions,
)
from grpc_obo._exchange._exchanger import Exchanger
from grpc_obo._exchange._keys import obo_cache_key
from grpc_obo._exchange._observe import Observer
from grpc_obo.devauthority import DevAuthority
from tests.exchangers import on_behalf_of
from tests.outcomes import Outcomes
from tests.redis_server import redis_server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client to inspect what the store wrote, as an attacker with a dump would."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def redis_namespace(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix owned by one test; everything under it is deleted afterwards."""
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    yield namespace
    keys = list(redis_client.scan_iter(match=f"{namespace}:*"))
    if keys:
        redis_client.delete(*keys)


class Minted:
    """Fake downstream tokens shaped like JWTs; every one is remembered for the leak checks."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def token(self, label: str = "") -> str:
        import base64
        import json

        payload = json.dumps({"sub": label, "jti": uuid.uuid4().hex, "pad": "x" * 900})
        segment = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
        token = f"eyJhbGciOiJSUzI1NiJ9.{segment}.{uuid.uuid4().hex}{uuid.uuid4().hex}"
        self.tokens.append(token)
        return token

    def secrets(self) -> list[str]:
        """Each token and its payload segment: neither may show up anywhere readable."""
        return [part for token in self.tokens for part in (token, token.split(".")[1])]


@pytest.fixture
def minted(caplog: pytest.LogCaptureFixture) -> Iterator[Minted]:
    """Mint tokens; after the test, no log record at any level may contain one of them."""
    caplog.set_level(logging.DEBUG)
    registry = Minted()
    yield registry
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in registry.secrets():
        assert secret not in text, "a minted token reached a log record"


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# -- the dev authority, real MSAL: fixtures for the exchanger tests ---------------------------

FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, budget=3.0)
"""Retries that keep the suite fast: three attempts, tens of milliseconds apart."""


@pytest.fixture
def authority(grpc_obo_authority: DevAuthority) -> DevAuthority:
    return grpc_obo_authority


@pytest.fixture
def downstream_scope(authority: DevAuthority) -> str:
    return f"{authority.world.app('downstream').app_id_uri}/Data.Read"


def client_for(
    authority: DevAuthority,
    credential: ClientCredential | list[ClientCredential] | None = None,
    **options: Any,
) -> ConfidentialClient:
    """The Original API's confidential client (by default its client secret)."""
    original = authority.world.app("original")
    return ConfidentialClient(
        client_id=original.client_id,
        tenant=authority.tenant_id,
        credential=credential or ClientCredential.secret(original.secrets[0]),
        authority_host=authority.base_url,
        ca_file=str(authority.ca_file),
        **options,
    )


@pytest_asyncio.fixture(scope="session")
async def original_validator(
    grpc_obo_authority_session: DevAuthority,
) -> AsyncIterator[TokenValidator]:
    """How the Original API validates its callers' tokens (both tenants of the demo world)."""
    authority = grpc_obo_authority_session
    original = authority.world.app("original")
    options = ValidatorOptions(
        tenant="organizations",
        allowed_tenants=frozenset(t.id for t in authority.world.tenants),
        audiences=frozenset({original.client_id, str(original.app_id_uri)}),
        authority_host=authority.base_url,
        v1_issuer_host=authority.base_url,
        ssl_context=authority.client_ssl_context(),
    )
    async with TokenValidator(options) as validator:
        yield validator


class Users:
    """Signed-in users as the Original API sees them: tokens minted, then validated for real.

    Every token minted here or returned by an exchanger is remembered for the leak checks.
    """

    def __init__(self, authority: DevAuthority, validator: TokenValidator) -> None:
        self.authority = authority
        self.validator = validator
        self.secrets: list[str] = []

    def token(self, user: str = "alice", **options: Any) -> str:
        options.setdefault("scopes", ["access_as_user"])
        token = self.authority.mint_user_token(
            user, audience="original", client="client", **options
        )
        self.remember(token)
        return token

    async def identity(self, user: str = "alice", **options: Any) -> Identity:
        return await self.validator.validate(self.token(user, **options))

    def remember(self, token: str) -> str:
        self.secrets.extend((token, token.split(".")[1], token.split(".")[2]))
        return token


@pytest.fixture
def users(authority: DevAuthority, original_validator: TokenValidator) -> Users:
    return Users(authority, original_validator)


@pytest.fixture
async def make_exchanger(
    authority: DevAuthority,
) -> AsyncIterator[Callable[..., Exchanger]]:
    """`make(client=None, *, retry=FAST_RETRY, cache=None, observer=None)`: an On-Behalf-Of
    exchanger core, closed after the test (`observer=Counted()` counts its exchanges)."""
    made: list[tuple[Exchanger, TokenCache | None]] = []

    def make(
        client: ConfidentialClient | None = None,
        *,
        retry: RetryPolicy = FAST_RETRY,
        cache: TokenCache | None = None,
        observer: Observer | None = None,
    ) -> Exchanger:
        exchanger = on_behalf_of(
            client or client_for(authority), retry=retry, cache=cache, observer=observer
        )
        made.append((exchanger, cache))
        return exchanger

    yield make
    for exchanger, cache in made:
        await exchanger.close()
        if cache is not None:  # passed in: the test's to close, and its store too
            await cache.close()
            await cache.store.close()


def verified_claims(authority: DevAuthority, token: str, *, audience: str) -> dict[str, Any]:
    """Decode `token` after checking its signature against the authority's published keys."""
    kid = jwt.get_unverified_header(token)["kid"]
    keys = jwt.PyJWKSet.from_dict(authority.jwks())
    key = next(k for k in keys.keys if k.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["RS256"], audience=audience, options={"verify_iss": False}
    )
    return claims


# -- shared stores on the session's Redis: replicas in one event loop ------------------------

SEALING_KEY = bytes(range(32))


@pytest.fixture
async def redis_stores(
    redis_url: str, redis_namespace: str
) -> AsyncIterator[Callable[..., RedisTokenStore]]:
    """`make(url=None, *, key=SEALING_KEY, **options)`: a store ("a replica"), closed after."""
    opened: list[RedisTokenStore] = []

    def make(
        url: str | None = None, *, key: bytes = SEALING_KEY, **options: Any
    ) -> RedisTokenStore:
        options.setdefault("namespace", redis_namespace)
        # Generous: a loaded test machine must not trip the breaker where no test means to.
        options.setdefault("timeout", 5.0)
        observer = options.setdefault("observer", Outcomes())
        store = RedisTokenStore.from_url(url or redis_url, sealer=TokenSealer(key), **options)
        opened.append(track(store, observer))
        return store

    yield make
    for store in opened:
        await store.close()


_OUTCOMES: weakref.WeakKeyDictionary[RedisTokenStore, Outcomes] = weakref.WeakKeyDictionary()


def track(store: RedisTokenStore, observer: Outcomes) -> RedisTokenStore:
    """Remember that `observer` is `store`'s, for `outcomes(store)`."""
    _OUTCOMES[store] = observer
    return store


def outcomes(store: object) -> Outcomes:
    """What a store made by `redis_stores` (or a `TokenCache` over one) did on its misses."""
    if isinstance(store, TokenCache):
        store = store.store
    assert isinstance(store, RedisTokenStore)
    return _OUTCOMES[store]


def cache_key_for(label: str) -> str:
    """A real On-Behalf-Of cache key (a SHA-256 digest) for a made-up user."""
    return obo_cache_key(
        assertion=SecretToken(f"assertion-of-{label}"),
        client_id="client",
        authority="https://authority.test/tenant",
        scopes=["api://downstream/.default"],
    )


class Exchanges:
    """A fetch that counts its calls, takes `delay` seconds and labels tokens with `label`."""

    def __init__(
        self,
        minted: Minted,
        label: str = "",
        *,
        delay: float = 0.0,
        lifetime: float = 3600,
        refresh_after: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.minted, self.label, self.delay = minted, label, delay
        self.clock = clock
        self.lifetime = lifetime
        self.refresh_after = refresh_after if refresh_after is not None else lifetime / 2
        self.calls = 0
        self.fail_with: BaseException | None = None
        self.issued: list[str] = []

    async def __call__(self) -> CachedToken:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail_with is not None:
            raise self.fail_with
        token = self.minted.token(self.label)
        self.issued.append(token)
        now = self.clock()
        return CachedToken(
            access_token=SecretToken(token),
            expires_on=now + self.lifetime,
            refresh_on=now + self.refresh_after,
        )


async def eventually(condition: Callable[[], bool], *, within: float = 2.0) -> None:
    """Wait (polling every 10 ms) until `condition()` holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
