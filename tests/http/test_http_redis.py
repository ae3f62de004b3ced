"""HTTP On-Behalf-Of across replicas sharing a real Redis: concurrent first calls on two
replicas make one exchange per user, and a claims challenge seen by one replica evicts the
token everywhere (no replica sends the refused token again)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
import redis

import grpc_obo
from grpc_obo.devauthority import DevAuthority
from tests.http.conftest import FAST, Users
from tests.http.downstream import Downstream, claims_json
from tests.redis_server import redis_server

pytestmark = pytest.mark.redis


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
async def replicas(
    redis_url: str, client: grpc_obo.ConfidentialClient
) -> AsyncIterator[Callable[[], grpc_obo.OnBehalfOf]]:
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    key = grpc_obo.TokenSealer.generate_key()
    made: list[grpc_obo.OnBehalfOf] = []

    def make() -> grpc_obo.OnBehalfOf:
        store = grpc_obo.RedisTokenStore.from_url(
            redis_url, sealer=grpc_obo.TokenSealer(key), namespace=namespace, timeout=5.0
        )
        made.append(grpc_obo.OnBehalfOf(client, retry=FAST, store=store))
        return made[-1]

    yield make
    for obo in made:
        await obo.close()
        await obo.cache.store.close()  # passed in: OnBehalfOf leaves it open
    plain = redis.Redis.from_url(redis_url)
    keys = list(plain.scan_iter(match=f"{namespace}:*"))
    if keys:
        plain.delete(*keys)
    plain.close()


async def evicted(replica: grpc_obo.OnBehalfOf, key: str) -> None:
    """Until the eviction message reached `replica`'s memory level (bounded: 5 s)."""
    for _ in range(500):
        if replica.cache.peek(key) is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the eviction never reached the other replica")


async def test_replicas_share_one_exchange_and_a_challenge_evicts_everywhere(
    grpc_obo_authority: DevAuthority,
    replicas: Callable[[], grpc_obo.OnBehalfOf],
    users: Users,
    read: str,
    downstream: Downstream,
) -> None:
    first, second = replicas(), replicas()
    alice = await users.identity("alice")
    url = f"{downstream.url}/whoami"
    async with (
        httpx.AsyncClient(auth=first.http_auth(scopes=[read])) as one,
        httpx.AsyncClient(auth=second.http_auth(scopes=[read])) as two,
    ):
        with grpc_obo.use_identity(alice):
            await asyncio.gather(*(http.get(url) for _ in range(8) for http in (one, two)))
            assert grpc_obo_authority.requests.count(grant="obo", ok=True) == 1
            refused = downstream.tokens[-1]
            downstream.challenge_next(1, claims_json(xms_cc={"values": ["cp1"]}))
            assert (await one.get(url)).status_code == 200  # challenged, evicted, replayed
            await evicted(second, second.cache_key([read], identity=alice))
            assert (await two.get(url)).status_code == 200
    assert downstream.tokens[-1] != refused  # the second replica did not reuse it
    assert grpc_obo_authority.requests.count(grant="obo", ok=True) == 3
