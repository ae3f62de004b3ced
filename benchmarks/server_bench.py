"""Server throughput: grpc_obo beside the alternatives and the floors, in one run.

Every variant's server runs in its own process pinned to CPU 0, all started first and kept up
(warm); the Go load generator (benchmarks/loadgen, grpc-go) runs pinned to CPU 1 with 128 unary
echo calls in flight over 4 connections, so the server is the bottleneck: RPC/s is the server's
throughput. Every variant runs once per round for a fixed time, rounds in rotated order, bare
again after every three variants; each run is compared with the bare runs just before and after
it (median and range over rounds), so the shared machine's drift hits both sides alike. Server
CPU per call comes from the server itself (the echo handler answers "cpu" with its process time
and the calls it served, which also proves every call was accepted).

  bare                 no interceptor (one user's token in the header)
  bare, 1k tokens      no interceptor, 1,000 users' tokens rotating: each header is a new
                       1.2 KB literal (HPACK cannot index them): the floor for "1k" variants
  no-op interceptor    an interceptor that only calls the continuation
  floor ...            the least an interceptor with grpc_obo's contract can do (see Floor;
                       floor+sha256, a SHA-256-keyed cache's floor, runs only when named)
  grpc_obo, checks nothing   grpc_obo's interceptor with a validator that checks nothing
  naive PyJWT          per-call `jwt.decode` (RSA verify every call), claims in a contextvar
  grpc_obo             grpc_obo validating, verified-token cache on (one token / 1,000 users)
  otel instrumentation opentelemetry-instrumentation-grpc's aio server interceptor alone, SDK
                       tracer provider with a batch processor and a no-op exporter
  otel + grpc_obo      the instrumentation first, grpc_obo last; grpc_obo's telemetry on the same
                       SDK providers (metrics: SDK meter provider, in-memory reader) / off (no-op
                       providers: no grpc_obo span or metric; the caller's attributes still go
                       on the instrumentation's span, which grpc_obo does not own)
  otel + floor         the instrumentation, then the floor interceptor with the token lookup
  100k tokens          (full runs) 100,000 distinct tokens rotating: bare, grpc_obo on default
                       settings (verified-token cache: a 256 MiB budget), and with the cache
                       held to 10,000 tokens (the default count before issue 23)

Run: .venv/bin/python benchmarks/server_bench.py [--quick] [--rounds N] [--duration S]
     [--variants name,name] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h
import grpc

import grpc_obo

# -- the variants ---------------------------------------------------------------------------


class NoOp(grpc.aio.ServerInterceptor):
    """What any grpc.aio server interceptor costs before it does anything."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        return await continuation(details)


_FLOOR_VAR: contextvars.ContextVar[object] = contextvars.ContextVar("floor", default=None)


class Floor(grpc.aio.ServerInterceptor):
    """grpc_obo's shape without its work: a handler rebuilt once that scopes a contextvar.

    `work`: "token" also takes the bearer token out of the metadata; "sha256" hashes it too
    (what a cache keyed by the token's SHA-256 needs before its lookup); "lookup" looks it up in
    a dict keyed by the token string itself (a cache keyed by the token: Python hashes the
    string, a new object on every call, and compares it on a hit).
    """

    def __init__(self, work: str = "") -> None:
        self._work = work
        self._rebuilt: dict[str, Any] = {}
        self._seen: dict[str, object] = {}

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        rebuilt = self._rebuilt.get(details.method)
        if rebuilt is None:
            rebuilt = self._rebuilt[details.method] = self._rebuild(handler)
        if self._work:
            for key, value in details.invocation_metadata:
                if key == "authorization":
                    token = value.partition(" ")[2]
                    if self._work == "sha256":
                        hashlib.sha256(token.encode()).digest()
                    elif self._work == "lookup" and self._seen.get(token) is None:
                        self._seen[token] = rebuilt
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


def _checks_nothing(config: dict[str, Any]) -> grpc_obo.TokenValidator:
    """A validator that checks nothing: isolates the interceptor's own cost from the token's.

    NOTE: a TokenValidator whose synchronous `cached` lookup (what the interceptor tries first
    for its own validator) answers a fixed identity for any token, without hashing or looking
    anything up. A validator of another class would go through `await validate()` and the
    telemetry of a validation that did work on every call: not the interceptor's floor.
    """

    identity = grpc_obo.Identity(
        tid=config["tenant"],
        oid="a11ce000-0000-4000-8000-00000000a11c",
        sub="s",
        kind=grpc_obo.IdentityKind.USER,
        token=grpc_obo.SecretToken("x"),
    )

    class ChecksNothing(grpc_obo.TokenValidator):
        def cached(self, token: str) -> grpc_obo.Identity | None:
            return identity

    return ChecksNothing(h.validator_options(config, "original"))


def _sdk() -> tuple[Any, Any]:
    """An SDK tracer provider exporting to nowhere (batch processor, as deployed) and an SDK
    meter provider with an in-memory reader (instruments record as deployed; nothing exports)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Discard()))
    return tracer_provider, MeterProvider(metric_readers=[InMemoryMetricReader()])


def _interceptors(kind: str, config: dict[str, Any]) -> list[Any]:
    if kind == "bare":
        return []
    if kind == "noop":
        return [NoOp()]
    if kind in ("floor", "floor+token", "floor+sha256", "floor+lookup"):
        return [Floor(kind.partition("+")[2])]
    if kind == "interceptor-only":
        return [grpc_obo.server_interceptor(_checks_nothing(config))]
    if kind == "pyjwt":
        return [h.NaiveJwt(config["jwks"], config["original"]["audiences"], config["issuers"])]

    def validator(**extra: Any) -> grpc_obo.TokenValidator:
        return grpc_obo.TokenValidator(h.validator_options(config, "original", **extra))

    if kind == "grpc_obo":
        return [grpc_obo.server_interceptor(validator())]
    if kind == "grpc_obo-10k":
        return [grpc_obo.server_interceptor(validator(verified_cache_size=10_000))]
    if kind == "grpc_obo-nocache":
        return [grpc_obo.server_interceptor(validator(verified_cache_size=0))]
    from opentelemetry import metrics, trace
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    tracer_provider, meter_provider = _sdk()
    instrumentation = aio_server_interceptor(tracer_provider=tracer_provider)
    if kind == "otel":
        return [instrumentation]
    if kind == "otel+floor":
        return [instrumentation, Floor("lookup")]
    if kind == "otel+grpc_obo":
        telemetry = grpc_obo.Telemetry(
            tracer_provider=tracer_provider, meter_provider=meter_provider
        )
    elif kind == "otel+grpc_obo-off":
        telemetry = grpc_obo.Telemetry(
            tracer_provider=trace.NoOpTracerProvider(), meter_provider=metrics.NoOpMeterProvider()
        )
    else:
        raise SystemExit(f"unknown server kind {kind!r}")
    return [instrumentation, grpc_obo.server_interceptor(validator(), telemetry=telemetry)]


def serve(kind: str, config: dict[str, Any], cpu: int | None, queue: Any, stop: Any) -> None:
    def build() -> grpc.aio.Server:
        server = grpc.aio.server(interceptors=_interceptors(kind, config))
        h.echo_pb2_grpc.add_EchoServicer_to_server(h.Echo(), server)
        return server

    h.serve_forever(build, cpu, queue, stop)


# name, server kind, token set, the ratio's own baseline, description; group for the tables
VARIANTS: list[dict[str, Any]] = [
    {"name": "bare", "kind": "bare", "tokens": "one", "group": "server",
     "label": "bare grpc.aio (no interceptor)"},
    {"name": "bare@1k", "kind": "bare", "tokens": "1k", "group": "server",
     "label": "bare, 1,000 users' tokens rotating"},
    {"name": "noop", "kind": "noop", "tokens": "one", "group": "server",
     "label": "no-op interceptor"},
    {"name": "pyjwt", "kind": "pyjwt", "tokens": "one", "group": "server",
     "label": "naive PyJWT interceptor (RSA verify per call)"},
    {"name": "grpc_obo", "kind": "grpc_obo", "tokens": "one", "group": "server",
     "label": "grpc_obo, one token"},
    {"name": "grpc_obo@1k", "kind": "grpc_obo", "tokens": "1k", "group": "server",
     "baseline": "bare@1k", "label": "grpc_obo, 1,000 users' tokens rotating"},
    {"name": "floor", "kind": "floor", "tokens": "one", "group": "floor",
     "label": "floor: handler rebuilt once, contextvar set around its run"},
    {"name": "floor+token", "kind": "floor+token", "tokens": "one", "group": "floor",
     "label": "floor + bearer token taken out of the metadata"},
    {"name": "floor+sha256", "kind": "floor+sha256", "tokens": "one", "group": "floor",
     "extra": True, "label": "floor + token + its SHA-256"},
    {"name": "floor+lookup", "kind": "floor+lookup", "tokens": "one", "group": "floor",
     "label": "floor + token looked up in a dict keyed by the token string"},
    {"name": "interceptor-only", "kind": "interceptor-only", "tokens": "one", "group": "floor",
     "label": "grpc_obo interceptor, validator that checks nothing"},
    {"name": "otel", "kind": "otel", "tokens": "one", "group": "telemetry",
     "label": "otel instrumentation alone (SDK, no-op exporter)"},
    {"name": "otel+grpc_obo", "kind": "otel+grpc_obo", "tokens": "one", "group": "telemetry",
     "baseline": "otel", "label": "otel instrumentation + grpc_obo, grpc_obo telemetry on"},
    {"name": "otel+floor", "kind": "otel+floor", "tokens": "one", "group": "telemetry",
     "baseline": "otel",
     "label": "otel instrumentation + floor (handler rebuilt, contextvar, token looked up)"},
    {"name": "otel+grpc_obo-off", "kind": "otel+grpc_obo-off", "tokens": "one",
     "group": "telemetry", "baseline": "otel",
     "label": "otel instrumentation + grpc_obo, grpc_obo telemetry off (no-op providers)"},
    {"name": "bare@100k", "kind": "bare", "tokens": "100k", "group": "scale", "full": True,
     "label": "bare, 100,000 distinct tokens rotating"},
    {"name": "grpc_obo@100k", "kind": "grpc_obo", "tokens": "100k", "group": "scale",
     "full": True, "baseline": "bare@100k",
     "label": "grpc_obo, 100,000 tokens, default settings (256 MiB verified-token cache)"},
    {"name": "grpc_obo@100k-10k", "kind": "grpc_obo-10k", "tokens": "100k",
     "group": "scale", "full": True, "baseline": "bare@100k",
     "label": "grpc_obo, 100,000 tokens, verified_cache_size=10,000 (every call verifies)"},
]  # fmt: skip
BY_NAME = {v["name"]: v for v in VARIANTS}
# Many short rounds rather than a few long ones, bare between every three variants (see
# h.anchored_rounds): on a shared machine the noise comes in bursts, and a median over a dozen
# ratios to neighbouring bare runs shrugs off a burst that hits a few.
FULL = {"rounds": 12, "duration": 1.2}
QUICK = {"rounds": 3, "duration": 0.6}


def _normalized(entry: dict[str, Any]) -> tuple[float, float]:
    """(RPS, bare-CPU-per-call / CPU-per-call) of one run relative to its neighbouring bare runs."""
    return entry["rps"] / entry["anchor_rps"], entry["anchor_cpu_us"] / entry["cpu_us"]


def _ratios(
    results: dict[str, list[dict[str, Any]]], name: str, base: str
) -> dict[str, dict[str, float]]:
    pairs = [
        (_normalized(v), _normalized(b)) for v, b in zip(results[name], results[base], strict=True)
    ]
    return {
        "rps": h.spread([v[0] / b[0] for v, b in pairs]),
        "cpu": h.spread([v[1] / b[1] for v, b in pairs]),  # CPU per call: base / variant
    }


async def run(
    bench: h.Bench,
    *,
    names: list[str] | None = None,
    rounds: int = 12,
    duration: float = 1.2,
    inflight: int = 128,
    conns: int = 4,
) -> dict[str, Any]:
    chosen = [
        v for v in VARIANTS
        if (names is None and not v.get("extra") and (not v.get("full") or not bench.quick))
        or (names is not None and v["name"] in names)
    ]  # fmt: skip
    if "bare" not in [v["name"] for v in chosen]:
        chosen.insert(0, BY_NAME["bare"])
    for variant in chosen:  # baselines always run
        base = variant.get("baseline")
        if base and base not in [v["name"] for v in chosen]:
            chosen.append(BY_NAME[base])
    token_files = {v["tokens"]: bench.tokens(v["tokens"]) for v in chosen}
    token_counts = {name: sum(1 for _ in path.open()) for name, path in token_files.items()}
    probe = token_files["one"].read_text().split()[0]  # for the "cpu" calls
    pinned = h.can_pin() and bench.load.kind == "go"
    config = bench.config
    h.log(f"server bench: {len(chosen)} variants, {rounds} rounds of {duration} s each")
    with h.Processes() as processes, contextlib.ExitStack() as stack:
        ports = {
            v["name"]: processes.start(serve, v["kind"], config, h.SERVER_CPU if pinned else None)
            for v in chosen
        }
        stack.enter_context(h.driver_pinned(pinned))  # driver and loader stay off CPU 0
        offsets = dict.fromkeys(ports, 0)

        async def drive(
            name: str, *, seconds: float | None, calls: int | None = None
        ) -> dict[str, float]:
            variant = BY_NAME[name]
            port = ports[name]
            cpu, served = await h.server_state(port, probe)
            result = await bench.load.run(
                port,
                tokens=token_files[variant["tokens"]],
                duration=seconds,
                calls=calls,
                inflight=inflight,
                conns=conns,
                start=offsets[name],
            )
            cpu_after, served_after = await h.server_state(port, probe)
            offsets[name] += result["calls"]
            if result["ok"] != result["calls"] or served_after - served != result["ok"]:
                raise RuntimeError(
                    f"{name}: {result['ok']} of {result['calls']} calls ok ({result['codes']}), "
                    f"handler served {served_after - served}"
                )
            return {"rps": result["rps"], "cpu_us": (cpu_after - cpu) / result["ok"] * 1e6}

        started = time.perf_counter()
        for variant in chosen:  # warm-up: connections, caches (every token once), code paths
            tokens = token_counts[variant["tokens"]]
            cached = variant["kind"].startswith(("grpc_obo", "otel+grpc_obo"))
            capacity = 10_000 if variant["kind"] == "grpc_obo-10k" else 120_000
            warm = tokens + 2_000 if cached and tokens <= capacity else 3_000
            if tokens > 10_000:
                h.log(f"  warming {variant['name']} with {warm:,} calls ...")
            await drive(variant["name"], seconds=None, calls=warm)
        h.log(f"  warm-up {time.perf_counter() - started:.0f} s")
        results = await h.anchored_rounds(
            [v["name"] for v in chosen],
            "bare",
            rounds,
            lambda name: drive(name, seconds=duration),
            keys=("rps", "cpu_us"),
            on_round=lambda r: h.log(f"  round {r + 1}/{rounds} done"),
        )

    out: list[dict[str, Any]] = []
    for variant in chosen:
        name = variant["name"]
        entry: dict[str, Any] = {
            "name": name,
            "label": variant["label"],
            "group": variant["group"],
            "tokens": token_counts[variant["tokens"]],
            "rps": h.spread([r["rps"] for r in results[name]]),
            "cpu_us": h.spread([r["cpu_us"] for r in results[name]]),
            "vs_bare": _ratios(results, name, "bare"),
            # per round: RPS, CPU µs/call, and the same for the bare runs around it
            "raw": [
                [round(r[k], 2) for k in ("rps", "cpu_us", "anchor_rps", "anchor_cpu_us")]
                for r in results[name]
            ],
        }
        if variant.get("baseline"):
            entry["baseline"] = variant["baseline"]
            entry["vs_baseline"] = _ratios(results, name, variant["baseline"])
        out.append(entry)
    return {
        "load": bench.load.kind,
        "pinned": pinned,
        "rounds": rounds,
        "duration_s": duration,
        "inflight": inflight,
        "connections": conns,
        "variants": out,
    }


def table(section: dict[str, Any], groups: tuple[str, ...]) -> str:
    """Markdown: RPS ratio to bare (and to the variant's own baseline), server CPU per call."""
    lines = [
        "| server | RPS vs bare, median (range) | vs own baseline | server CPU µs/call | RPS |",
        "|---|---|---|---|---|",
    ]
    for v in section["variants"]:
        if v["group"] not in groups:
            continue
        own = (
            f"{h.fmt_spread(v['vs_baseline']['rps'])} vs {v['baseline']}"
            if "vs_baseline" in v
            else ""
        )
        lines.append(
            f"| {v['label']} | {h.fmt_spread(v['vs_bare']['rps'])} | {own} | "
            f"{v['cpu_us']['median']:.0f} | {v['rps']['median']:,.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer, shorter rounds")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--duration", type=float, help="seconds per variant per round")
    parser.add_argument("--variants", help="comma-separated names (bare always runs)")
    parser.add_argument("--load", choices=["go", "python"], default="go")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rounds = args.rounds or (QUICK if args.quick else FULL)["rounds"]
    duration = args.duration or (QUICK if args.quick else FULL)["duration"]
    names = args.variants.split(",") if args.variants else None
    with h.bench_context(quick=args.quick, load=args.load) as bench:
        section = asyncio.run(run(bench, names=names, rounds=rounds, duration=duration))
    print(table(section, ("server", "floor", "telemetry", "scale")))
    if args.json:
        h.write_json(args.json, {"machine": h.machine(), "server": section})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
