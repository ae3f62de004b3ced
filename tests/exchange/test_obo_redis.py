"""Two replicas of the Original API share exchanged tokens through a real Redis, sealed.

Each replica has its own On-Behalf-Of exchanger core, MSAL client and `RedisTokenStore` (as separate
processes would); only the Redis server and the sealing key are shared.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import pytest
import redis

from grpc_obo import RedisTokenStore, SecretToken, TokenCache, TokenSealer, use_identity
from grpc_obo._exchange._exchanger import Exchanger
from grpc_obo.devauthority import DevAuthority
from tests.exchange.conftest import Users, outcomes, track, verified_claims
from tests.exchangers import Counted
from tests.outcomes import Outcomes

pytestmark = pytest.mark.redis

MakeExchanger = Callable[..., Exchanger]


def replica(
    make_exchanger: MakeExchanger,
    redis_url: str,
    namespace: str,
    key: bytes,
    counted: Counted | None = None,
) -> Exchanger:
    seen = Outcomes()
    store = RedisTokenStore.from_url(
        redis_url, sealer=TokenSealer(key), namespace=namespace, observer=seen
    )
    return make_exchanger(cache=TokenCache(store=track(store, seen)), observer=counted)


async def test_second_replica_makes_no_exchange_and_redis_holds_nothing_readable(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    redis_url: str,
    redis_namespace: str,
    redis_client: redis.Redis,
) -> None:
    key = TokenSealer.generate_key()
    counts = Counted(), Counted()
    first = replica(make_exchanger, redis_url, redis_namespace, key, counts[0])
    second = replica(make_exchanger, redis_url, redis_namespace, key, counts[1])
    alice, carol = await users.identity("alice"), await users.identity("carol")
    returned: list[SecretToken] = []
    for identity in (alice, carol):
        with use_identity(identity):
            returned.append(await first.acquire([downstream_scope]))
            returned.append(await second.acquire([downstream_scope]))
            returned.append(await second.acquire([downstream_scope]))
    assert (counts[0].exchanges, counts[1].exchanges) == (2, 0)
    assert authority.requests.count(grant="obo") == 2
    assert len({t.reveal() for t in returned}) == 2
    assert returned[0] == returned[1] == returned[2]
    downstream = authority.world.app("downstream").client_id
    assert verified_claims(authority, returned[4].reveal(), audience=downstream)["oid"] == (
        carol.oid
    )

    # What an attacker with a dump of Redis sees: hashed keys, sealed values.
    keys = sorted(redis_client.scan_iter(match="*"))
    ours = [k for k in keys if k.startswith(redis_namespace.encode())]
    assert len(ours) == 2
    # The cache key is the hash tag: a value and its lease share one Cluster slot.
    pattern = re.compile(
        rb"^" + re.escape(redis_namespace.encode()) + rb":\{grpc_obo:obo:v1:[0-9a-f]{64}\}$"
    )
    assert all(pattern.match(k) for k in ours)
    forbidden = [
        part.encode()
        for token in [*users.secrets, *(t.reveal() for t in returned)]
        for part in (token, *token.split("."))
        if len(part) > 8
    ]
    oids = [identity.oid.encode() for identity in (alice, carol) if identity.oid]
    for redis_key in keys:
        value = redis_client.get(redis_key)
        if value is None:  # expired between scan and get
            continue
        assert isinstance(value, bytes)
        for blob in (redis_key, value):
            assert b"eyJ" not in blob  # no JWT header/payload, in any token
            assert not any(part in blob for part in forbidden)
            assert not any(oid in blob for oid in oids)
        ttl = redis_client.pttl(redis_key)
        assert isinstance(ttl, int)
        assert 0 < ttl <= 3600 * 1000  # expires with the token (minus the margin)


async def test_a_replica_with_another_sealing_key_cannot_use_the_entries(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    redis_url: str,
    redis_namespace: str,
) -> None:
    first = replica(make_exchanger, redis_url, redis_namespace, TokenSealer.generate_key())
    stranger = replica(make_exchanger, redis_url, redis_namespace, TokenSealer.generate_key())
    with use_identity(await users.identity("alice")):
        ours = await first.acquire([downstream_scope])
        theirs = await stranger.acquire([downstream_scope])
    assert ours != theirs
    assert authority.requests.count(grant="obo") == 2


async def test_concurrent_first_calls_on_two_replicas_exchange_at_most_once_each(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    redis_url: str,
    redis_namespace: str,
) -> None:
    """Single flight is per process; across replicas the shared cache bounds the stampede."""
    key = TokenSealer.generate_key()
    counts = [Counted() for _ in range(2)]
    replicas = [replica(make_exchanger, redis_url, redis_namespace, key, c) for c in counts]
    identity = await users.identity("bob")

    async def call(exchanger: Exchanger) -> str:
        with use_identity(identity):
            return (await exchanger.acquire([downstream_scope])).reveal()

    tokens = await asyncio.gather(*(call(replicas[i % 2]) for i in range(400)))
    assert 1 <= authority.requests.count(grant="obo") <= 2
    assert len(set(tokens)) == authority.requests.count(grant="obo")
    # Afterwards both replicas serve from Redis: no more exchanges.
    await asyncio.gather(*(call(replicas[i % 2]) for i in range(100)))
    assert sum(c.exchanges for c in counts) == authority.requests.count(grant="obo")


async def test_a_stuck_lease_costs_a_caller_half_its_deadline_not_all_of_it(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    redis_url: str,
    redis_namespace: str,
    redis_client: redis.Redis,
) -> None:
    """Another replica took the lease and hangs: the call's deadline reaches the cache, which
    stops waiting at half of it and exchanges here (one exchange, within the deadline)."""
    exchanger = replica(make_exchanger, redis_url, redis_namespace, TokenSealer.generate_key())
    identity = await users.identity("alice")
    key = exchanger.cache_key([downstream_scope], identity=identity)
    store = exchanger.cache.store
    assert isinstance(store, RedisTokenStore)
    redis_client.set(store.redis_keys(key)[1], b"a-hung-replica", px=60_000)
    started = time.monotonic()
    with use_identity(identity):
        token = await exchanger.acquire([downstream_scope], timeout=2.0)
    assert time.monotonic() - started < 1.9
    assert outcomes(store)["impatient"] == 1
    assert authority.requests.count(grant="obo", user="alice") == 1
    assert token.reveal()
