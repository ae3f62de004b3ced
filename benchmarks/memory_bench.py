"""A middle tier's memory on default settings while new users keep arriving: the plateau.

In-process, the two caches a middle tier holds per user, both on their defaults:
`TokenValidator` (verified-token cache: a 256 MiB budget) and `OnBehalfOf` (On-Behalf-Of cache:
`MemoryTokenStore(max_entries=100_000)`, and its cache-key memo, an LRU at the same bound).
Every user arrives once with a token never seen before (minted by the dev authority, Entra's
shape); their first call validates it and acquires a downstream token on their behalf. The
exchange itself is replaced by a function returning a token as long as a real one (through the
authority it would take minutes and measure the authority), so everything from `validate` and
`acquire` to both caches is the code in the tree.

Reported: the process's resident memory (RSS, /proc/self/statm) above its level before the
first user, every `--step` users, with how many entries each cache holds. Past the point where
both caches are full, RSS must stop growing: that is the plateau the README documents.

Run: .venv/bin/python benchmarks/memory_bench.py [--quick] [--users N] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h

import grpc_obo
from grpc_obo.devauthority._world import User


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _tokens(bench: h.Bench, start: int, count: int) -> list[str]:
    """`count` tokens of distinct made-up users, numbered from `start` (not registered)."""
    world = bench.authority.world
    client, original = world.app("client"), world.app("original")
    tenant = bench.authority.tenant_id
    return [
        bench.authority.minter.access_token(
            client=client,
            resource=original,
            tenant_id=tenant,
            user=User(
                username=f"arrival{index}@contoso.example",
                oid=f"a0000000-0000-4000-8000-{index:012d}",
                tenant_id=tenant,
                display_name=f"Arrival {index}",
            ),
            scopes=original.scopes,
            client_auth="0",
        ).token
        for index in range(start, start + count)
    ]


async def run(bench: h.Bench, *, users: int, step: int) -> dict[str, Any]:
    config = bench.config
    scope = config["downstream"]["scope"]
    downstream = bench.mint(audience="downstream")
    validator = grpc_obo.TokenValidator(h.validator_options(config, "original"))
    obo = grpc_obo.OnBehalfOf(
        grpc_obo.ConfidentialClient(
            client_id=config["original"]["client_id"],
            tenant=config["tenant"],
            credential=grpc_obo.ClientCredential.secret(config["original"]["secret"]),
            authority_host=config["authority_host"],
            ca_file=config["ca_file"],
        )
    )

    async def exchange(*args: Any, **kwargs: Any) -> grpc_obo.CachedToken:
        now = time.time()
        return grpc_obo.CachedToken(
            access_token=grpc_obo.SecretToken((downstream + " ")[:-1]),
            expires_on=now + 3600,
            refresh_on=now + 2700,
        )

    # NOTE: the one private hook used (as in scale_bench): the MSAL runner's acquire.
    obo._exchanger._runner.acquire = exchange  # type: ignore[method-assign]
    # One-time allocations (first validation, first exchange) stay out of the baseline.
    warm = bench.mint()
    await obo.acquire([scope], identity=await validator.validate(warm))
    gc.collect()
    baseline = rss_bytes()
    points: list[dict[str, Any]] = []
    arrived = 0
    h.log(f"memory bench: {users:,} users arriving, RSS every {step:,}")
    started = time.perf_counter()
    while arrived < users:
        batch = _tokens(bench, arrived, min(step, users - arrived))
        for token in batch:
            identity = await validator.validate(token)
            await obo.acquire([scope], identity=identity)
        arrived += len(batch)
        del batch, token, identity
        gc.collect()
        point = {
            "users": arrived,
            "rss_mib": (rss_bytes() - baseline) / 2**20,
            "verified_entries": len(validator._cache),
            "obo_entries": len(obo.cache.store),  # type: ignore[arg-type]
            "memo_entries": len(obo._exchanger._keys),
        }
        points.append(point)
        h.log(
            f"  {arrived:>8,} users: RSS +{point['rss_mib']:7.1f} MiB; verified "
            f"{point['verified_entries']:,}, On-Behalf-Of {point['obo_entries']:,}, memo "
            f"{point['memo_entries']:,}"
        )
    await obo.close()
    await validator.close()
    return {
        "users": users,
        "step": step,
        "token_chars": len(warm),
        "downstream_token_chars": len(downstream),
        "minutes": (time.perf_counter() - started) / 60,
        "points": points,
    }


def at(section: dict[str, Any], users: int) -> float | None:
    for point in section["points"]:
        if point["users"] >= users:
            return float(point["rss_mib"])
    return None


def table(section: dict[str, Any]) -> str:
    lines = [
        "| users arrived | RSS above start | verified-token cache | On-Behalf-Of cache "
        "| key memo |",
        "|---|---|---|---|---|",
    ]
    for p in section["points"]:
        lines.append(
            f"| {p['users']:,} | {p['rss_mib']:,.0f} MiB | {p['verified_entries']:,} | "
            f"{p['obo_entries']:,} | {p['memo_entries']:,} |"
        )
    return "\n".join(lines)


def chart(section: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    xs = [p["users"] for p in section["points"]]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.plot(xs, [p["rss_mib"] for p in section["points"]], marker="o", label="RSS above start")
    ax.set_xlabel("users arrived (each once, a new token)")
    ax.set_ylabel("MiB")
    ax.set_title("A middle tier on default settings: memory while new users keep arriving")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--users", type=int)
    parser.add_argument("--step", type=int)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    users = args.users or (30_000 if args.quick else 250_000)
    step = args.step or (5_000 if args.quick else 25_000)
    with h.bench_context(quick=args.quick) as bench:
        section = asyncio.run(run(bench, users=users, step=step))
    print(table(section))
    if args.json:
        h.write_json(args.json, {"machine": h.machine(), "memory": section})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
