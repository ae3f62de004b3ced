"""Replica processes for the multi-process tests: each runs tests/replicas/replica.py with its
own event loop, and they share one real Redis and the session's dev authority (over HTTPS on
127.0.0.1, trusting its CA file)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import jwt
import pytest
import redis

from grpc_obo import TokenSealer
from grpc_obo.devauthority import DevAuthority
from tests.redis_server import redis_server
from tests.replicas.process import Replica, start_process

ROOT = Path(__file__).resolve().parents[2]
_READY_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def replicas_redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def replicas_redis(replicas_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(replicas_redis_url)
    try:
        yield client
    finally:
        client.close()


Spawn = Callable[..., Awaitable[list[Replica]]]


@pytest.fixture
async def spawn_replicas(
    grpc_obo_authority: DevAuthority, replicas_redis_url: str, tmp_path: Path
) -> AsyncIterator[Spawn]:
    """`await spawn(count, lease_ttl=5.0)`: replicas of the Original API, warmed up, sharing
    a fresh Redis namespace and sealing key; stopped (or killed) after the test."""
    authority = grpc_obo_authority
    original = authority.world.app("original")
    started: list[Replica] = []
    namespaces: list[str] = []

    async def spawn(count: int, *, lease_ttl: float = 5.0) -> list[Replica]:
        namespaces.append(f"replicas-{uuid.uuid4().hex[:12]}")
        config = {
            "authority_host": authority.base_url,
            "tenant_id": authority.tenant_id,
            "ca_file": str(authority.ca_file),
            "client_id": original.client_id,
            "client_secret": original.secrets[0],
            "redis_url": replicas_redis_url,
            "namespace": namespaces[-1],
            "sealing_key": TokenSealer.generate_key().hex(),
            "lease_ttl": lease_ttl,
            # Generous: a loaded test machine must not trip the breaker (1 s by default).
            "redis_timeout": 3.0,
        }
        batch = []
        for n in range(count):
            log = tmp_path / f"replica{len(started) + n}.log"
            batch.append(await start_process("tests.replicas.replica", config, log))
            started.append(batch[-1])
        for replica in batch:
            ready = await replica.answer(_READY_TIMEOUT)
            assert ready == {"ready": True}, replica.tail()
        return batch

    yield spawn
    await asyncio.gather(*(replica.stop() for replica in started))
    client = redis.Redis.from_url(replicas_redis_url)
    try:
        for namespace in namespaces:
            keys = list(client.scan_iter(match=f"{namespace}:*"))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


def user_of(authority: DevAuthority, name: str) -> dict[str, str]:
    """A signed-in user as a replica's validator would have seen them (fresh token)."""
    token = authority.mint_user_token(name, audience="original", client="client")
    claims = jwt.decode(token, options={"verify_signature": False})
    return {"tid": claims["tid"], "oid": claims["oid"], "sub": claims["sub"], "token": token}
