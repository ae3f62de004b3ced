"""Replica processes for the multi-process tests: each runs tests/replicas/replica.py with its
own event loop, and they share one real Redis and the session's dev authority (over HTTPS on
127.0.0.1, trusting its CA file)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis

from grpc_obo import TokenSealer
from grpc_obo.devauthority import DevAuthority
from tests.redis_server import redis_server

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


class Replica:
    """One replica process: send it commands, read its JSON answers, kill it."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        await self.process.stdin.drain()

    async def answer(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise AssertionError(f"replica exited; its stderr:\n{self.tail()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def kill(self) -> None:
        """SIGKILL: no finally block, no lease released, no goodbye to Redis."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.send({"cmd": "exit"})
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.kill()
                await self.process.wait()


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
            with log.open("wb") as stderr:  # the child keeps its own copy of the descriptor
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "tests.replicas.replica",
                    cwd=ROOT,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=stderr,
                )
            batch.append(Replica(process, log))
        started.extend(batch)
        for replica in batch:
            await replica.send(config)
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
