"""Redis Cluster: three primaries on loopback (redis-server --cluster-enabled + redis-cli
--cluster create, ~2 s). Each cache key's value and lease share one slot (hash tag), keys
spread over the nodes, and sharing, single flight and evictions work across replicas."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis

from grpc_obo import RedisTokenStore, TokenCache, TokenSealer

from .conftest import SEALING_KEY, Exchanges, FakeClock, Minted, cache_key_for, eventually
from .redis_nodes import RedisNode, redis_cluster

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisNode]]:
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as nodes:
        yield nodes


@pytest.fixture
async def replicas(cluster: list[RedisNode]) -> AsyncIterator[Callable[..., TokenCache]]:
    opened: list[TokenCache] = []

    def make(**options: object) -> TokenCache:
        options.setdefault("timeout", 5.0)  # a loaded machine must not trip the breaker
        store = RedisTokenStore.from_url(
            cluster[len(opened) % len(cluster)].url,  # any node will do
            sealer=TokenSealer(SEALING_KEY),
            cluster=True,
            namespace="cluster-test",
            **options,  # type: ignore[arg-type]
        )
        opened.append(TokenCache(store=store))
        return opened[-1]

    yield make
    for cache in opened:
        await cache.close()
        await cache.store.close()  # passed in: the cache leaves it open


def slot_owner(cluster: list[RedisNode], key: str) -> int:
    """The port of the primary serving `key`'s slot."""
    client = cluster[0].client()
    try:
        slot = client.execute_command("CLUSTER KEYSLOT", key)
        for start, end, (_, port, *_rest), *_replicas in client.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return int(port)
    finally:
        client.close()
    raise AssertionError("no node serves the slot")


async def test_one_exchange_across_replicas_and_keys_spread_over_the_nodes(
    cluster: list[RedisNode], replicas: Callable[..., TokenCache], minted: Minted
) -> None:
    caches = [replicas() for _ in range(3)]
    key = cache_key_for("alice")
    exchange = Exchanges(minted, "alice", delay=0.1)
    tokens = await asyncio.gather(
        *(caches[n % 3].get_or_fetch(key, exchange, timeout=5) for n in range(150))
    )
    assert exchange.calls == 1
    assert len({t.access_token.reveal() for t in tokens}) == 1

    store = caches[0].store
    assert isinstance(store, RedisTokenStore)
    owners = set()
    for n in range(30):
        value_key, lease_key = store.redis_keys(cache_key_for(f"user{n}"))
        assert slot_owner(cluster, value_key) == slot_owner(cluster, lease_key)
        owners.add(slot_owner(cluster, value_key))
    assert len(owners) == len(cluster)  # the hash tag is per user, not one hot slot
    users = {f"user{n}": Exchanges(minted, f"user{n}") for n in range(30)}
    for user, fetch in users.items():
        await caches[0].get_or_fetch(cache_key_for(user), fetch, timeout=5)
    for user, fetch in users.items():  # another replica: from Redis, whichever node
        token = await caches[1].get_or_fetch(cache_key_for(user), fetch, timeout=5)
        assert token.access_token.reveal() == fetch.issued[0]
    assert all(f.calls == 1 for f in users.values())


async def test_an_eviction_reaches_every_replica_through_the_cluster(
    replicas: Callable[..., TokenCache], minted: Minted
) -> None:
    caches = [replicas() for _ in range(3)]
    key = cache_key_for("bob")
    exchange = Exchanges(minted, "bob")
    for cache in caches:
        await cache.get_or_fetch(key, exchange, timeout=5)
    stores = [c.store for c in caches]
    await eventually(lambda: all(s.notifications_live for s in stores))  # type: ignore[attr-defined]
    await caches[2].invalidate(key)
    await eventually(lambda: all(c.peek(key) is None for c in caches))
    await asyncio.gather(*(c.get_or_fetch(key, exchange, timeout=5) for c in caches))
    assert exchange.calls == 2


async def test_a_node_lost_costs_no_call(
    cluster: list[RedisNode],
    replicas: Callable[..., TokenCache],
    minted: Minted,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Last in the module: it kills the node serving carol's slot (no replica to fail over
    to, so that slot is gone); her calls and everyone else's keep succeeding."""
    clock = FakeClock(time.time())
    cache = replicas(l1_ttl=0.2, timeout=2.0, clock=clock)
    store = cache.store
    assert isinstance(store, RedisTokenStore)
    carol = Exchanges(minted, "carol")
    before = await cache.get_or_fetch(cache_key_for("carol"), carol, timeout=5)
    port = slot_owner(cluster, store.redis_keys(cache_key_for("carol"))[0])
    next(node for node in cluster if node.port == port).kill()
    clock.now += 0.25  # carol's entry is due for a recheck with Redis
    # Deadlines past twice the command timeout: the failure is seen (and logged once).
    assert await cache.get_or_fetch(cache_key_for("carol"), carol, timeout=10) == before
    others = {f"user{n}": Exchanges(minted) for n in range(10)}
    await asyncio.gather(
        *(cache.get_or_fetch(cache_key_for(u), f, timeout=10) for u, f in others.items())
    )
    assert carol.calls == 1
    down = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("unavailable" in r.getMessage() for r in down) == 1


def test_cluster_mode_has_only_database_zero() -> None:
    from grpc_obo import ConfigurationError

    with pytest.raises(ConfigurationError):
        RedisTokenStore.from_url(
            "redis://127.0.0.1:7000/1", sealer=TokenSealer(SEALING_KEY), cluster=True
        )
    assert redis  # the plain client is what slot_owner uses
