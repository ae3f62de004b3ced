"""`TokenCache`: TTL from expiry minus margin, proactive refresh, invalidation, clean close."""

from __future__ import annotations

import asyncio
import logging

import pytest

from grpc_obo import SecretToken
from grpc_obo._exchange import CachedToken, MemoryTokenStore, TokenCache

from .conftest import FakeClock, Minted, eventually


class RecordingStore(MemoryTokenStore):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(max_entries=100, clock=clock)
        self.ttls: list[float] = []
        self.closes = 0

    async def set(self, key: str, token: CachedToken, ttl: float) -> None:
        self.ttls.append(ttl)
        await super().set(key, token, ttl)

    async def close(self) -> None:
        self.closes += 1
        await super().close()


class Issuer:
    """Fetch callable issuing tokens that live `lifetime` s and refresh at `refresh_after` s."""

    def __init__(self, minted: Minted, clock: FakeClock, lifetime: float = 3600) -> None:
        self.minted, self.clock, self.lifetime = minted, clock, lifetime
        self.refresh_after = lifetime / 2
        self.calls = 0
        self.fail = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self) -> CachedToken:
        self.calls += 1
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("authority unavailable")
        now = self.clock.now
        return CachedToken(
            access_token=SecretToken(self.minted.token()),
            expires_on=now + self.lifetime,
            refresh_on=now + self.refresh_after,
        )


async def test_ttl_is_expiry_minus_margin(minted: Minted, clock: FakeClock) -> None:
    store = RecordingStore(clock)
    cache = TokenCache(store=store, margin=300, clock=clock)
    issue = Issuer(minted, clock)
    first = await cache.get_or_fetch("k", issue)
    assert store.ttls == [pytest.approx(3600 - 300)]
    clock.now += 3299
    assert await cache.get("k") == first
    clock.now += 1
    assert await cache.get("k") is None
    await cache.close()


async def test_a_token_expiring_within_the_margin_is_returned_but_never_stored(
    minted: Minted, clock: FakeClock
) -> None:
    store = RecordingStore(clock)
    cache = TokenCache(store=store, margin=300, clock=clock)
    issue = Issuer(minted, clock, lifetime=200)
    await cache.get_or_fetch("k", issue)
    await cache.get_or_fetch("k", issue)
    assert store.ttls == []
    assert issue.calls == 2
    await cache.close()


async def test_past_refresh_on_serves_cached_token_and_refreshes_once_in_background(
    minted: Minted, clock: FakeClock
) -> None:
    cache = TokenCache(margin=300, clock=clock)
    issue = Issuer(minted, clock)
    first = await cache.get_or_fetch("k", issue)
    clock.now += 1800  # at refresh_on, still valid for 1800 s
    issue.gate.clear()
    served = [await cache.get_or_fetch("k", issue) for _ in range(50)]
    assert all(token == first for token in served)  # immediately, from the cache
    await asyncio.sleep(0)
    assert issue.calls == 2  # exactly one background refresh started
    issue.gate.set()
    await eventually(lambda: cache.peek("k") not in (None, first))
    refreshed = await cache.get_or_fetch("k", issue)
    assert refreshed != first
    assert refreshed.refresh_on == clock.now + 1800
    assert issue.calls == 2
    await cache.close()


async def test_failed_background_refresh_keeps_the_valid_token(
    minted: Minted, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = TokenCache(margin=300, clock=clock)
    issue = Issuer(minted, clock)
    first = await cache.get_or_fetch("k", issue)
    clock.now += 2000
    issue.fail = True
    assert await cache.get_or_fetch("k", issue) == first
    await eventually(lambda: "background refresh" in caplog.text)
    assert "background refresh" in caplog.text and "RuntimeError" in caplog.text
    assert "authority unavailable" not in caplog.text
    assert await cache.get_or_fetch("k", issue) == first  # still served, refresh retried
    await eventually(lambda: issue.calls == 3 and not cache._background)
    assert issue.calls == 3
    issue.fail = False
    clock.now += 1300  # now within the margin: no longer usable, fetched in the foreground
    assert await cache.get_or_fetch("k", issue) != first
    await cache.close()


async def test_close_cancels_background_refreshes_cleanly(minted: Minted, clock: FakeClock) -> None:
    cache = TokenCache(margin=300, clock=clock)
    issue = Issuer(minted, clock)
    await cache.get_or_fetch("k", issue)
    clock.now += 2000
    issue.gate.clear()  # the refresh hangs until close
    await cache.get_or_fetch("k", issue)
    await asyncio.sleep(0)
    await cache.close()
    with pytest.raises(RuntimeError, match="closed"):
        await cache.get_or_fetch("k", issue)


async def test_invalidate_forces_a_new_fetch(minted: Minted, clock: FakeClock) -> None:
    cache = TokenCache(clock=clock)
    issue = Issuer(minted, clock)
    first = await cache.get_or_fetch("k", issue)
    await cache.invalidate("k")
    assert await cache.get_or_fetch("k", issue) != first
    assert issue.calls == 2
    await cache.close()


async def test_fetch_must_return_a_cached_token(clock: FakeClock) -> None:
    cache = TokenCache(clock=clock)

    async def wrong() -> CachedToken:
        return "a raw token"  # type: ignore[return-value]

    with pytest.raises(TypeError):
        await cache.get_or_fetch("k", wrong)
    await cache.close()


async def test_no_token_in_reprs_or_debug_logs(minted: Minted, clock: FakeClock) -> None:
    # `minted` checks every DEBUG record (ours and aiocache's) after the test.
    logging.getLogger("aiocache").setLevel(logging.DEBUG)
    cache = TokenCache(clock=clock)
    issue = Issuer(minted, clock)
    token = await cache.get_or_fetch("k", issue)
    clock.now += 2000
    await cache.get_or_fetch("k", issue)
    await eventually(lambda: cache.peek("k") not in (None, token))
    for text in (repr(cache), repr(cache.store), repr(token), str(token)):
        assert all(secret not in text for secret in minted.secrets())
    await cache.close()


async def test_a_store_passed_in_is_the_callers_to_close(minted: Minted, clock: FakeClock) -> None:
    """Whoever builds a store closes it: a cache closes the in-process store it made itself,
    never one it was given, which may serve other caches (an `OnBehalfOf` and an `AppOnly`)."""
    store = RecordingStore(clock)
    first, second = TokenCache(store=store, clock=clock), TokenCache(store=store, clock=clock)
    token = await first.get_or_fetch("k", Issuer(minted, clock))
    await first.close()
    assert store.closes == 0
    assert await second.get("k") == token  # the other cache still reads the shared store
    await second.close()
    assert store.closes == 0
    await store.close()
    assert store.closes == 1
