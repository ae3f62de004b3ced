"""The outbound hot path (issue 12): a cached token costs a dict read, with no task, timer or
coroutine of its own; the deadline bounds the exchange, never the lookup; everything else
(refresh, single flight, eviction) still goes through the full path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from grpc_obo import (
    AuthorityUnavailableError,
    ConfigurationError,
    RedisTokenStore,
    TokenCache,
    use_identity,
)
from grpc_obo._exchange import _cache
from grpc_obo._exchange._exchanger import Exchanger
from grpc_obo.devauthority import DevAuthority
from tests.exchange.conftest import Users
from tests.exchangers import Counted

MakeExchanger = Callable[..., Exchanger]


async def test_a_cache_hit_starts_no_task_and_ignores_a_spent_deadline(
    authority: DevAuthority,
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counted = Counted()
    exchanger = make_exchanger(observer=counted)
    with use_identity(await users.identity("alice")):
        first = await exchanger.acquire([downstream_scope])
        tasks = len(asyncio.all_tasks())

        def no_wait_for(*args: object, **kwargs: object) -> None:
            raise AssertionError("wait_for on a cache hit")

        monkeypatch.setattr(asyncio, "wait_for", no_wait_for)
        # A deadline already (nearly) spent: a miss would be refused, a hit is served.
        again = await exchanger.acquire([downstream_scope], timeout=1e-9)
        assert again == first
        assert len(asyncio.all_tasks()) == tasks
    assert counted.exchanges == 1


async def test_a_miss_with_a_spent_deadline_is_still_refused(
    users: Users, make_exchanger: MakeExchanger, downstream_scope: str
) -> None:
    exchanger = make_exchanger()
    with use_identity(await users.identity("alice")), pytest.raises(AuthorityUnavailableError):
        await exchanger.acquire([downstream_scope], timeout=0)


async def test_the_cache_key_is_computed_once_per_user_and_scope_set(
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exchanger = make_exchanger()
    computed: list[str] = []
    real = exchanger.grant.key

    def counting(*args: object, **kwargs: object) -> str:
        key = real(*args, **kwargs)  # type: ignore[arg-type]
        computed.append(key)
        return key

    monkeypatch.setattr(exchanger.grant, "key", counting)  # the grant derives the key
    with use_identity(await users.identity("alice")):
        for _ in range(5):
            await exchanger.acquire((downstream_scope,))
    with use_identity(await users.identity("bob")):
        await exchanger.acquire((downstream_scope,))
    assert len(computed) == 2
    assert len(set(computed)) == 2


async def test_a_scope_list_is_checked_once_per_scope_set(
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scopes are usually given as a list: checking them again on every acquire() cost more
    than the rest of a cache hit. A list is looked up as a tuple; a bad one is still refused."""
    from grpc_obo._exchange import _exchanger

    exchanger = make_exchanger()
    checked: list[object] = []
    real = _exchanger.scope_tuple

    def counting(scopes: object, what: str = "scopes") -> tuple[str, ...]:
        checked.append(scopes)
        return real(scopes, what)  # type: ignore[arg-type]

    monkeypatch.setattr(_exchanger, "scope_tuple", counting)
    with use_identity(await users.identity("alice")):
        for _ in range(5):
            await exchanger.acquire([downstream_scope])
        for bad in ([["unhashable"]], (["unhashable"],), ["two words"], ["no\u00a0break"]):
            with pytest.raises(ConfigurationError) as refused:
                await exchanger.acquire(bad)  # type: ignore[arg-type]
            assert refused.value.setting == "scopes"
    assert len(checked) == 1 + 4


async def test_a_token_due_for_refresh_takes_the_full_path(
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """peek() only answers for tokens that need no work: past refresh_on, get_or_fetch runs
    (and starts the background refresh the cache tests pin)."""
    exchanger = make_exchanger()
    with use_identity(await users.identity("alice")):
        await exchanger.acquire([downstream_scope])
        slow: list[str] = []
        real = exchanger.cache.get_or_fetch

        async def counting(key: str, *args: object, **kwargs: object) -> object:
            slow.append(key)
            return await real(key, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(exchanger.cache, "get_or_fetch", counting)
        await exchanger.acquire([downstream_scope])
        assert slow == []
        monkeypatch.setattr(_cache.CachedToken, "due_for_refresh", lambda self, now: True)
        await exchanger.acquire([downstream_scope])
        assert len(slow) == 1


async def test_a_hit_on_the_redis_stores_memory_level_is_the_same_dict_read(
    users: Users,
    make_exchanger: MakeExchanger,
    downstream_scope: str,
    redis_stores: Callable[..., RedisTokenStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several replicas (Redis store): a hit in this process's level needs no Redis, no task,
    no timer, and a spent deadline does not matter, exactly as with the memory store."""
    store = redis_stores()
    counted = Counted()
    exchanger = make_exchanger(cache=TokenCache(store=store), observer=counted)
    with use_identity(await users.identity("alice")):
        first = await exchanger.acquire([downstream_scope])
        tasks = len(asyncio.all_tasks())

        def forbidden(*args: object, **kwargs: object) -> None:
            raise AssertionError("Redis or wait_for on a cache hit")

        monkeypatch.setattr(asyncio, "wait_for", forbidden)
        monkeypatch.setattr(store._client, "eval", forbidden)
        for _ in range(100):
            assert await exchanger.acquire([downstream_scope], timeout=1e-9) == first
        assert len(asyncio.all_tasks()) == tasks
    assert counted.exchanges == 1
