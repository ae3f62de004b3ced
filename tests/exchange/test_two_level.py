"""The Redis store's in-process level (L1): the hot path stays a dict read, entries never
outlive the token's expiry minus the margin, and they are rechecked against Redis."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from grpc_obo import (
    CachedToken,
    ConfigurationError,
    MemoryTokenStore,
    RedisTokenStore,
    SecretToken,
    TokenCache,
    TokenSealer,
)
from grpc_obo._exchange._local import LocalTier
from tests.outcomes import Outcomes

from .conftest import SEALING_KEY, Exchanges, FakeClock, Minted, cache_key_for

pytestmark = pytest.mark.redis

Stores = Callable[..., RedisTokenStore]


def token_at(minted: Minted, clock: FakeClock, lifetime: float = 3600) -> CachedToken:
    return CachedToken(
        access_token=SecretToken(minted.token()),
        expires_on=clock.now + lifetime,
        refresh_on=clock.now + lifetime / 2,
    )


async def test_an_l1_hit_is_the_memory_stores_dict_read(
    redis_stores: Stores, minted: Minted, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = redis_stores()
    cache = TokenCache(store=store)
    key = cache_key_for("alice")
    token = await cache.get_or_fetch(key, Exchanges(minted, "alice"))
    # peek calls the L1's own method (no wrapper in between), like MemoryTokenStore's.
    assert cache._get_nowait is not None
    assert cache._get_nowait.__func__ is LocalTier.get_nowait  # type: ignore[attr-defined]
    assert TokenCache(store=MemoryTokenStore())._get_nowait is not None

    def no_redis(*args: object, **kwargs: object) -> None:
        raise AssertionError("Redis on an L1 hit")

    monkeypatch.setattr(store._client, "eval", no_redis)
    assert cache.peek(key) == token
    assert await cache.get_or_fetch(key, Exchanges(minted)) == token


async def test_l1_entries_end_at_expiry_minus_margin_even_while_redis_is_down(
    redis_stores: Stores, minted: Minted, clock: FakeClock
) -> None:
    # Nothing listens on port 1: Redis is down from the start.
    seen = Outcomes()
    store = RedisTokenStore(
        sealer=TokenSealer(SEALING_KEY), port=1, timeout=0.2, clock=clock, observer=seen
    )
    cache = TokenCache(store=store, margin=300, clock=clock)
    key = cache_key_for("bob")
    token = token_at(minted, clock, lifetime=1000)

    async def fetch() -> CachedToken:
        return token

    try:
        assert await cache.get_or_fetch(key, fetch) == token
        assert not store.available
        clock.now += 11  # past the recheck time: served while Redis is away
        assert cache.peek(key) is None
        assert await cache.get_or_fetch(key, fetch) == token
        assert seen["stale"] >= 1
        clock.now = token.expires_on - 300  # the end of its cached life
        assert store.get_local(key) is None
        assert cache.peek(key) is None
    finally:
        await cache.close()
        await store.close()  # passed in: the cache leaves it open


async def test_l1_rechecks_redis_after_l1_ttl(
    redis_stores: Stores, minted: Minted, clock: FakeClock
) -> None:
    writer = TokenCache(store=redis_stores(clock=clock), clock=clock)
    reader_store = redis_stores(clock=clock, l1_ttl=5)
    reader = TokenCache(store=reader_store, clock=clock)
    key = cache_key_for("carol")
    first = token_at(minted, clock)

    async def fetch_first() -> CachedToken:
        return first

    await writer.get_or_fetch(key, fetch_first)
    assert await reader.get_or_fetch(key, fetch_first) == first
    clock.now += 4.9
    assert reader.peek(key) == first
    clock.now += 0.1
    assert reader.peek(key) is None  # due for a look at Redis, not gone
    assert reader_store.get_local(key) is None  # Redis answers: no stale serving
    assert await reader.get_or_fetch(key, fetch_first) == first
    assert reader.peek(key) == first  # rechecked, good for another 5 s


async def test_l1_is_bounded(redis_stores: Stores, minted: Minted) -> None:
    store = redis_stores(l1_max_entries=3)
    cache = TokenCache(store=store)
    keys = [cache_key_for(f"user{n}") for n in range(5)]
    for key in keys:
        await cache.get_or_fetch(key, Exchanges(minted))
    assert len(store._l1) == 3
    assert [cache.peek(k) is not None for k in keys] == [False, False, True, True, True]
    assert await store.get(keys[0]) is not None  # still in Redis


def test_recheck_all_keeps_entries_as_fallbacks(minted: Minted, clock: FakeClock) -> None:
    tier = LocalTier(max_entries=10, ttl=60, clock=clock)
    token = token_at(minted, clock)
    tier.put("k", token, 100)
    tier.recheck_all()
    assert tier.get_nowait("k") is None
    assert tier.get_local("k", stale_ok=False) is None
    assert tier.get_local("k", stale_ok=True) == token
    clock.now += 100
    assert tier.get_local("k", stale_ok=True) is None
    assert len(tier) == 0


def test_the_store_refuses_unsafe_settings() -> None:
    sealer = TokenSealer(TokenSealer.generate_key())
    for options in (
        {"namespace": "a{b}"},
        {"lease_ttl": 0},
        {"l1_ttl": 0},
        {"l1_max_entries": 0},
        {"ssl_ca_file": "/tmp/ca.pem"},  # a CA without TLS
        {"ssl": True, "ssl_ca_file": ""},  # would mean "no CA" to some clients
        {"cluster": True, "db": 1},
    ):
        with pytest.raises(ConfigurationError):
            RedisTokenStore(sealer=sealer, **options)  # type: ignore[arg-type]


def test_an_l1_read_costs_no_more_than_a_memory_store_read(minted: Minted) -> None:
    """Not a benchmark: a loose bound that catches a coroutine or I/O slipping into peek."""
    clock = FakeClock(time.time())
    tier = LocalTier(max_entries=10, ttl=60, clock=clock)
    memory = MemoryTokenStore(clock=clock)
    token = token_at(minted, clock)
    tier.put("k", token, 100)
    memory._cache._entries["k"] = (token, clock.now + 100)

    def cost(get: Callable[[str], object]) -> float:
        started = time.perf_counter()
        for _ in range(20_000):
            get("k")
        return time.perf_counter() - started

    l1 = min(cost(tier.get_nowait) for _ in range(3))
    mem = min(cost(memory.get_nowait) for _ in range(3))
    assert l1 < mem * 2
