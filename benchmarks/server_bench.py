"""Validated vs bare grpc.aio server throughput (a script, not a test; two to four minutes).

Each variant's server runs in its own child process, all started first and kept up, warm:

  bare                no interceptor
  noop                an interceptor that only calls the continuation
  floor               the least an interceptor with grpc_obo's contract can do: return the
                      method's handler rebuilt once, whose wrapper sets a contextvar for the
                      handler's run and resets it after (no token work at all)
  floor+token         floor, plus taking the bearer token out of the metadata as bytes
  floor+sha256        floor+token, plus its SHA-256: the least a verified-token cache keyed by
                      SHA-256 can cost (the dict lookup itself is left out)
  interceptor-only    grpc_obo with a validator that checks nothing
  validated           grpc_obo validating the token, verified-token cache on
  validated-no-cache  the same, cache off (an RSA verify per call)

The load is unary echo calls with a fixed number in flight, several rounds in rotated order,
ratios to bare taken within each round (median over rounds), so the shared machine's drift hits
every variant alike. Two load generators:

  --load h2load (the default when `h2load` is installed: Debian package nghttp2-client)
      the server is pinned to one CPU and h2load, a C client, to another, so the server is the
      bottleneck: RPC/s is the server's throughput.
  --load python
      a grpc.aio client in this process; client and server share the CPUs, so the server's
      CPU time per call is the number to read.

Both report the server's CPU time per call (the handler answers "cpu" with its process time and
the number of calls it served, which also proves every call was accepted). Target: validated
>= 0.95 of bare.

Run: .venv/bin/python benchmarks/server_bench.py [--load h2load|python] [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

import grpc_obo
from grpc_obo.devauthority import DevAuthority
from tests.gen.grpc_obo.testing.v1 import echo_pb2, echo_pb2_grpc

ECHO_METHOD = "/grpc_obo.testing.v1.Echo/UnaryUnary"
SERVER_CPU, LOAD_CPU = 0, 1  # h2load mode: one CPU each


class Echo(echo_pb2_grpc.EchoServicer):
    served = 0

    async def UnaryUnary(self, request: Any, context: Any) -> Any:
        if request.text == "cpu":  # the driver reads CPU time and calls served around a run
            return echo_pb2.EchoResponse(text=f"{time.process_time()!r} {Echo.served}")
        Echo.served += 1
        # Reads the identity like a real handler, but answers the same bytes in every variant:
        # the comparison is the interceptor's cost, not a longer response.
        grpc_obo.current_identity()
        return echo_pb2.EchoResponse(text=request.text)


class NoOp(grpc.aio.ServerInterceptor):
    """What any grpc.aio server interceptor costs before it does anything."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        return await continuation(details)


_FLOOR_VAR: contextvars.ContextVar[object] = contextvars.ContextVar("floor", default=None)


class Floor(grpc.aio.ServerInterceptor):
    """grpc_obo's shape without its work: a handler rebuilt once that scopes a contextvar.

    With `token`, also takes the token out of the metadata as bytes; with `sha256`, hashes it
    too: what a SHA-256-keyed cache lookup needs before the dict lookup itself.
    """

    def __init__(self, *, token: bool = False, sha256: bool = False) -> None:
        self._token = token or sha256
        self._sha256 = sha256
        self._rebuilt: dict[str, Any] = {}

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        rebuilt = self._rebuilt.get(details.method)
        if rebuilt is None:
            rebuilt = self._rebuilt[details.method] = self._rebuild(handler)
        if self._token:
            for key, value in details.invocation_metadata:
                if key == "authorization":
                    token = value.partition(" ")[2].encode()
                    if self._sha256:
                        hashlib.sha256(token).digest()  # as the validator does
        return rebuilt

    @staticmethod
    def _rebuild(handler: Any) -> Any:
        inner = handler.unary_unary

        async def behavior(request: Any, context: Any) -> Any:
            reset = _FLOOR_VAR.set(1)
            try:
                return await inner(request, context)
            finally:
                _FLOOR_VAR.reset(reset)

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


VARIANTS = [
    "bare",
    "noop",
    "floor",
    "floor+token",
    "floor+sha256",
    "interceptor-only",
    "validated",
    "validated-no-cache",
]


def _interceptors(variant: str, config: dict[str, Any]) -> list[Any]:
    if variant == "bare":
        return []
    if variant == "noop":
        return [NoOp()]
    if variant in ("floor", "floor+token", "floor+sha256"):
        return [Floor(token=variant == "floor+token", sha256=variant == "floor+sha256")]
    if variant == "interceptor-only":
        return [grpc_obo.server_interceptor(FixedIdentity())]
    if variant not in ("validated", "validated-no-cache"):
        raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    validator = grpc_obo.TokenValidator(
        grpc_obo.ValidatorOptions(
            tenant=config["tenant"],
            audiences=frozenset(config["audiences"]),
            authority_host=config["authority_host"],
            jwks=config["jwks"],
            verified_cache_size=10_000 if variant == "validated" else 0,
        )
    )
    return [grpc_obo.server_interceptor(validator)]


async def _serve(variant: str, config: dict[str, Any], ports: Any, stop: Any) -> None:
    server = grpc.aio.server(interceptors=_interceptors(variant, config))
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ports.put(port)
    await asyncio.to_thread(stop.wait)
    await server.stop(grace=0.5)


def serve(variant: str, config: dict[str, Any], ports: Any, stop: Any, cpu: int | None) -> None:
    if cpu is not None:  # before grpc starts its threads: they inherit the mask
        os.sched_setaffinity(0, {cpu})
    asyncio.run(_serve(variant, config, ports, stop))


async def server_state(stub: Any, metadata: Any) -> tuple[float, int]:
    """(the server process's CPU seconds so far, echo calls it has served)."""
    reply = await stub.UnaryUnary(echo_pb2.EchoRequest(text="cpu"), metadata=metadata)
    cpu, served = reply.text.split()
    return float(cpu), int(served)


class PythonLoad:
    """A grpc.aio client in this process, `inflight` calls at a time."""

    def __init__(self, inflight: int) -> None:
        self.inflight = inflight

    async def run(self, stub: Any, port: int, metadata: Any, calls: int) -> float:
        request = echo_pb2.EchoRequest(text="x")
        remaining = calls

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await stub.UnaryUnary(request, metadata=metadata)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(self.inflight)))
        return calls / (time.perf_counter() - started)


class H2Load:
    """h2load (nghttp2's C load generator) speaking gRPC: raw HTTP/2 POSTs of one framed message."""

    def __init__(self, inflight: int, token: str, workdir: str) -> None:
        self.connections = 4
        self.streams = max(1, inflight // self.connections)
        self.token = token
        body = echo_pb2.EchoRequest(text="x").SerializeToString()
        self.body = str(Path(workdir) / "request.bin")
        # A gRPC message on the wire: no compression flag, 4-byte big-endian length, payload.
        Path(self.body).write_bytes(b"\0" + len(body).to_bytes(4, "big") + body)

    async def run(self, stub: Any, port: int, metadata: Any, calls: int) -> float:
        # NOTE: the token is on h2load's command line: a dev-authority token minted for this
        # run, good only against this run's servers; h2load's output never echoes headers.
        command = [
            "h2load", "-n", str(calls), "-c", str(self.connections), "-m", str(self.streams),
            "-t", "1", "-d", self.body,
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-H", f"authorization: Bearer {self.token}",
            f"http://127.0.0.1:{port}{ECHO_METHOD}",
        ]  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out = (await process.communicate())[0].decode(errors="replace")
        rate = re.search(r"finished in \S+, ([\d.]+) req/s", out)
        if rate is None or f"{calls} succeeded" not in out:
            raise RuntimeError(f"h2load did not finish every call:\n{out[-1500:]}")
        return float(rate.group(1))


async def drive(load: Any, stub: Any, port: int, metadata: Any, calls: int) -> tuple[float, float]:
    """(RPC/s, server CPU µs per call) for `calls` echo calls, each checked as served."""
    cpu, served = await server_state(stub, metadata)
    rate = await load.run(stub, port, metadata, calls)
    cpu_after, served_after = await server_state(stub, metadata)
    if served_after - served != calls:  # h2load sees HTTP 200 even for a refused gRPC call
        raise RuntimeError(f"the handler served {served_after - served} of {calls} calls")
    return rate, (cpu_after - cpu) / calls * 1e6


async def run_rounds(
    load: Any, ports: dict[str, int], token: str, calls: int, rounds: int
) -> dict[str, list[tuple[float, float]]]:
    """Every variant once per round, on servers that stay up (warm) for the whole run."""
    metadata = (("authorization", f"Bearer {token}"),)
    variants = list(ports)
    results: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    channels = {v: grpc.aio.insecure_channel(f"127.0.0.1:{ports[v]}") for v in variants}
    try:
        stubs = {v: echo_pb2_grpc.EchoStub(channels[v]) for v in variants}
        for variant in variants:  # warm-up: connections, caches, key set, code paths
            await drive(load, stubs[variant], ports[variant], metadata, max(1000, calls // 4))
        for round_ in range(rounds):
            # NOTE: each round starts one variant later, so slow drifts of the shared machine
            # do not always land on the same variant; ratios are then taken within a round.
            shift = round_ % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                results[variant].append(
                    await drive(load, stubs[variant], ports[variant], metadata, calls)
                )
    finally:
        for channel in channels.values():
            await channel.close()
    return results


def start_servers(
    variants: list[str], config: dict[str, Any], cpu: int | None = None
) -> tuple[dict[str, int], list[Any], Any]:
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    ports: dict[str, int] = {}
    processes = []
    for variant in variants:
        queue = context.Queue()
        process = context.Process(
            target=serve, args=(variant, config, queue, stop, cpu), daemon=True
        )
        process.start()
        processes.append(process)
        ports[variant] = int(queue.get(timeout=60))
    return ports, processes, stop


def main() -> int:
    parser = argparse.ArgumentParser()
    can_pin = hasattr(os, "sched_setaffinity") and {SERVER_CPU, LOAD_CPU} <= os.sched_getaffinity(0)
    default_load = "h2load" if shutil.which("h2load") and can_pin else "python"
    parser.add_argument("--load", choices=["h2load", "python"], default=default_load)
    parser.add_argument("--calls", type=int, help="per run (h2load 20000, python 4000)")
    parser.add_argument("--inflight", type=int, help="h2load 128, python 64")
    parser.add_argument("--rounds", type=int, help="h2load 8, python 12")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated; 'bare' is the baseline and always runs",
    )
    args = parser.parse_args()
    h2 = args.load == "h2load"
    if h2 and not (shutil.which("h2load") and can_pin):
        raise SystemExit("--load h2load needs h2load (nghttp2-client) and CPUs 0 and 1")
    calls = args.calls or (20_000 if h2 else 4_000)
    inflight = args.inflight or (128 if h2 else 64)
    rounds = args.rounds or (8 if h2 else 12)

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
    ports, processes, stop = start_servers(variants, config, SERVER_CPU if h2 else None)
    try:
        with tempfile.TemporaryDirectory() as workdir:
            if h2:
                os.sched_setaffinity(0, {LOAD_CPU})  # this driver and h2load stay off the server's
            load = H2Load(inflight, token, workdir) if h2 else PythonLoad(inflight)
            results = asyncio.run(run_rounds(load, ports, token, calls, rounds))
    finally:
        stop.set()
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()

    def ratio(variant: str, index: int) -> float:
        pairs = zip(results["bare"], results[variant], strict=True)
        if index == 0:  # RPC/s: variant / bare
            return statistics.median(v[0] / b[0] for b, v in pairs)
        return statistics.median(b[1] / v[1] for b, v in pairs)  # CPU per call: bare / variant

    where = (
        f"h2load on CPU {LOAD_CPU}, each server pinned to CPU {SERVER_CPU}: RPC/s is the server's"
        " throughput"
        if h2
        else "grpc.aio client sharing the CPUs with the server: read server CPU per call"
    )
    print(f"unary echo, {calls} calls per run, {inflight} in flight, {rounds} rounds; {where}")
    print("ratios: medians of per-round ratios to bare. Target: validated >= 0.95.")
    print(f"{'variant':<20}{'RPC/s':>9}{'x bare':>8}{'server CPU µs/call':>20}", end="")
    print(f"{'bare/variant':>14}")
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
