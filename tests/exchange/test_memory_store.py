"""The bounded in-process store: LRU eviction at `max_entries`, TTL, aiocache semantics."""

from __future__ import annotations

import pytest

from grpc_obo import ConfigurationError, SecretToken
from grpc_obo._exchange import CachedToken, MemoryTokenStore

from .conftest import FakeClock


def token(n: int, now: float) -> CachedToken:
    return CachedToken(
        access_token=SecretToken(f"token-{n}"), expires_on=now + 3600, refresh_on=now + 1800
    )


async def test_least_recently_used_entry_is_evicted_at_the_bound(clock: FakeClock) -> None:
    store = MemoryTokenStore(max_entries=3, clock=clock)
    for n in range(3):
        await store.set(f"k{n}", token(n, clock.now), ttl=60)
    assert await store.get("k0") is not None  # k0 is now the most recently used
    await store.set("k3", token(3, clock.now), ttl=60)
    assert len(store) == 3
    assert await store.get("k1") is None
    for name in ("k0", "k2", "k3"):
        assert await store.get(name) is not None


async def test_store_never_grows_past_the_bound(clock: FakeClock) -> None:
    store = MemoryTokenStore(max_entries=100, clock=clock)
    for n in range(1_000):
        await store.set(f"k{n}", token(n, clock.now), ttl=60)
    assert len(store) == 100
    assert (await store.get("k999")) == token(999, clock.now)


async def test_entries_expire_after_their_ttl(clock: FakeClock) -> None:
    store = MemoryTokenStore(max_entries=10, clock=clock)
    await store.set("k", token(1, clock.now), ttl=60)
    clock.now += 59.9
    assert await store.get("k") is not None
    clock.now += 0.2
    assert await store.get("k") is None
    assert len(store) == 0


async def test_expired_entries_are_swept_on_write(clock: FakeClock) -> None:
    store = MemoryTokenStore(max_entries=10, clock=clock)
    await store.set("old", token(1, clock.now), ttl=10)
    clock.now += 11
    await store.set("new", token(2, clock.now), ttl=10)
    assert len(store) == 1


async def test_zero_ttl_is_not_stored_and_delete_works(clock: FakeClock) -> None:
    store = MemoryTokenStore(max_entries=10, clock=clock)
    await store.set("k", token(1, clock.now), ttl=0)
    assert await store.get("k") is None
    await store.set("k", token(1, clock.now), ttl=10)
    await store.delete("k")
    assert await store.get("k") is None
    await store.close()


def test_bound_must_be_positive() -> None:
    with pytest.raises(ConfigurationError):
        MemoryTokenStore(max_entries=0)


async def test_async_with_closes_the_store_even_when_the_block_fails(clock: FakeClock) -> None:
    """A store passed to a cache is the caller's to close: `async with` does it."""
    store = MemoryTokenStore(max_entries=10, clock=clock)
    closed: list[bool] = []
    close = store.close

    async def counted_close() -> None:
        closed.append(True)
        await close()

    store.close = counted_close  # type: ignore[method-assign]

    async def use() -> None:
        async with store as entered:
            assert entered is store
            await store.set("k", token(1, clock.now), ttl=10)
            assert not closed
            raise RuntimeError("in the block")

    with pytest.raises(RuntimeError, match="in the block"):
        await use()
    assert closed == [True]
