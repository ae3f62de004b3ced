"""Validated vs bare grpc.aio server throughput (a script, not a test; about a minute).

Each variant's server runs in its own child process (bare; a no-op interceptor; handlers
rebuilt per call; grpc_obo with a validator that checks nothing; grpc_obo validated with the
verified-token cache; and with the cache off), all started first and kept up, warm. One client
process drives unary echo calls with a fixed number in flight to each in turn, several rounds,
and reads the server's CPU time before and after each run. Reported per variant: client RPC/s,
server CPU per call, and each one's ratio to bare taken within each round (median over rounds,
so the shared machine's drift hits every variant alike). Server CPU per call is the steadier
number where client and server share two cores; bare/variant is the server throughput ratio on a
server-bound machine. Target: validated >= 0.95.

Run: .venv/bin/python benchmarks/server_bench.py [--calls 4000] [--inflight 64] [--rounds 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

import grpc_obo
from grpc_obo.devauthority import DevAuthority
from tests.gen.grpc_obo.testing.v1 import echo_pb2, echo_pb2_grpc


class Echo(echo_pb2_grpc.EchoServicer):
    async def UnaryUnary(self, request: Any, context: Any) -> Any:
        if request.text == "cpu":  # the client reads the server's CPU time around a run
            return echo_pb2.EchoResponse(text=repr(time.process_time()))
        # Reads the identity like a real handler, but answers the same bytes in every variant:
        # the comparison is the interceptor's cost, not a longer response.
        grpc_obo.current_identity()
        return echo_pb2.EchoResponse(text=request.text)


class NoOp(grpc.aio.ServerInterceptor):
    """The floor: what any grpc.aio server interceptor costs before it does anything."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        return await continuation(details)


class Wrapped(grpc.aio.ServerInterceptor):
    """The floor of wrapping: rebuild the handler around the behaviour, read the metadata."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        inner = handler.unary_unary

        async def behavior(request: Any, context: Any) -> Any:
            context.invocation_metadata()
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            behavior, handler.request_deserializer, handler.response_serializer
        )


class FixedIdentity:
    """A validator that checks nothing: isolates the interceptor's own cost from the token's."""

    identity = grpc_obo.Identity(
        tid="7f3a1c2e-5b44-4e1a-9d1c-0c0ffee00001",
        oid="a11ce000-0000-4000-8000-00000000a11c",
        sub="s",
        kind=grpc_obo.IdentityKind.USER,
        token=grpc_obo.SecretToken("x"),
    )

    async def validate(self, token: str) -> grpc_obo.Identity:
        return self.identity


async def _serve(variant: str, config: dict[str, Any], ports: Any, stop: Any) -> None:
    interceptors: list[Any] = []
    if variant == "noop":
        interceptors.append(NoOp())
    elif variant == "wrapped":
        interceptors.append(Wrapped())
    elif variant == "interceptor-only":
        interceptors.append(grpc_obo.server_interceptor(FixedIdentity()))
    elif variant != "bare":
        validator = grpc_obo.TokenValidator(
            grpc_obo.ValidatorOptions(
                tenant=config["tenant"],
                audiences=frozenset(config["audiences"]),
                authority_host=config["authority_host"],
                jwks=config["jwks"],
                verified_cache_size=10_000 if variant == "validated" else 0,
            )
        )
        interceptors.append(grpc_obo.server_interceptor(validator))
    server = grpc.aio.server(interceptors=interceptors)
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ports.put(port)
    await asyncio.to_thread(stop.wait)
    await server.stop(grace=0.5)


def serve(variant: str, config: dict[str, Any], ports: Any, stop: Any) -> None:
    asyncio.run(_serve(variant, config, ports, stop))


async def server_cpu(stub: Any, metadata: Any) -> float:
    """The server process's CPU seconds so far (the handler answers "cpu" with it)."""
    reply = await stub.UnaryUnary(echo_pb2.EchoRequest(text="cpu"), metadata=metadata)
    return float(reply.text)


async def drive(stub: Any, metadata: Any, calls: int, inflight: int) -> tuple[float, float]:
    """(RPC/s seen by the client, server CPU µs per call) for `calls` echo calls."""
    request = echo_pb2.EchoRequest(text="x")
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await stub.UnaryUnary(request, metadata=metadata)

    cpu = await server_cpu(stub, metadata)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    elapsed = time.perf_counter() - started
    cpu = await server_cpu(stub, metadata) - cpu
    return calls / elapsed, cpu / calls * 1e6


async def run_rounds(
    ports: dict[str, int], token: str, calls: int, inflight: int, rounds: int
) -> dict[str, list[tuple[float, float]]]:
    """Every variant once per round, on servers that stay up (warm) for the whole run."""
    metadata = (("authorization", f"Bearer {token}"),)
    variants = list(ports)
    results: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    channels = {v: grpc.aio.insecure_channel(f"127.0.0.1:{ports[v]}") for v in variants}
    try:
        stubs = {v: echo_pb2_grpc.EchoStub(channels[v]) for v in variants}
        for variant in variants:  # warm-up: connection, caches, key set, code paths
            await drive(stubs[variant], metadata, 1000, inflight)
        for round_ in range(rounds):
            # NOTE: each round starts one variant later, so slow drifts of the shared machine
            # do not always land on the same variant; ratios are then taken within a round.
            shift = round_ % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                results[variant].append(await drive(stubs[variant], metadata, calls, inflight))
    finally:
        for channel in channels.values():
            await channel.close()
    return results


def start_servers(
    variants: list[str], config: dict[str, Any]
) -> tuple[dict[str, int], list[Any], Any]:
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    ports: dict[str, int] = {}
    processes = []
    for variant in variants:
        queue = context.Queue()
        process = context.Process(target=serve, args=(variant, config, queue, stop), daemon=True)
        process.start()
        processes.append(process)
        ports[variant] = int(queue.get(timeout=60))
    return ports, processes, stop


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument(
        "--variants",
        default="bare,noop,wrapped,interceptor-only,validated,validated-no-cache",
        help="comma-separated; 'bare' is the baseline and always runs",
    )
    args = parser.parse_args()

    with DevAuthority().running_in_thread() as authority:
        original = authority.world.app("original")
        config = {
            "tenant": authority.tenant_id,
            "audiences": [original.client_id],
            "authority_host": authority.base_url,
            "jwks": authority.jwks(),
        }
        token = authority.mint_user_token("alice")
    json.dumps(config)  # the child gets it pickled; keep it plain data

    variants = ["bare", *(v for v in args.variants.split(",") if v and v != "bare")]
    ports, processes, stop = start_servers(variants, config)
    try:
        results = asyncio.run(run_rounds(ports, token, args.calls, args.inflight, args.rounds))
    finally:
        stop.set()
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()

    def ratio(variant: str, index: int) -> float:
        # bare / variant within each round (higher is better for RPC/s: variant / bare).
        pairs = zip(results["bare"], results[variant], strict=True)
        if index == 0:
            return statistics.median(v[0] / b[0] for b, v in pairs)
        return statistics.median(b[1] / v[1] for b, v in pairs)

    print(f"unary echo, {args.calls} calls, {args.inflight} in flight, {args.rounds} rounds")
    print("ratios are medians of per-round ratios; server CPU per call is the steadier number")
    print("(client and server share the machine's cores), and bare/variant is the server")
    print("throughput ratio on a server-bound machine. Target: validated >= 0.95.")
    header = (
        f"{'variant':<20}{'RPC/s':>9}{'x bare':>8}{'server CPU µs/call':>20}{'bare/variant':>14}"
    )
    print(header)
    for variant in variants:
        rate = statistics.median(r[0] for r in results[variant])
        cpu = statistics.median(r[1] for r in results[variant])
        print(
            f"{variant:<20}{rate:>9,.0f}{ratio(variant, 0):>8.3f}"
            f"{cpu:>20.1f}{ratio(variant, 1):>14.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
