"""`OnBehalfOf` and `AppOnly` take the same parameters: `cache=` (a `TokenCache`) or `store=` (a
store, wrapped in a cache once, here), so replicas share app-only tokens through Redis as they
share On-Behalf-Of tokens. A store given where a cache belongs is a clear error at construction,
not a crash at the first call."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis

import grpc_obo
from examples.settings import Settings
from grpc_obo._exchange._token import CachedToken
from grpc_obo.devauthority import DevAuthority
from tests.exchangers import Metered
from tests.redis_server import redis_server
from tests.waiting import eventually

FAST = grpc_obo.RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05, budget=5.0)
KINDS = [grpc_obo.OnBehalfOf, grpc_obo.AppOnly]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def client(grpc_obo_authority: DevAuthority) -> grpc_obo.ConfidentialClient:
    return Settings(grpc_obo_authority.summary()).confidential_client("original")


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[Callable[[], grpc_obo.RedisTokenStore]]:
    """`make()`: a Redis store ("a replica"), all in one namespace, closed and wiped after."""
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    key = grpc_obo.TokenSealer.generate_key()
    made: list[grpc_obo.RedisTokenStore] = []

    def make() -> grpc_obo.RedisTokenStore:
        made.append(
            grpc_obo.RedisTokenStore.from_url(
                redis_url, sealer=grpc_obo.TokenSealer(key), namespace=namespace, timeout=5.0
            )
        )
        return made[-1]

    yield make
    for store in made:
        await store.close()
    plain = redis.Redis.from_url(redis_url)
    keys = list(plain.scan_iter(match=f"{namespace}:*"))
    if keys:
        plain.delete(*keys)
    plain.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_store_given_directly_is_the_caches_store(
    kind: type[grpc_obo.OnBehalfOf | grpc_obo.AppOnly],
    client: grpc_obo.ConfidentialClient,
) -> None:
    store = grpc_obo.MemoryTokenStore(max_entries=10)
    async with kind(client, store=store) as made:
        assert made.cache.store is store  # wrapped once, by the constructor


@pytest.mark.parametrize("kind", KINDS)
async def test_a_cache_given_is_used_as_it_is(
    kind: type[grpc_obo.OnBehalfOf | grpc_obo.AppOnly],
    client: grpc_obo.ConfidentialClient,
) -> None:
    cache = grpc_obo.TokenCache(margin=60)
    async with kind(client, cache=cache) as made:
        assert made.cache is cache


@pytest.mark.parametrize("kind", KINDS)
async def test_a_store_where_a_cache_belongs_is_a_clear_error(
    kind: type[grpc_obo.OnBehalfOf | grpc_obo.AppOnly],
    client: grpc_obo.ConfidentialClient,
    stores: Callable[[], grpc_obo.RedisTokenStore],
) -> None:
    store = stores()
    with pytest.raises(grpc_obo.ConfigurationError, match="store="):
        kind(client, cache=store)  # type: ignore[arg-type]
    with pytest.raises(grpc_obo.ConfigurationError, match="not both"):
        kind(client, cache=grpc_obo.TokenCache(store=store), store=store)
    with pytest.raises(grpc_obo.ConfigurationError, match="cache="):
        kind(client, store=grpc_obo.TokenCache())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "scopes",
    [["api://x/Data.Read"], ["api://x/.default", "api://y/.default"], "api://x/.default", []],
)
def test_app_only_interceptors_take_one_default_scope_checked_at_construction(
    client: grpc_obo.ConfidentialClient, scopes: list[str]
) -> None:
    app = grpc_obo.AppOnly(client)
    with pytest.raises(grpc_obo.ConfigurationError):
        app.client_interceptors(scopes=scopes)
    with pytest.raises(grpc_obo.ConfigurationError):
        app.client_interceptors(scopes=["api://x/.default"], method_scopes={"pkg.Svc": scopes})


@pytest.mark.redis
async def test_app_only_replicas_share_one_token_through_redis(
    grpc_obo_authority: DevAuthority,
    client: grpc_obo.ConfidentialClient,
    stores: Callable[[], grpc_obo.RedisTokenStore],
) -> None:
    scope = f"{grpc_obo_authority.world.app('downstream').app_id_uri}/.default"
    async with (
        grpc_obo.AppOnly(client, retry=FAST, store=stores()) as first,
        grpc_obo.AppOnly(client, retry=FAST, cache=grpc_obo.TokenCache(store=stores())) as second,
    ):
        token = await first.acquire([scope])
        assert await second.acquire([scope]) == token
    assert grpc_obo_authority.requests.count(grant="client_credentials") == 1


async def test_exchanges_are_observable_through_telemetry_not_a_counter(
    grpc_obo_authority: DevAuthority, client: grpc_obo.ConfidentialClient
) -> None:
    """What tests (and operators) count is what the metrics say: no runtime class keeps a
    counter for tests (`exchanges` is gone)."""
    metered = Metered()
    scope = f"{grpc_obo_authority.world.app('downstream').app_id_uri}/.default"
    async with grpc_obo.AppOnly(client, retry=FAST, telemetry=metered.telemetry()) as app:
        for _ in range(3):
            await app.acquire([scope])
    assert metered.exchanges == 1 == grpc_obo_authority.requests.count(grant="client_credentials")
    assert not hasattr(app, "exchanges")


@pytest.mark.redis
async def test_one_store_given_to_both_stays_open_until_its_owner_closes_it(
    grpc_obo_authority: DevAuthority,
    client: grpc_obo.ConfidentialClient,
    stores: Callable[[], grpc_obo.RedisTokenStore],
) -> None:
    """A store passed in is the caller's: closing the `OnBehalfOf` that shares it with an
    `AppOnly` leaves it open, and the `AppOnly` still hears another replica's evictions."""
    scope = f"{grpc_obo_authority.world.app('downstream').app_id_uri}/.default"
    shared, elsewhere = stores(), stores()
    obo = grpc_obo.OnBehalfOf(client, retry=FAST, store=shared)
    async with (
        grpc_obo.AppOnly(client, retry=FAST, store=shared) as app,
        grpc_obo.AppOnly(client, retry=FAST, store=elsewhere) as other,
    ):
        await app.acquire([scope])
        key = app._exchanger.cache_key([scope])
        await eventually(lambda: shared.notifications_live)
        await obo.close()
        assert shared.notifications_live  # still listening: not closed by obo
        assert app.cache.peek(key) is not None
        await other.cache.invalidate(key)  # another replica evicts: every replica hears it
        await eventually(lambda: app.cache.peek(key) is None)
    assert shared.notifications_live  # nor by app: the test built it, the test closes it
    await shared.close()
    assert not shared.notifications_live


@pytest.mark.parametrize("kind", KINDS)
async def test_a_cache_given_is_left_open_on_close(
    kind: type[grpc_obo.OnBehalfOf | grpc_obo.AppOnly],
    client: grpc_obo.ConfidentialClient,
) -> None:
    cache = grpc_obo.TokenCache()
    async with kind(client, cache=cache):
        pass
    now = time.time()
    token = CachedToken(
        access_token=grpc_obo.SecretToken("t"), expires_on=now + 3600, refresh_on=now + 1800
    )

    async def fetch() -> CachedToken:
        return token

    assert await cache.get_or_fetch("k", fetch) is token  # still open: the caller's to close
    await cache.close()
