"""How cost grows with the number of users, measured in-process (no network, no server).

  server side   grpc_obo's verified-token cache with 1 / 1,000 / 100,000 distinct tokens
                verified: the cost of a hit (`TokenValidator.cached`, what the interceptor
                calls, and `await validate()`) for a token string fresh off the wire, and the
                memory each entry holds (tracemalloc, token string included: the cache keeps
                the verified Identity, which keeps it)
  client side   OnBehalfOf's token cache with 1 / 1,000 / 10,000 / 100,000 users' exchanged
                tokens: the cost of `await obo.acquire(...)` when the user's token is cached,
                and the memory per cached user; one exchange per user (counted)

The exchange itself is replaced by a function returning a token as long as a real one from the
dev authority: filling 100,000 users through the authority would take minutes and measure the
authority. Everything from `acquire` to the cache (identity, key, single flight, store) is the
code in the tree. Caches are sized above the tier (verified_cache_size / max_entries = 200,000);
their defaults (a 256 MiB budget for verified tokens, 100,000 exchanged tokens) bound memory
(benchmarks/memory_bench.py shows the plateau).

Run: .venv/bin/python benchmarks/scale_bench.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import random
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h

import grpc_obo

LOOKUPS = 50_000
CAPACITY = 200_000


def _copy(text: str) -> str:
    """A new string object equal to `text` (as a token read off the wire would be)."""
    return (text + " ")[:-1]


def _per_call(fn: Any, items: list[Any]) -> float:
    started = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - started) / len(items) * 1e6


async def _per_await(fn: Any, items: list[Any]) -> float:
    started = time.perf_counter()
    for item in items:
        await fn(item)
    return (time.perf_counter() - started) / len(items) * 1e6


async def _memory(fill: Any, count: int) -> float:
    """Bytes per entry that `fill()` leaves allocated (tracemalloc), after a collection."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    await fill()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / count


async def server_side(bench: h.Bench, tiers: list[int]) -> list[dict[str, Any]]:
    config = bench.config
    rows = []
    warm = bench.mint()  # first validation's one-time work stays out of the per-entry figure
    for count in tiers:
        source = {1: "one", 1_000: "1k"}.get(count, f"{count // 1000}k")
        tokens = bench.tokens(source).read_text().split()[:count]
        validator = grpc_obo.TokenValidator(
            h.validator_options(
                config, "original", verified_cache_size=CAPACITY, verified_cache_bytes=2**30
            )
        )
        await validator.validate(warm)

        async def fill(validator: Any = validator, tokens: list[str] = tokens) -> None:
            for token in tokens:
                await validator.validate(_copy(token))

        started = time.perf_counter()
        per_entry = await _memory(fill, count)
        fill_seconds = time.perf_counter() - started
        picks = [random.choice(tokens) for _ in range(LOOKUPS)]
        if any(validator.cached(t) is None for t in picks[:1000]):
            raise RuntimeError("a verified token was not cached")
        # NOTE: a server reads each call's token off the wire as a new string, whose hash
        # Python has not computed yet: time lookups of fresh copies, made before the clock runs.
        cached = _per_call(validator.cached, [_copy(t) for t in picks])
        validate = await _per_await(validator.validate, [_copy(t) for t in picks])
        sha = _per_call(lambda t: hashlib.sha256(t.encode()).digest(), picks)
        await validator.close()
        rows.append({
            "tokens": count, "token_chars": len(tokens[0]), "hit_us": cached,
            "validate_hit_us": validate, "sha256_us": sha, "bytes_per_entry": per_entry,
            "fill_seconds": fill_seconds,
        })  # fmt: skip
        h.log(f"  verified-token cache, {count:,} tokens: hit {cached:.2f} µs, "
              f"{per_entry:,.0f} B/entry")  # fmt: skip
    return rows


async def client_side(bench: h.Bench, tiers: list[int]) -> list[dict[str, Any]]:
    config = bench.config
    scope = config["downstream"]["scope"]
    downstream_token = bench.mint(audience="downstream")  # the length of a real exchanged token
    largest = max(tiers)
    source = "1k" if largest <= 1_000 else f"{max(largest // 1000, 1)}k"
    assertions = bench.tokens(source).read_text().split()
    if len(set(assertions)) < largest:
        raise RuntimeError(f"{source} holds fewer than {largest:,} distinct tokens")
    rows = []
    for count in tiers:
        identities = [
            grpc_obo.Identity(
                tid=config["tenant"],
                oid=f"5e000000-0000-4000-8000-{index:012d}",
                sub=f"sub{index}",
                kind=grpc_obo.IdentityKind.USER,
                token=grpc_obo.SecretToken(assertions[index]),
            )
            for index in range(count)
        ]
        obo = grpc_obo.OnBehalfOf(
            grpc_obo.ConfidentialClient(
                client_id=config["original"]["client_id"],
                tenant=config["tenant"],
                credential=grpc_obo.ClientCredential.secret(config["original"]["secret"]),
                authority_host=config["authority_host"],
                ca_file=config["ca_file"],
            ),
            cache=grpc_obo.TokenCache(store=grpc_obo.MemoryTokenStore(max_entries=CAPACITY)),
        )
        exchanges = 0

        async def exchange(*args: Any, **kwargs: Any) -> grpc_obo.CachedToken:
            nonlocal exchanges
            exchanges += 1
            now = time.time()
            return grpc_obo.CachedToken(
                access_token=grpc_obo.SecretToken(_copy(downstream_token)),
                expires_on=now + 3600,
                refresh_on=now + 2700,
            )

        # NOTE: the one private hook used: the MSAL runner's acquire, so the exchange costs
        # nothing and everything in front of it is the code in the tree.
        obo._exchanger._runner.acquire = exchange  # type: ignore[method-assign]

        async def fill(obo: Any = obo, identities: list[Any] = identities) -> None:
            for identity in identities:
                await obo.acquire([scope], identity=identity)

        started = time.perf_counter()
        per_user = await _memory(fill, count)
        fill_seconds = time.perf_counter() - started
        filled = exchanges
        picks = [random.choice(identities) for _ in range(LOOKUPS)]
        hit = await _per_await(lambda who, obo=obo: obo.acquire([scope], identity=who), picks)
        if exchanges != filled:
            raise RuntimeError(f"{exchanges - filled} exchanges during cache hits")
        await obo.close()
        rows.append({
            "users": count, "exchanges": filled, "hit_us": hit, "bytes_per_user": per_user,
            "token_chars": len(downstream_token), "fill_seconds": fill_seconds,
        })  # fmt: skip
        h.log(f"  On-Behalf-Of cache, {count:,} users: hit {hit:.2f} µs, {per_user:,.0f} B/user, "
              f"{filled:,} exchanges")  # fmt: skip
    return rows


async def run(bench: h.Bench, *, quick: bool = False) -> dict[str, Any]:
    random.seed(12)
    server_tiers = [1, 1_000] if quick else [1, 1_000, 100_000]
    client_tiers = [1, 1_000, 10_000] if quick else [1, 1_000, 10_000, 100_000]

    async def noop(_: Any) -> None:
        return None

    baseline_await = await _per_await(noop, list(range(LOOKUPS)))
    h.log("scale bench (in-process)")
    return {
        "capacity": CAPACITY,
        "await_noop_us": baseline_await,
        "server": await server_side(bench, server_tiers),
        "client": await client_side(bench, client_tiers),
    }


def tables(section: dict[str, Any]) -> str:
    lines = [
        "| distinct tokens verified | cache hit µs (`cached`) | `await validate()` hit µs "
        "| SHA-256 of the token alone µs | memory per entry |",
        "|---|---|---|---|---|",
    ]
    for r in section["server"]:
        lines.append(
            f"| {r['tokens']:,} | {r['hit_us']:.2f} | {r['validate_hit_us']:.2f} | "
            f"{r['sha256_us']:.2f} | {r['bytes_per_entry']:,.0f} B |"
        )
    lines += [
        "",
        "| users with a cached exchanged token | `await obo.acquire()` hit µs | exchanges "
        "| memory per user |",
        "|---|---|---|---|",
    ]
    for r in section["client"]:
        lines.append(
            f"| {r['users']:,} | {r['hit_us']:.2f} | {r['exchanges']:,} | "
            f"{r['bytes_per_user']:,.0f} B |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with h.bench_context(quick=args.quick) as bench:
        section = asyncio.run(run(bench, quick=args.quick))
    print(tables(section))
    if args.json:
        h.write_json(args.json, {"machine": h.machine(), "scale": section})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
