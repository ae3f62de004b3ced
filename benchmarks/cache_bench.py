"""Benchmark of the OBO token cache (a script, not a test; runs in well under a minute).

Reports, against baselines measured in the same run:
  - cache hit cost (µs per `TokenCache.get_or_fetch` hit) at 1, 1,000 and 100,000 cached users
    for the memory store, and at 1 and 1,000 for the Redis store;
  - memory per entry at 100,000 entries (tracemalloc), with and without the token string;
  - the stampede count: N concurrent first calls for one user -> number of fetches.

Redis: REDIS_URL when set, else a private redis-server on a free port (tests/redis_server.py).
Run: .venv/bin/python benchmarks/cache_bench.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from grpc_obo import SecretToken
from grpc_obo._exchange import (
    CachedToken,
    MemoryTokenStore,
    RedisTokenStore,
    TokenCache,
    TokenSealer,
)
from grpc_obo._exchange._keys import obo_cache_key
from tests.redis_server import redis_server

TOKEN_CHARS = 1_500  # a typical Entra access token is 1.2-2.5 KB
LOOKUPS = 20_000
REDIS_LOOKUPS = 2_000


def key_for(user: int) -> str:
    return obo_cache_key(
        assertion=SecretToken(f"user-assertion-{user}"),
        client_id="bench-client",
        authority="https://authority.bench/tenant",
        scopes=["api://downstream/.default"],
    )


def token_for(user: int, now: float) -> CachedToken:
    body = f"eyJ0eXAiOiJKV1QifQ.{user:012d}"
    return CachedToken(
        access_token=SecretToken(body + "x" * (TOKEN_CHARS - len(body))),
        expires_on=now + 3600,
        refresh_on=now + 1800,
    )


async def never() -> CachedToken:
    raise AssertionError("a hit must not fetch")


async def fill(cache: TokenCache, users: int) -> list[str]:
    now = time.time()
    keys = [key_for(u) for u in range(users)]
    for user, key in enumerate(keys):
        await cache.store.set(key, token_for(user, now), ttl=3000)
    return keys


async def hit_cost(cache: TokenCache, keys: list[str], lookups: int) -> float:
    order = [random.choice(keys) for _ in range(lookups)]
    start = time.perf_counter()
    for key in order:
        await cache.get_or_fetch(key, never)
    return (time.perf_counter() - start) / lookups * 1e6


def dict_baseline(users: int, lookups: int) -> float:
    table = {key_for(u): u for u in range(users)}
    order = [random.choice(list(table)) for _ in range(lookups)]
    start = time.perf_counter()
    for key in order:
        table[key]
    return (time.perf_counter() - start) / lookups * 1e6


async def await_baseline(lookups: int) -> float:
    async def noop() -> None:
        return None

    start = time.perf_counter()
    for _ in range(lookups):
        await noop()
    return (time.perf_counter() - start) / lookups * 1e6


def key_cost(lookups: int) -> float:
    assertion = SecretToken("x" * TOKEN_CHARS)
    start = time.perf_counter()
    for _ in range(lookups):
        obo_cache_key(
            assertion=assertion,
            client_id="c",
            authority="https://a/t",
            scopes=["api://d/.default"],
        )
    return (time.perf_counter() - start) / lookups * 1e6


async def memory_per_entry(users: int) -> tuple[float, float]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache = TokenCache(store=MemoryTokenStore(max_entries=users))
    await fill(cache, users)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_entry = (after - before) / users
    token_bytes = sys.getsizeof("x" * TOKEN_CHARS)
    await close(cache)
    return per_entry, per_entry - token_bytes


async def stampede(cache: TokenCache, callers: int) -> int:
    fetches = 0

    async def fetch() -> CachedToken:
        nonlocal fetches
        fetches += 1
        await asyncio.sleep(0.005)  # an exchange takes time: everyone arrives while it runs
        return token_for(0, time.time())

    key = key_for(10_000_000 + random.randrange(1_000_000))
    await asyncio.gather(*(cache.get_or_fetch(key, fetch) for _ in range(callers)))
    return fetches


HUNG_CLOSES: list[str] = []


async def close(cache: TokenCache) -> None:
    """Close the cache and its store (the benchmark built both: a cache leaves a store it was
    given open), bounded: a close that hangs is reported (and counted in the JSON), not waited
    on."""

    async def both() -> None:
        await cache.close()
        await cache.store.close()

    # NOTE: not asyncio.wait_for: on timeout it waits for the cancelled close to finish.
    task = asyncio.ensure_future(both())
    done, _ = await asyncio.wait({task}, timeout=10)
    if not done:
        HUNG_CLOSES.append(type(cache.store).__name__)
        print(f"WARNING: {type(cache.store).__name__}.close() did not return within 10 s")


async def run(quick: bool = False) -> dict[str, object]:
    random.seed(4)
    sizes = (1, 1_000) if quick else (1, 1_000, 100_000)
    rows: list[tuple[str, str, float]] = []
    base_await = await await_baseline(LOOKUPS)
    key_us = key_cost(LOOKUPS)
    print(
        f"baselines: plain dict lookup (per size below), `await` of a no-op coroutine "
        f"{base_await:.3f} µs, obo_cache_key() {key_us:.2f} µs"
    )

    baselines = {}
    for users in sizes:
        baselines[users] = dict_baseline(users, LOOKUPS)
        cache = TokenCache(store=MemoryTokenStore(max_entries=100_000))
        keys = await fill(cache, users)
        rows.append(("memory", f"{users:,}", await hit_cost(cache, keys, LOOKUPS)))
        await close(cache)

    result: dict[str, object] = {"await_noop_us": base_await, "obo_cache_key_us": key_us}
    with redis_server() as url:
        sealer = TokenSealer(TokenSealer.generate_key())
        for users in (1, 1_000):
            store = RedisTokenStore.from_url(url, sealer=sealer, namespace="grpc-obo-bench")
            cache = TokenCache(store=store)
            keys = await fill(cache, users)
            rows.append(("redis", f"{users:,}", await hit_cost(cache, keys, REDIS_LOOKUPS)))
            for key in keys:
                await store.delete(key)
            await close(cache)

        print()
        print(f"{'store':<8}{'cached users':>14}{'µs/hit':>10}{'× dict':>10}{'× await':>10}")
        for store_name, users_text, micros in rows:
            users = int(users_text.replace(",", ""))
            print(
                f"{store_name:<8}{users_text:>14}{micros:>10.2f}"
                f"{micros / baselines[users]:>10.0f}{micros / base_await:>10.1f}"
            )
        print(
            "(dict lookup baseline: "
            + ", ".join(f"{u:,}: {b:.3f} µs" for u, b in baselines.items())
            + ")"
        )
        result["hits"] = [
            {"store": name, "users": int(users.replace(",", "")), "hit_us": micros}
            for name, users, micros in rows
        ]

        entries = sizes[-1]
        per_entry, overhead = await memory_per_entry(entries)
        print()
        print(
            f"memory at {entries:,} entries ({TOKEN_CHARS}-char tokens): "
            f"{per_entry:,.0f} bytes/entry, {per_entry * entries / 2**20:,.1f} MiB total; "
            f"overhead beyond the token string: {overhead:,.0f} bytes/entry"
        )
        result["memory"] = {
            "entries": entries, "token_chars": TOKEN_CHARS, "bytes_per_entry": per_entry,
            "overhead_bytes": overhead,
        }  # fmt: skip

        print()
        stampedes = []
        for name, make in (
            ("memory", lambda: TokenCache()),
            (
                "redis",
                lambda: TokenCache(
                    store=RedisTokenStore.from_url(url, sealer=sealer, namespace="grpc-obo-bench")
                ),
            ),
        ):
            for callers in (1_000, 10_000):
                cache = make()
                fetches = await stampede(cache, callers)
                await close(cache)
                stampedes.append({"store": name, "callers": callers, "fetches": fetches})
                print(
                    f"stampede {name:<7}{callers:>7,} concurrent first calls -> {fetches} fetch(es)"
                )
        result["stampede"] = stampedes
    result["hung_closes"] = HUNG_CLOSES
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="without the 100,000-entry tier")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    async def main_async() -> None:
        result = await run(args.quick)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"cache": result}, indent=2) + "\n")
        if HUNG_CLOSES:
            # asyncio.run would wait forever for the hung close at its teardown.
            sys.stdout.flush()
            os._exit(0)

    asyncio.run(main_async())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
