"""What anyone who can write to the shared Redis can do to the store, and why it is not a hang
or an outage: leases pinned without expiry or held for ever, keys of the wrong type.

The store never trusts what it finds in Redis (values are sealed, see test_redis_store.py);
these tests pin that it also never waits on it without bound, never polls it in a tight loop,
and that one damaged key costs only that key's user one exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import pytest
import redis
import redis.asyncio as aioredis

from grpc_obo import RedisTokenStore, TokenCache

from .conftest import Exchanges, FakeClock, Minted, cache_key_for, eventually, outcomes

pytestmark = pytest.mark.redis

Stores = Callable[..., RedisTokenStore]

# Every test here is bounded: a hang fails the test instead of the suite.
BOUND = 10.0


def evals(client: redis.Redis) -> int:
    """How many EVALs the Redis server ran since its statistics were last reset."""
    stats = client.info("commandstats").get("cmdstat_eval", {})
    return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_lease_pinned_without_expiry_is_taken_over_at_once(
    redis_stores: Stores,
    minted: Minted,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A lease key without expiry was not written by grpc_obo (every lease has one): a caller
    without a deadline takes it over instead of waiting for an expiry that never comes."""
    store = redis_stores()
    cache = TokenCache(store=store)
    key = cache_key_for("pinned")
    value, lease = store.redis_keys(key)
    redis_client.set(lease, b"pinned-by-someone")  # no PX: it would never end
    redis_client.config_resetstat()
    exchange = Exchanges(minted, "pinned")
    async with asyncio.timeout(BOUND):
        token = await cache.get_or_fetch(key, exchange)  # no deadline
    assert exchange.calls == 1
    assert token.access_token.reveal() == exchange.issued[0]
    assert outcomes(store)["leased"] == 1
    assert evals(redis_client) <= 3  # acquire, write: no polling
    assert redis_client.exists(value) == 1
    assert redis_client.exists(lease) == 0  # ours once taken over, released with the write
    assert any("lease" in line and "without expiry" in line for line in warnings(caplog))


async def test_a_lease_of_the_wrong_type_is_taken_over_too(
    redis_stores: Stores, minted: Minted, redis_client: redis.Redis
) -> None:
    store = redis_stores()
    cache = TokenCache(store=store)
    key = cache_key_for("listed-lease")
    _, lease = store.redis_keys(key)
    redis_client.rpush(lease, b"not-a-lease")
    exchange = Exchanges(minted, "listed-lease")
    async with asyncio.timeout(BOUND):
        await cache.get_or_fetch(key, exchange)
    assert exchange.calls == 1
    assert store.available


async def test_a_lease_held_for_ever_is_waited_on_for_two_lease_ttls_at_most(
    redis_stores: Stores, minted: Minted, redis_client: redis.Redis
) -> None:
    """A lease with a long expiry (a stuck replica, or anyone pinning it with PX): a caller
    without a deadline waits 2 x lease_ttl, then exchanges here; the wait polls Redis rarely."""
    store = redis_stores(lease_ttl=0.25)
    cache = TokenCache(store=store)
    key = cache_key_for("held")
    _, lease = store.redis_keys(key)
    redis_client.set(lease, b"a-stuck-replica", px=3_600_000)
    redis_client.config_resetstat()
    exchange = Exchanges(minted, "held")
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(BOUND):
        token = await cache.get_or_fetch(key, exchange)  # no deadline
    waited = loop.time() - started
    assert token.access_token.reveal() == exchange.issued[0]
    assert exchange.calls == 1
    assert outcomes(store)["impatient"] == 1
    assert 0.5 <= waited < 3.0  # 2 x lease_ttl, then exchanged here
    # At most one look per 50 ms while waiting, plus the write.
    assert evals(redis_client) <= 0.5 / 0.05 + 3


async def test_a_lease_reset_to_a_few_milliseconds_never_makes_the_store_poll_faster_than_50_ms(
    redis_stores: Stores, minted: Minted, redis_client: redis.Redis, redis_url: str
) -> None:
    """Each look finds the lease a few milliseconds from its end (someone keeps setting it
    again): waiting for "the lease's remaining time" must not become a 10 ms polling loop."""
    store = redis_stores(lease_ttl=0.25)
    cache = TokenCache(store=store)
    key = cache_key_for("flicker")
    _, lease = store.redis_keys(key)
    attacker = aioredis.Redis.from_url(redis_url)
    stop = asyncio.Event()

    async def keep_it_held() -> None:
        while not stop.is_set():
            await attacker.set(lease, b"flicker", px=15)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.005):
                    await stop.wait()

    holding = asyncio.create_task(keep_it_held())
    try:
        await eventually(lambda: redis_client.exists(lease) == 1)  # the attacker holds it
        redis_client.config_resetstat()
        exchange = Exchanges(minted, "flicker")
        async with asyncio.timeout(BOUND):
            await cache.get_or_fetch(key, exchange)  # no deadline
        assert exchange.calls == 1
        assert evals(redis_client) <= 0.5 / 0.05 + 3
    finally:
        stop.set()
        await holding
        await attacker.aclose()


@pytest.fixture
def two_replicas(redis_stores: Stores) -> tuple[TokenCache, TokenCache]:
    return TokenCache(store=redis_stores()), TokenCache(store=redis_stores())


@pytest.mark.parametrize("damage", ["list", "hash", "set"])
async def test_a_value_key_of_the_wrong_type_is_a_miss_for_that_key_only(
    two_replicas: tuple[TokenCache, TokenCache],
    minted: Minted,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    first, second = two_replicas
    store = first.store
    assert isinstance(store, RedisTokenStore)
    victim, bystander = cache_key_for("victim"), cache_key_for("bystander")
    value, _ = store.redis_keys(victim)
    if damage == "list":
        redis_client.rpush(value, b"x")
    elif damage == "hash":
        redis_client.hset(value, "x", "y")
    else:
        redis_client.sadd(value, b"x")
    victims, bystanders = Exchanges(minted, "victim"), Exchanges(minted, "bystander")
    async with asyncio.timeout(BOUND):
        token = await first.get_or_fetch(victim, victims, timeout=5)
        assert await first.get_or_fetch(bystander, bystanders, timeout=5)
        # Repaired: the value is a sealed token again, which the other replica reads.
        assert await second.get_or_fetch(victim, victims, timeout=5) == token
    assert store.available
    assert "unavailable" not in " ".join(warnings(caplog))
    assert victims.calls == 1 and bystanders.calls == 1
    assert redis_client.type(value) == b"string"
    assert any("wrong type" in line for line in warnings(caplog))


async def test_a_value_key_damaged_after_it_was_read_is_a_miss_on_recheck(
    redis_stores: Stores, minted: Minted, redis_client: redis.Redis, clock: FakeClock
) -> None:
    """The recheck of an in-process entry (after l1_ttl) reads the key alone: a wrong type
    there is a miss too, and the store stays up."""
    store = redis_stores(l1_ttl=1.0, clock=clock)
    cache = TokenCache(store=store)
    key = cache_key_for("recheck")
    value, _ = store.redis_keys(key)
    exchange = Exchanges(minted, "recheck")
    async with asyncio.timeout(BOUND):
        await cache.get_or_fetch(key, exchange, timeout=5)
        redis_client.delete(value)
        redis_client.rpush(value, b"x")
        clock.now += 2  # the in-process entry is due for its recheck
        assert await store.get(key) is None
        await cache.get_or_fetch(key, exchange, timeout=5)
    assert store.available
    assert exchange.calls == 2
    assert redis_client.type(value) == b"string"
