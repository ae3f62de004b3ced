"""Single flight through `TokenCache.get_or_fetch`: one fetch per key, isolated failures."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from grpc_obo import SecretToken
from grpc_obo._exchange import CachedToken, TokenCache
from grpc_obo._exchange._singleflight import Patience, SingleFlight

from .conftest import Minted, eventually


def valid(value: str) -> CachedToken:
    now = time.time()
    return CachedToken(
        access_token=SecretToken(value), expires_on=now + 3600, refresh_on=now + 1800
    )


class Fetcher:
    """A fetch callable that counts calls and can be held open or made to fail."""

    def __init__(self, minted: Minted, label: str) -> None:
        self.minted = minted
        self.label = label
        self.calls = 0
        self.release = asyncio.Event()
        self.release.set()
        self.fail_with: BaseException | None = None
        self.issued: list[str] = []

    async def __call__(self) -> CachedToken:
        self.calls += 1
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        token = self.minted.token(self.label)
        self.issued.append(token)
        return valid(token)


async def test_a_thousand_concurrent_first_calls_make_one_fetch(minted: Minted) -> None:
    cache = TokenCache()
    fetch = Fetcher(minted, "alice")
    fetch.release.clear()
    callers = [asyncio.create_task(cache.get_or_fetch("k", fetch)) for _ in range(1_000)]
    await asyncio.sleep(0)
    fetch.release.set()
    results = await asyncio.gather(*callers)
    assert fetch.calls == 1
    assert {r.access_token.reveal() for r in results} == set(fetch.issued)
    assert await cache.get_or_fetch("k", fetch) == results[0]
    assert fetch.calls == 1
    await cache.close()


async def test_two_keys_concurrently_never_get_each_others_token(minted: Minted) -> None:
    cache = TokenCache()
    alice, bob = Fetcher(minted, "alice"), Fetcher(minted, "bob")
    alice.release.clear()
    bob.release.clear()
    calls = [
        asyncio.create_task(cache.get_or_fetch(key, fetch))
        for _ in range(200)
        for key, fetch in (("alice", alice), ("bob", bob))
    ]
    await asyncio.sleep(0)
    bob.release.set()  # bob finishes first: nothing of his may leak to alice's waiters
    await asyncio.sleep(0)
    alice.release.set()
    results = await asyncio.gather(*calls)
    assert alice.calls == bob.calls == 1
    for n, result in enumerate(results):
        expected = alice.issued[0] if n % 2 == 0 else bob.issued[0]
        assert result.access_token.reveal() == expected
    await cache.close()


async def test_a_failure_reaches_its_waiters_only_and_is_not_cached(minted: Minted) -> None:
    cache = TokenCache()
    broken, healthy = Fetcher(minted, "broken"), Fetcher(minted, "healthy")
    broken.release.clear()
    broken.fail_with = RuntimeError("authority said no")
    waiting = [asyncio.create_task(cache.get_or_fetch("broken", broken)) for _ in range(10)]
    other = asyncio.create_task(cache.get_or_fetch("healthy", healthy))
    await asyncio.sleep(0)
    broken.release.set()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert broken.calls == 1
    assert (await other).access_token.reveal() == healthy.issued[0]

    broken.fail_with = None  # not poisoned: the next call tries again and succeeds
    assert (await cache.get_or_fetch("broken", broken)).access_token.reveal() == broken.issued[0]
    assert broken.calls == 2
    await cache.close()


async def test_cancelling_a_waiter_does_not_cancel_the_shared_fetch(minted: Minted) -> None:
    cache = TokenCache()
    fetch = Fetcher(minted, "alice")
    fetch.release.clear()
    starter = asyncio.create_task(cache.get_or_fetch("k", fetch))
    others = [asyncio.create_task(cache.get_or_fetch("k", fetch)) for _ in range(5)]
    await asyncio.sleep(0)
    starter.cancel()  # even the caller that started the fetch
    with pytest.raises(asyncio.CancelledError):
        await starter
    fetch.release.set()
    results = await asyncio.gather(*others)
    assert fetch.calls == 1
    assert all(r.access_token.reveal() == fetch.issued[0] for r in results)
    await cache.close()


async def test_a_caller_deadline_leaves_the_fetch_running_for_the_cache(minted: Minted) -> None:
    cache = TokenCache()
    fetch = Fetcher(minted, "alice")
    fetch.release.clear()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(cache.get_or_fetch("k", fetch), timeout=0.01)
    fetch.release.set()
    await eventually(lambda: cache.peek("k") is not None)
    assert (await cache.get("k")) is not None
    assert fetch.calls == 1
    await cache.close()


async def test_in_flight_map_is_empty_after_success_failure_and_cancellation() -> None:
    flight: SingleFlight[int] = SingleFlight()

    async def ok() -> int:
        return 1

    async def boom() -> int:
        raise ValueError("no")

    async def forever() -> int:
        await asyncio.Event().wait()
        return 0

    for n in range(100):
        assert await flight.do(f"ok{n}", ok) == 1
        with pytest.raises(ValueError):
            await flight.do(f"boom{n}", boom)
    waiter = asyncio.create_task(flight.do("slow", forever))
    await asyncio.sleep(0)
    assert len(flight) == 1
    waiter.cancel()
    await flight.cancel_all()
    assert len(flight) == 0


async def test_failure_with_every_waiter_cancelled_is_not_reported_unretrieved() -> None:
    flight: SingleFlight[int] = SingleFlight()
    gate = asyncio.Event()

    async def boom() -> int:
        await gate.wait()
        raise ValueError("no")

    waiter = asyncio.create_task(flight.do("k", boom))
    await asyncio.sleep(0)
    waiter.cancel()
    gate.set()
    await eventually(lambda: len(flight) == 0)
    await asyncio.sleep(0)  # its done callbacks ran: filterwarnings=error and the loop's
    # exception handler stay silent


async def test_a_caller_joining_after_the_patience_ran_out_is_not_refused() -> None:
    """The patience's timeout fired but its cancellation was lost on the way (redis-py on
    Python 3.11 can swallow one): a caller that joins then, with a shorter deadline still,
    must not get asyncio's RuntimeError for rescheduling an expiring timeout."""
    loop = asyncio.get_running_loop()
    patience = Patience(None)
    async with patience.scope():
        patience.shorten(loop.time())  # fires at once...
        with contextlib.suppress(asyncio.CancelledError):  # ...and its cancellation is lost
            await asyncio.Event().wait()
        patience.shorten(loop.time() - 1)
        remaining = patience.remaining()
        assert remaining is not None and remaining < 0
