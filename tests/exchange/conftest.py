"""Fixtures for the exchange tests: a real Redis, a private key namespace per test."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.redis_server import redis_server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client to inspect what the store wrote, as an attacker with a dump would."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def redis_namespace(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix owned by one test; everything under it is deleted afterwards."""
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    yield namespace
    keys = list(redis_client.scan_iter(match=f"{namespace}:*"))
    if keys:
        redis_client.delete(*keys)


class Minted:
    """Fake downstream tokens shaped like JWTs; every one is remembered for the leak checks."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def token(self, label: str = "") -> str:
        import base64
        import json

        payload = json.dumps({"sub": label, "jti": uuid.uuid4().hex, "pad": "x" * 900})
        segment = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
        token = f"eyJhbGciOiJSUzI1NiJ9.{segment}.{uuid.uuid4().hex}{uuid.uuid4().hex}"
        self.tokens.append(token)
        return token

    def secrets(self) -> list[str]:
        """Each token and its payload segment: neither may show up anywhere readable."""
        return [part for token in self.tokens for part in (token, token.split(".")[1])]


@pytest.fixture
def minted(caplog: pytest.LogCaptureFixture) -> Iterator[Minted]:
    """Mint tokens; after the test, no log record at any level may contain one of them."""
    caplog.set_level(logging.DEBUG)
    registry = Minted()
    yield registry
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in registry.secrets():
        assert secret not in text, "a minted token reached a log record"


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
