"""Validated vs bare grpc.aio server throughput (a script, not a test; about half a minute).

The server runs in a child process (bare, validated with the verified-token cache, validated
with the cache off); one client process drives unary echo calls with a fixed number in flight.
Reported per variant, median of several alternating rounds in one run (so the machine's noise
hits every variant alike): client-side RPC/s and its ratio to bare, and the server process's CPU
time per call, whose bare/variant ratio is the server throughput ratio on a server-bound machine
and much steadier here, where client and server share two cores. Target: validated >= 0.95.

Run: .venv/bin/python benchmarks/server_bench.py [--calls 4000] [--inflight 64] [--rounds 3]
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

CPU_MARK: list[float] = []


class Echo(echo_pb2_grpc.EchoServicer):
    async def UnaryUnary(self, request: Any, context: Any) -> Any:
        if request.text == "mark":  # the client's warm-up is over: start counting server CPU
            CPU_MARK.append(time.process_time())
        identity = grpc_obo.current_identity()
        return echo_pb2.EchoResponse(
            text=request.text, principal=identity.principal if identity else ""
        )


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
    ports.put(time.process_time() - CPU_MARK[-1] if CPU_MARK else float("nan"))
    await server.stop(grace=0.5)


def serve(variant: str, config: dict[str, Any], ports: Any, stop: Any) -> None:
    asyncio.run(_serve(variant, config, ports, stop))


async def drive(port: int, token: str, calls: int, inflight: int) -> float:
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        request = echo_pb2.EchoRequest(text="x")
        for _ in range(200):  # warm-up: connection, caches, key set
            await stub.UnaryUnary(request, metadata=metadata)
        remaining = calls

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await stub.UnaryUnary(request, metadata=metadata)

        await stub.UnaryUnary(echo_pb2.EchoRequest(text="mark"), metadata=metadata)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        return calls / (time.perf_counter() - started)


def measure(
    variant: str, config: dict[str, Any], token: str, calls: int, inflight: int
) -> tuple[float, float]:
    """(RPC/s seen by the client, server CPU µs per call)."""
    context = multiprocessing.get_context("spawn")
    ports, stop = context.Queue(), context.Event()
    process = context.Process(target=serve, args=(variant, config, ports, stop), daemon=True)
    process.start()
    try:
        port = ports.get(timeout=30)
        rate = asyncio.run(drive(port, token, calls, inflight))
        stop.set()
        cpu = float(ports.get(timeout=30))
        return rate, cpu / calls * 1e6
    finally:
        stop.set()
        process.join(timeout=10)
        if process.is_alive():
            process.kill()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
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

    variants = ("bare", *(v for v in args.variants.split(",") if v and v != "bare"))
    rates: dict[str, list[float]] = {v: [] for v in variants}
    cpus: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            rate, cpu = measure(variant, config, token, args.calls, args.inflight)
            rates[variant].append(rate)
            cpus[variant].append(cpu)
    bare_rate = statistics.median(rates["bare"])
    bare_cpu = statistics.median(cpus["bare"])
    print(f"unary echo, {args.calls} calls, {args.inflight} in flight, {args.rounds} rounds")
    print("server CPU per call is the steadier number: the client shares the machine's 2 cores")
    header = (
        f"{'variant':<20}{'RPC/s':>9}{'x bare':>8}{'server CPU µs/call':>20}{'bare/variant':>14}"
    )
    print(header)
    for variant in variants:
        rate, cpu = statistics.median(rates[variant]), statistics.median(cpus[variant])
        print(
            f"{variant:<20}{rate:>9,.0f}{rate / bare_rate:>8.3f}{cpu:>20.1f}{bare_cpu / cpu:>14.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
