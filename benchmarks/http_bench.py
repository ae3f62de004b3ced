"""HTTP downstreams On-Behalf-Of (`OnBehalfOf.http_auth`), in-process client against a small
HTTP server in its own process on loopback.

  cache hit    the same GET through the On-Behalf-Of auth (token cached) vs with a fixed
               `Authorization: Bearer` header on the client: requests per second, ratio per
               round (rounds rotate which variant runs first); target >= 0.95
  first calls  users x concurrent first HTTP calls through one auth: On-Behalf-Of exchanges
               counted at the dev authority, per user; target 1

Run alone: .venv/bin/python benchmarks/http_bench.py [--quick] [--json out.json]
(`benchmarks/run.py` runs it as the `http` section.)
"""

# ruff: noqa: E402
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h
import httpx

import grpc_obo
from grpc_obo.devauthority import DevAuthority

CONCURRENCY = 16


def _serve(queue: Any, stop: Any) -> None:
    """A minimal HTTP API: 200 with a small JSON body, the token not checked (the client's cost
    is what is compared; the server's is the same for both variants)."""
    from aiohttp import web

    async def main() -> None:
        async def whoami(request: web.Request) -> web.Response:
            return web.json_response({"ok": bool(request.headers.get("Authorization"))})

        app = web.Application()
        app.router.add_get("/whoami", whoami)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        queue.put(runner.addresses[0][1])
        await asyncio.to_thread(stop.wait)
        await runner.cleanup()

    asyncio.run(main())


async def _rps(http: httpx.AsyncClient, url: str, requests: int) -> tuple[float, float]:
    """(requests per second, client CPU seconds per request): the server is another process,
    so this process's CPU is the client's (httpx and, for one variant, the auth flow)."""
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            response = await http.get(url)
            if response.status_code != 200:
                raise RuntimeError(f"unexpected status {response.status_code}")

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return requests / (time.perf_counter() - started), (time.process_time() - cpu) / requests


def _options(authority: DevAuthority) -> grpc_obo.ValidatorOptions:
    original = authority.world.app("original")
    return grpc_obo.ValidatorOptions(
        tenant="organizations",
        allowed_tenants=frozenset(t.id for t in authority.world.tenants),
        audiences=frozenset({original.client_id, str(original.app_id_uri)}),
        authority_host=authority.base_url,
        v1_issuer_host=authority.base_url,
        ssl_context=authority.client_ssl_context(),
    )


def _client(authority: DevAuthority) -> grpc_obo.ConfidentialClient:
    original = authority.world.app("original")
    return grpc_obo.ConfidentialClient(
        client_id=original.client_id,
        tenant=authority.tenant_id,
        credential=grpc_obo.ClientCredential.secret(original.secrets[0]),
        authority_host=authority.base_url,
        ca_file=str(authority.ca_file),
    )


async def run(quick: bool = False, rounds: int | None = None) -> dict[str, Any]:
    # Many short rounds: the two variants of a round run seconds apart, so the shared machine's
    # bursts of noise fall on both (the ratio is taken per round, the median over rounds).
    default_rounds, requests = (8, 300) if quick else (40, 500)
    rounds = default_rounds if rounds is None else rounds
    users_count, per_user = (20, 10) if quick else (50, 20)
    ctx = multiprocessing.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(queue, stop), daemon=True)
    server.start()
    port = queue.get(timeout=60)
    url = f"http://127.0.0.1:{port}/whoami"
    result: dict[str, Any] = {"concurrency": CONCURRENCY, "requests": requests}
    try:
        with DevAuthority().running_in_thread() as authority:
            scope = f"{authority.world.app('downstream').app_id_uri}/Data.Read"
            async with grpc_obo.TokenValidator(_options(authority)) as validator:
                alice = await validator.validate(
                    authority.mint_user_token("alice", scopes=["access_as_user"])
                )
                async with grpc_obo.OnBehalfOf(_client(authority)) as obo:
                    with grpc_obo.use_identity(alice):
                        token = (await obo.acquire([scope])).reveal()  # the cache is warm
                        limits = httpx.Limits(max_connections=CONCURRENCY)
                        async with (
                            httpx.AsyncClient(
                                headers={"Authorization": f"Bearer {token}"}, limits=limits
                            ) as fixed,
                            httpx.AsyncClient(
                                auth=obo.http_auth(scopes=[scope]), limits=limits
                            ) as through,
                        ):
                            variants = {"fixed": fixed, "obo": through}
                            for client in variants.values():  # warm connections
                                await _rps(client, url, 200)
                            ratios, cpu_ratios, raw = [], [], []
                            for number in range(rounds):
                                measured: dict[str, tuple[float, float]] = {}
                                for name in h.rotated(list(variants), number):
                                    measured[name] = await _rps(variants[name], url, requests)
                                raw.append(measured)
                                (fixed_rps, fixed_cpu), (obo_rps, obo_cpu) = (
                                    measured["fixed"],
                                    measured["obo"],
                                )
                                ratios.append(obo_rps / fixed_rps)
                                cpu_ratios.append(fixed_cpu / obo_cpu)
                                h.log(
                                    f"round {number + 1}: fixed {fixed_rps:,.0f} req/s "
                                    f"{fixed_cpu * 1e6:,.0f} µs CPU/req, obo {obo_rps:,.0f} "
                                    f"req/s {obo_cpu * 1e6:,.0f} µs CPU/req; ratios "
                                    f"{ratios[-1]:.3f} (req/s), {cpu_ratios[-1]:.3f} (CPU)"
                                )
                result["cache_hit"] = {
                    "ratio": h.spread(ratios),
                    "cpu_ratio": h.spread(cpu_ratios),
                    "raw": raw,
                }

                # Concurrent first calls: every user's calls start together, nothing cached.
                names = [f"bench{i:04d}@contoso.example" for i in range(users_count)]
                for name in names:
                    authority.world.add_user(name)
                identities = [
                    await validator.validate(
                        authority.mint_user_token(name, scopes=["access_as_user"])
                    )
                    for name in names
                ]
                authority.requests.clear()
                async with (
                    grpc_obo.OnBehalfOf(_client(authority), max_workers=8) as fresh,
                    # All calls start at once: most wait for a connection (the default pool
                    # timeout of 5 s is too short on a loaded machine; not what is measured).
                    httpx.AsyncClient(
                        auth=fresh.http_auth(scopes=[scope]), timeout=httpx.Timeout(30.0, pool=None)
                    ) as http,
                ):

                    async def first(identity: grpc_obo.Identity) -> None:
                        with grpc_obo.use_identity(identity):
                            (await http.get(url)).raise_for_status()

                    await asyncio.gather(*(first(i) for i in identities for _ in range(per_user)))
                exchanges = authority.requests.count(grant="obo", ok=True)
                result["first_calls"] = {
                    "users": users_count,
                    "calls_per_user": per_user,
                    "exchanges": exchanges,
                    "exchanges_per_user": exchanges / users_count,
                }
                h.log(
                    f"first calls: {users_count} users x {per_user} concurrent -> {exchanges} "
                    f"exchanges ({exchanges / users_count:.2f} per user)"
                )
    finally:
        stop.set()
        server.join(timeout=10)
    hit = result["cache_hit"]
    h.log(
        f"cache hit: obo / fixed header = {h.fmt_spread(hit['ratio'], 3)} (req/s), "
        f"{h.fmt_spread(hit['cpu_ratio'], 3)} (client CPU per request, fixed / obo)"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rounds", type=int, help="cache-hit rounds (0: first calls only)")
    args = parser.parse_args()
    result = asyncio.run(run(args.quick, args.rounds))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"http": result}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
