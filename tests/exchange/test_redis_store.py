"""The Redis store on a real Redis: shared across replicas, and a dump reveals no token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis

from grpc_obo import SecretToken
from grpc_obo._exchange import CachedToken, RedisTokenStore, TokenCache, TokenSealer
from grpc_obo._exchange._keys import obo_cache_key

from .conftest import Minted

pytestmark = pytest.mark.redis

KEY = bytes(range(32))


def cache_key(n: int) -> str:
    return obo_cache_key(
        assertion=SecretToken(f"user-assertion-{n}"),
        client_id="client",
        authority="https://authority.test/tenant",
        scopes=["api://downstream/.default"],
    )


def fresh(minted: Minted, label: str = "") -> CachedToken:
    now = time.time()
    return CachedToken(
        access_token=SecretToken(minted.token(label)), expires_on=now + 3600, refresh_on=now + 1800
    )


StoreFactory = Callable[..., RedisTokenStore]


@pytest.fixture
async def make_store(redis_url: str, redis_namespace: str) -> AsyncIterator[StoreFactory]:
    opened: list[RedisTokenStore] = []

    def factory(key: bytes = KEY, **options: object) -> RedisTokenStore:
        options.setdefault("namespace", redis_namespace)
        store = RedisTokenStore.from_url(redis_url, sealer=TokenSealer(key), **options)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


async def test_round_trip_with_ttl_from_the_caller(
    make_store: StoreFactory, redis_client: redis.Redis, redis_namespace: str, minted: Minted
) -> None:
    store = make_store()
    token = fresh(minted)
    await store.set(cache_key(1), token, ttl=120.5)
    assert await store.get(cache_key(1)) == token
    assert await make_store().get(cache_key(1)) == token  # another replica: from Redis
    ttl_ms = redis_client.pttl(store.redis_keys(cache_key(1))[0])
    assert 119_000 < ttl_ms <= 120_500


async def test_async_with_closes_the_store(
    redis_url: str, redis_namespace: str, redis_client: redis.Redis, minted: Minted
) -> None:
    """A store passed to a cache is the caller's to close: `async with` closes it (its
    subscription and its connections to Redis) when the block ends."""
    before = len(redis_client.client_list())
    store = RedisTokenStore.from_url(redis_url, sealer=TokenSealer(KEY), namespace=redis_namespace)
    async with store as entered:
        assert entered is store
        await store.set(cache_key(1), fresh(minted), ttl=60)
        assert store.notifications_live
        assert len(redis_client.client_list()) > before
    assert not store.notifications_live
    assert len(redis_client.client_list()) == before


async def test_a_redis_dump_contains_no_token(
    make_store: StoreFactory, redis_client: redis.Redis, minted: Minted
) -> None:
    store = make_store()
    for n in range(20):
        await store.set(cache_key(n), fresh(minted, f"user{n}"), ttl=300)
    dump = b""
    for raw_key in redis_client.scan_iter(count=1000):
        dump += raw_key + b"\n" + (redis_client.get(raw_key) or b"") + b"\n"
    assert dump.count(b"grpc_obo:obo:v1:") >= 20
    for secret in minted.secrets():
        assert secret.encode() not in dump
    for n in range(20):
        assert f"user-assertion-{n}".encode() not in dump


async def test_two_replicas_share_a_token(minted: Minted, make_store: StoreFactory) -> None:
    fetches = 0

    async def fetch() -> CachedToken:
        nonlocal fetches
        fetches += 1
        return fresh(minted)

    replica_a = TokenCache(store=make_store())
    replica_b = TokenCache(store=make_store())
    first = await replica_a.get_or_fetch(cache_key(1), fetch)
    second = await replica_b.get_or_fetch(cache_key(1), fetch)
    assert fetches == 1
    assert second == first


async def test_tampered_value_is_a_logged_miss(
    make_store: StoreFactory,
    redis_client: redis.Redis,
    redis_namespace: str,
    minted: Minted,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await make_store().set(cache_key(1), fresh(minted), ttl=300)
    store = make_store()
    redis_key = store.redis_keys(cache_key(1))[0]
    blob = bytearray(redis_client.get(redis_key) or b"")
    blob[-1] ^= 0x01
    redis_client.set(redis_key, bytes(blob))
    assert await store.get(cache_key(1)) is None
    assert "did not open" in caplog.text


async def test_value_moved_to_another_key_is_a_miss(
    make_store: StoreFactory, redis_client: redis.Redis, redis_namespace: str, minted: Minted
) -> None:
    await make_store().set(cache_key(1), fresh(minted), ttl=300)
    store = make_store()
    first, second = store.redis_keys(cache_key(1))[0], store.redis_keys(cache_key(2))[0]
    redis_client.copy(first, second)
    assert await store.get(cache_key(2)) is None
    assert await store.get(cache_key(1)) is not None


async def test_value_sealed_with_another_key_is_a_miss(
    make_store: StoreFactory, minted: Minted
) -> None:
    await make_store(key=KEY).set(cache_key(1), fresh(minted), ttl=300)
    assert await make_store(key=bytes(32)).get(cache_key(1)) is None


async def test_unreachable_redis_degrades_to_fetching(minted: Minted) -> None:
    store = RedisTokenStore(sealer=TokenSealer(KEY), port=1, timeout=0.5)
    cache = TokenCache(store=store)
    token = fresh(minted)

    async def fetch() -> CachedToken:
        return token

    try:
        assert await cache.get_or_fetch(cache_key(1), fetch) == token
    finally:
        await cache.close()
        await store.close()  # passed in: the cache leaves it open


async def test_a_burst_on_redis_makes_one_fetch_and_no_pool_errors(
    minted: Minted, make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # More concurrent callers than pool connections: redis-py 8's default pool would raise.
    cache = TokenCache(store=make_store(pool_max_size=10))
    fetches = 0

    async def fetch() -> CachedToken:
        nonlocal fetches
        fetches += 1
        await asyncio.sleep(0.005)
        return fresh(minted)

    same = await asyncio.gather(*(cache.get_or_fetch(cache_key(1), fetch) for _ in range(1_000)))
    assert fetches == 1
    assert len({t.access_token.reveal() for t in same}) == 1
    distinct = await asyncio.gather(
        *(cache.get_or_fetch(cache_key(n), fetch) for n in range(2, 302))
    )
    assert fetches == 301
    assert len({t.access_token.reveal() for t in distinct}) == 300
    assert "failed" not in caplog.text
