"""`rediss://`: a redis-server that speaks TLS only, with a CA made for the test. Sharing,
single flight and evictions work over it; a server the CA does not vouch for is never used."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from grpc_obo import ConfigurationError, RedisTokenStore, TokenCache, TokenSealer

from .conftest import SEALING_KEY, Exchanges, Minted, cache_key_for, eventually
from .redis_nodes import RedisNode, TlsFiles, tls_files

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisNode, TlsFiles]]:
    workdir = tmp_path_factory.mktemp("redis-tls")
    files = tls_files(workdir / "tls")
    node = RedisNode(workdir / "data", tls=files).start()
    yield node, files
    node.stop()


def store(url: str, ca_file: Path, **options: object) -> RedisTokenStore:
    options.setdefault("timeout", 5.0)
    return RedisTokenStore.from_url(
        url, sealer=TokenSealer(SEALING_KEY), ssl_ca_file=str(ca_file), **options
    )  # type: ignore[arg-type]


async def test_replicas_share_tokens_and_exchanges_over_tls(
    tls_node: tuple[RedisNode, TlsFiles], minted: Minted
) -> None:
    node, files = tls_node
    assert node.url.startswith("rediss://")
    caches = [TokenCache(store=store(node.url, files.ca_file)) for _ in range(3)]
    try:
        key = cache_key_for("alice")
        exchange = Exchanges(minted, "alice", delay=0.1)
        tokens = await asyncio.gather(
            *(caches[n % 3].get_or_fetch(key, exchange, timeout=5) for n in range(60))
        )
        assert exchange.calls == 1
        assert len({t.access_token.reveal() for t in tokens}) == 1
        assert all(c.store.available for c in caches)  # type: ignore[attr-defined]
        stores = [c.store for c in caches]
        await eventually(lambda: all(s.notifications_live for s in stores))  # type: ignore[attr-defined]
        await caches[0].invalidate(key)
        await eventually(lambda: all(c.peek(key) is None for c in caches))
    finally:
        for cache in caches:
            await cache.close()
            await cache.store.close()  # passed in: the cache leaves it open


async def test_a_server_outside_the_given_ca_is_never_used(
    tls_node: tuple[RedisNode, TlsFiles],
    tmp_path: Path,
    minted: Minted,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node, files = tls_node
    # The given CA is the only one: OpenSSL's variables cannot add the server's.
    monkeypatch.setenv("SSL_CERT_FILE", str(files.ca_file))
    monkeypatch.setenv("SSL_CERT_DIR", str(files.ca_file.parent))
    stranger = tls_files(tmp_path / "other-ca", ca_name="someone else's CA")
    cache = TokenCache(store=store(node.url, stranger.ca_file))
    try:
        exchange = Exchanges(minted, "bob")
        token = await cache.get_or_fetch(cache_key_for("bob"), exchange, timeout=2)
        assert token.access_token.reveal() == exchange.issued[0]  # exchanged here instead
        assert not cache.store.available  # type: ignore[attr-defined]
        down = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(down) == 1 and "unavailable" in down[0].getMessage()
    finally:
        await cache.close()
        await cache.store.close()  # passed in: the cache leaves it open


def test_a_ca_file_needs_tls_and_a_name() -> None:
    sealer = TokenSealer(SEALING_KEY)
    with pytest.raises(ConfigurationError):
        RedisTokenStore.from_url("redis://127.0.0.1:6379", sealer=sealer, ssl_ca_file="ca.pem")
    with pytest.raises(ConfigurationError):
        RedisTokenStore.from_url("rediss://127.0.0.1:6379", sealer=sealer, ssl_ca_file="")
