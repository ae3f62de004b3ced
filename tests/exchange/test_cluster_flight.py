"""Single flight across replicas (stores sharing one real Redis, here in one event loop):
one exchange per key between them, leases that end with their holder, deadlines kept.

The same behaviours with real processes are in tests/replicas/.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import redis

from grpc_obo import CachedToken, RedisTokenStore, SecretToken, TokenCache
from grpc_obo._exchange._redis_link import ACQUIRE

from .conftest import Exchanges, FakeClock, Minted, cache_key_for, eventually, outcomes

pytestmark = pytest.mark.redis

Stores = Callable[..., RedisTokenStore]


def replicas(stores: Stores, count: int, **options: object) -> list[TokenCache]:
    return [TokenCache(store=stores(**options)) for _ in range(count)]


async def test_300_concurrent_first_calls_on_three_replicas_make_one_exchange(
    redis_stores: Stores, minted: Minted
) -> None:
    caches = replicas(redis_stores, 3)
    exchange = Exchanges(minted, "alice", delay=0.2)
    key = cache_key_for("alice")
    tokens = await asyncio.gather(
        *(caches[n % 3].get_or_fetch(key, exchange, timeout=10) for n in range(300))
    )
    assert exchange.calls == 1
    assert {t.access_token.reveal() for t in tokens} == set(exchange.issued)
    assert sum(outcomes(c)["leased"] for c in caches) == 1
    assert sum(outcomes(c)["waited"] for c in caches) >= 2
    # Every replica now answers from its own memory: no Redis, no coroutine.
    assert all(c.peek(key) == tokens[0] for c in caches)


async def test_many_users_at_once_each_get_their_own_token(
    redis_stores: Stores, minted: Minted
) -> None:
    caches = replicas(redis_stores, 3)
    users = [f"user{n}" for n in range(20)]
    exchanges = {user: Exchanges(minted, user, delay=0.05) for user in users}
    calls = [
        (user, caches[n % 3].get_or_fetch(cache_key_for(user), exchanges[user], timeout=10))
        for n in range(6)
        for user in users
    ]
    results = await asyncio.gather(*(call for _, call in calls))
    for (user, _), token in zip(calls, results, strict=True):
        assert token.access_token.reveal() == exchanges[user].issued[0]
    assert all(e.calls == 1 for e in exchanges.values())


async def test_a_failed_exchange_fails_its_own_callers_and_another_replica_takes_over(
    redis_stores: Stores, minted: Minted, redis_client: redis.Redis
) -> None:
    first, second = replicas(redis_stores, 2)
    key = cache_key_for("bob")
    failing = Exchanges(minted, "bob", delay=0.2)
    failing.fail_with = RuntimeError("authority said no")
    working = Exchanges(minted, "bob")
    holder = asyncio.create_task(first.get_or_fetch(key, failing, timeout=10))
    lease = RedisTokenStore.redis_keys(first.store, key)[1]  # type: ignore[arg-type]
    await eventually(lambda: bool(redis_client.exists(lease)))
    waiting = [asyncio.create_task(second.get_or_fetch(key, working, timeout=10)) for _ in range(5)]
    with pytest.raises(RuntimeError):
        await holder
    tokens = await asyncio.gather(*waiting)
    assert working.calls == 1  # released at once: no wait for the lease to expire
    assert {t.access_token.reveal() for t in tokens} == set(working.issued)


async def test_a_dead_replicas_lease_ends_and_a_waiter_takes_over_within_its_ttl(
    redis_stores: Stores, minted: Minted, redis_client: redis.Redis
) -> None:
    (cache,) = replicas(redis_stores, 1)
    key = cache_key_for("carol")
    lease = RedisTokenStore.redis_keys(cache.store, key)[1]  # type: ignore[arg-type]
    redis_client.set(lease, b"a-replica-that-died", px=400)  # taken, never released
    exchange = Exchanges(minted, "carol")
    started = time.monotonic()
    token = await cache.get_or_fetch(key, exchange)  # no deadline: waits for the lease
    elapsed = time.monotonic() - started
    assert exchange.calls == 1
    assert token.access_token.reveal() == exchange.issued[0]
    assert 0.3 < elapsed < 2.0


async def test_a_short_deadline_stops_waiting_at_half_and_exchanges_here(
    redis_stores: Stores, minted: Minted, redis_client: redis.Redis
) -> None:
    (cache,) = replicas(redis_stores, 1)
    key = cache_key_for("dave")
    lease = RedisTokenStore.redis_keys(cache.store, key)[1]  # type: ignore[arg-type]
    redis_client.set(lease, b"a-stuck-replica", px=30_000)
    exchange = Exchanges(minted, "dave", delay=0.05)
    started = time.monotonic()
    token = await cache.get_or_fetch(key, exchange, timeout=2.0)
    elapsed = time.monotonic() - started
    assert token.access_token.reveal() == exchange.issued[0]
    assert 0.9 < elapsed < 1.9  # waited ~1 s (half the deadline), then exchanged
    assert outcomes(cache)["impatient"] == 1
    # The token is shared all the same: another replica finds it without exchanging.
    other = TokenCache(store=redis_stores())
    await eventually(lambda: redis_client.exists(lease.removesuffix(":lease")) == 1)
    assert await other.get_or_fetch(key, exchange) == token
    assert exchange.calls == 1


async def test_a_caller_joining_with_a_shorter_deadline_hurries_the_wait(
    redis_stores: Stores, minted: Minted, redis_client: redis.Redis
) -> None:
    (cache,) = replicas(redis_stores, 1)
    key = cache_key_for("erin")
    lease = RedisTokenStore.redis_keys(cache.store, key)[1]  # type: ignore[arg-type]
    redis_client.set(lease, b"a-stuck-replica", px=30_000)
    exchange = Exchanges(minted, "erin")
    patient = asyncio.create_task(cache.get_or_fetch(key, exchange))  # no deadline at all
    await eventually(lambda: outcomes(cache)["waited"] == 1)
    started = time.monotonic()
    hurried = await cache.get_or_fetch(key, exchange, timeout=2.0)
    assert time.monotonic() - started < 1.9
    assert await patient == hurried
    assert exchange.calls == 1


async def test_a_long_exchange_keeps_its_lease_alive(redis_stores: Stores, minted: Minted) -> None:
    """The holder renews its lease while it exchanges: a lease shorter than the exchange
    does not let a second replica start its own (while it waits: 2 x lease_ttl at most)."""
    first, second = replicas(redis_stores, 2, lease_ttl=1.0)
    key = cache_key_for("frank")
    exchange = Exchanges(minted, "frank", delay=1.4)
    holder = asyncio.create_task(first.get_or_fetch(key, exchange))
    await eventually(lambda: exchange.calls == 1)  # under its lease
    waiter = await second.get_or_fetch(key, exchange)
    assert await holder == waiter
    assert exchange.calls == 1


async def test_a_proactive_refresh_happens_once_across_replicas(
    redis_stores: Stores, minted: Minted
) -> None:
    clock = FakeClock(time.time())
    first, second = (TokenCache(store=redis_stores(clock=clock), clock=clock) for _ in range(2))
    key = cache_key_for("grace")
    exchange = Exchanges(minted, "grace", delay=0.1, refresh_after=0.3, clock=clock)
    original = await first.get_or_fetch(key, exchange)
    assert await second.get_or_fetch(key, exchange) == original
    exchange.refresh_after = 1800
    clock.now += 0.35  # past refresh_on on both replicas
    served = await asyncio.gather(
        first.get_or_fetch(key, exchange), second.get_or_fetch(key, exchange)
    )
    assert served == [original, original]  # still served while one refresh runs
    await eventually(
        lambda: first.peek(key) is not None and second.peek(key) is not None, within=3.0
    )
    assert exchange.calls == 2
    assert first.peek(key) == second.peek(key) != original


async def test_an_eviction_reaches_every_replica(redis_stores: Stores, minted: Minted) -> None:
    caches = replicas(redis_stores, 3)
    key = cache_key_for("heidi")
    exchange = Exchanges(minted, "heidi")
    first = await caches[0].get_or_fetch(key, exchange)
    for cache in caches[1:]:
        assert await cache.get_or_fetch(key, exchange) == first
    assert all(c.peek(key) == first for c in caches)
    await caches[1].invalidate(key)  # a downstream answered caches[1] with a claims challenge
    await eventually(lambda: all(c.peek(key) is None for c in caches), within=1.0)
    again = await asyncio.gather(*(c.get_or_fetch(key, exchange) for c in caches))
    assert exchange.calls == 2
    assert again[0] == again[1] == again[2] != first


async def test_a_lost_message_is_caught_up_within_the_l1_ttl(
    redis_stores: Stores, minted: Minted, redis_client: redis.Redis
) -> None:
    clock = FakeClock(time.time())
    writer, reader = replicas(redis_stores, 2, l1_ttl=0.3, clock=clock)
    key = cache_key_for("ivan")
    exchange = Exchanges(minted, "ivan")
    token = await writer.get_or_fetch(key, exchange)
    assert await reader.get_or_fetch(key, exchange) == token
    # Deleted behind every replica's back: no message at all.
    redis_client.delete(RedisTokenStore.redis_keys(reader.store, key)[0])  # type: ignore[arg-type]
    assert reader.peek(key) == token
    clock.now += 0.35
    assert reader.peek(key) is None  # rechecked against Redis at the next call
    assert await reader.get_or_fetch(key, exchange) != token
    assert exchange.calls == 2


async def test_an_interrupted_subscription_makes_every_entry_recheck(
    redis_stores: Stores, minted: Minted, redis_client: redis.Redis
) -> None:
    (cache,) = replicas(redis_stores, 1)
    store = cache.store
    assert isinstance(store, RedisTokenStore)
    exchange = Exchanges(minted, "judy")
    keys = [cache_key_for(f"judy{n}") for n in range(5)]
    for key in keys:
        await cache.get_or_fetch(key, exchange)
    await eventually(lambda: store.notifications_live)
    redis_client.client_kill_filter(_type="pubsub")  # messages may be lost until resubscribed
    await eventually(lambda: all(cache.peek(k) is None for k in keys))
    for key in keys:  # rechecked: still in Redis, no exchange
        await cache.get_or_fetch(key, exchange)
    assert exchange.calls == 5
    assert all(cache.peek(k) is not None for k in keys)


async def test_a_read_racing_an_eviction_does_not_bring_the_evicted_token_back(
    redis_stores: Stores, minted: Minted
) -> None:
    store = redis_stores()
    key = cache_key_for("ken")
    exchange = Exchanges(minted, "ken")
    token = await exchange()
    seen = store._l1.evictions  # a read starts here...
    await store.delete(key)  # ...an eviction lands before its answer
    assert not store._l1.fill(key, token, 60, seen)
    assert store.get_nowait(key) is None
    assert store._l1.fill(key, token, 60, store._l1.evictions)  # a read started after it may


# -- an ACQUIRE whose answer comes late ------------------------------------------------------


class HeldAnswer:
    """Wraps a store's Redis client: once `armed`, the next ACQUIRE runs on Redis but its answer
    is held until the caller is cancelled (a timeout ending the wait). With `absorb`, the answer
    is then returned all the same, as redis-py does on Python 3.11 when a cancellation lands as
    a send completes (`asyncio.wait_for`, CPython gh-86296); else the cancellation goes on."""

    def __init__(self, store: RedisTokenStore, *, absorb: bool) -> None:
        self._client = store._client
        self._eval = self._client.eval
        self._client.eval = self.eval
        self.absorb = absorb
        self.armed = False
        self.holding = asyncio.Event()
        self.absorbed = 0

    async def eval(self, script: str, *args: object) -> object:
        answer = await self._eval(script, *args)
        if script == ACQUIRE and self.armed:
            self.armed = False
            self.holding.set()
            try:
                await asyncio.Event().wait()  # the answer is on its way...
            except asyncio.CancelledError:
                if not self.absorb:
                    raise
                self.absorbed += 1  # ...and arrives with the cancellation: it is lost
        return answer


async def test_a_hurried_wait_ends_even_when_redis_py_loses_the_cancellation(
    redis_stores: Stores, minted: Minted, redis_client: redis.Redis
) -> None:
    """The shortened patience ends during a round trip whose cancellation redis-py swallows:
    the wait still ends at the patience, not at 2 x lease_ttl (the flaky hurried wait)."""
    store = redis_stores()
    cache = TokenCache(store=store)
    held = HeldAnswer(store, absorb=True)
    key = cache_key_for("erin-late")
    redis_client.set(store.redis_keys(key)[1], b"a-stuck-replica", px=30_000)
    exchange = Exchanges(minted, "erin-late")
    patient = asyncio.create_task(cache.get_or_fetch(key, exchange))  # no deadline at all
    held.armed = True
    await held.holding.wait()  # the patient wait is inside a round trip now
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(5.0):
        hurried = await cache.get_or_fetch(key, exchange, timeout=0.4)
    assert held.absorbed == 1
    assert loop.time() - started < 0.39  # patience 0.2 s, then exchanged here
    assert await patient == hurried
    assert exchange.calls == 1


async def test_a_wait_without_a_deadline_ends_even_when_redis_py_loses_the_cancellation(
    redis_stores: Stores, minted: Minted, redis_client: redis.Redis
) -> None:
    """2 x lease_ttl ends during a round trip whose cancellation is swallowed: the wait ends
    all the same, instead of polling a pinned lease until it expires."""
    store = redis_stores(lease_ttl=0.25)
    cache = TokenCache(store=store)
    held = HeldAnswer(store, absorb=True)
    held.armed = True  # the first look at Redis outlasts the whole wait
    key = cache_key_for("pinned-late")
    redis_client.set(store.redis_keys(key)[1], b"a-stuck-replica", px=60_000)
    exchange = Exchanges(minted, "pinned-late")
    async with asyncio.timeout(5.0):
        token = await cache.get_or_fetch(key, exchange)  # no deadline
    assert held.absorbed == 1
    assert token.access_token.reveal() == exchange.issued[0]
    assert outcomes(cache)["impatient"] == 1


async def test_a_wait_ending_during_an_acquire_releases_the_lease_it_took(
    redis_stores: Stores, minted: Minted, redis_client: redis.Redis
) -> None:
    """The wait ends while ACQUIRE's answer is on its way, after the script took the lease for
    us: the lease is released at once (compare-and-delete) while we exchange without it, not
    left for lease_ttl (5 s) to the other replicas, which nobody renews it for. (The wait is
    ended by the caller's patience here: at 2 x lease_ttl the lease would be expiring anyway.)"""
    store = redis_stores()
    cache = TokenCache(store=store)
    held = HeldAnswer(store, absorb=False)
    held.armed = True
    key = cache_key_for("taken-late")
    _, lease = store.redis_keys(key)
    exchanging, finish = asyncio.Event(), asyncio.Event()

    async def exchange() -> CachedToken:
        exchanging.set()
        await finish.wait()
        now = time.time()
        return CachedToken(
            access_token=SecretToken(minted.token("taken-late")),
            expires_on=now + 3600,
            refresh_on=now + 1800,
        )

    caller = asyncio.create_task(cache.get_or_fetch(key, exchange, timeout=0.4))
    await held.holding.wait()
    assert redis_client.get(lease) is not None  # taken for us; its answer is held
    await exchanging.wait()  # the wait ended: exchanging here, without the lease
    await eventually(lambda: redis_client.exists(lease) == 0, within=2.0)
    assert outcomes(cache)["impatient"] == 1
    finish.set()
    token = await caller
    # Shared all the same: another replica finds it without exchanging.
    other = TokenCache(store=redis_stores())
    await eventually(lambda: redis_client.exists(lease.removesuffix(":lease")) == 1)
    assert await other.get_or_fetch(key, Exchanges(minted, "never")) == token
