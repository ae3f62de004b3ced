"""The chain: client -> Original API (middle tier) -> Downstream API, each tier its own process.

Variants (the same echo handlers; only authentication and the token for the downstream differ):

  no auth     neither tier checks anything; the Original calls the Downstream with no token
  floors      no auth with a no-op client interceptor on the Original's channel (grpc.aio's
              interceptor machinery); the same plus a no-op server interceptor on both tiers
              (what merely having interceptors costs, before any of them does anything); and
              both tiers with server_bench's floor interceptor
              (handler rebuilt, contextvar, token looked up) plus a client interceptor that
              attaches a ready token per user: the least any design with grpc_obo's contract
              costs, with one user or 1,000 (whose distinct tokens HPACK cannot index)
  grpc_obo    both tiers validate with grpc_obo; the Original calls through OnBehalfOf's channel
              (one On-Behalf-Of exchange per user, then its token cache)
  MSAL        both tiers validate with a naive per-call PyJWT interceptor; the Original calls
              msal's `acquire_token_on_behalf_of` on every call (MSAL never reads its cache for
              OBO), in a 32-thread pool
  azure-identity   the same validation; the Original builds an `azure.identity.aio.
              OnBehalfOfCredential` per request (one user assertion per instance, its documented
              use) and calls `get_token`

Layout: the Original (the bottleneck: it serves and calls) is pinned to CPU 0; the Downstream,
the dev authority (a thread of this driver) and the Go load generator share CPU 1. Reported per
variant: RPS and its ratio to the no-auth chain with the same tokens (median and range over
rotated rounds; every run compared through the no-auth runs just before and after it), CPU per
call of each tier and of the authority, and the On-Behalf-Of exchanges the authority counted.
Then:

  stampede   1,000 concurrent first calls with one fresh user token (never seen by any tier),
             the authority answering in 20 ms: how many exchanges each variant makes
  latency    the authority slowed to 0 / 20 / 200 ms per request (DevAuthority.faults.latency):
             p50/p99 of the chain for grpc_obo against MSAL-on-every-call, 8 calls in flight,
             steady state (1,000 users whose tokens were seen before) and first calls (fresh
             tokens)

Run: .venv/bin/python benchmarks/chain_bench.py [--quick] [--rounds N] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import functools
import importlib.util
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h
import grpc
from server_bench import Floor, NoOp

import grpc_obo

HAVE_AZURE = importlib.util.find_spec("azure.identity") is not None


class Original(h.echo_pb2_grpc.EchoServicer):
    """The middle tier: answers with what the Downstream answered."""

    served = 0

    def __init__(self, call: Any) -> None:
        self._call = call

    async def UnaryUnary(self, request: Any, context: Any) -> Any:
        if request.text == "cpu":
            return h.echo_pb2.EchoResponse(text=f"{time.process_time()!r} {Original.served}")
        Original.served += 1
        reply = await self._call(request, context)
        return h.echo_pb2.EchoResponse(text=reply.text)


async def _build_original(kind: str, config: dict[str, Any], port: int) -> grpc.aio.Server:
    target = f"127.0.0.1:{port}"
    scope = config["downstream"]["scope"]
    naive = h.NaiveJwt(config["jwks"], config["original"]["audiences"], config["issuers"])
    interceptors: list[Any]
    if kind in ("none", "noop-client", "noop", "floor"):
        client: list[Any] = []
        interceptors = []
        if kind in ("noop-client", "noop"):
            client = [NoOpClient()]
            interceptors = [NoOp()] if kind == "noop" else []
        elif kind == "floor":
            client = [FloorClient(config["floor_tokens"])]
            interceptors = [FloorServer()]
        stub = h.echo_pb2_grpc.EchoStub(grpc.aio.insecure_channel(target, interceptors=client))

        async def call(request: Any, context: Any) -> Any:
            return await stub.UnaryUnary(request)

    elif kind == "grpc_obo":
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
        stub = h.echo_pb2_grpc.EchoStub(obo.channel(target, scopes=[scope]))

        async def call(request: Any, context: Any) -> Any:
            return await stub.UnaryUnary(request)

        interceptors = [grpc_obo.server_interceptor(validator)]
    elif kind == "msal":
        import msal
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=
        session.verify = config["ca_file"]
        session.mount("https://", HTTPAdapter(pool_maxsize=32))
        app = await asyncio.to_thread(
            msal.ConfidentialClientApplication,
            config["original"]["client_id"],
            client_credential=config["original"]["secret"],
            authority=f"{config['authority_host']}/{config['tenant']}",
            instance_discovery=False,
            http_client=session,
        )
        pool = ThreadPoolExecutor(32, thread_name_prefix="msal")
        stub = h.echo_pb2_grpc.EchoStub(grpc.aio.insecure_channel(target))
        loop = asyncio.get_running_loop()

        async def call(request: Any, context: Any) -> Any:
            assertion = h.naive_token.get()
            result = await loop.run_in_executor(
                pool, functools.partial(app.acquire_token_on_behalf_of, assertion, [scope])
            )
            if "access_token" not in result:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "exchange failed")
            metadata = (("authorization", f"Bearer {result['access_token']}"),)
            return await stub.UnaryUnary(request, metadata=metadata)

        interceptors = [naive]
    elif kind == "azure":
        from azure.identity.aio import OnBehalfOfCredential

        stub = h.echo_pb2_grpc.EchoStub(grpc.aio.insecure_channel(target))

        async def call(request: Any, context: Any) -> Any:
            async with OnBehalfOfCredential(
                config["tenant"],
                config["original"]["client_id"],
                client_secret=config["original"]["secret"],
                user_assertion=h.naive_token.get(),
                authority=config["authority_host"],
                connection_verify=config["ca_file"],
            ) as credential:
                access = await credential.get_token(scope)
            metadata = (("authorization", f"Bearer {access.token}"),)
            return await stub.UnaryUnary(request, metadata=metadata)

        interceptors = [naive]
    else:
        raise SystemExit(f"unknown original kind {kind!r}")
    server = grpc.aio.server(interceptors=interceptors)
    h.echo_pb2_grpc.add_EchoServicer_to_server(Original(call), server)
    return server


class NoOpClient(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """What grpc.aio's client interceptor machinery costs before an interceptor does anything."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(details, request)


_incoming: contextvars.ContextVar[str | None] = contextvars.ContextVar("incoming", default=None)


class FloorServer(Floor):
    """server_bench's floor (handler rebuilt once, contextvar, token looked up in a dict keyed by
    the token), also keeping the incoming token for the outbound call, as any OBO design must."""

    def __init__(self) -> None:
        super().__init__("lookup")

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        rebuilt = self._rebuilt.get(details.method)
        if rebuilt is None:
            rebuilt = self._rebuilt[details.method] = self._rebuild(handler)
        for key, value in details.invocation_metadata:
            if key == "authorization":
                token = value.partition(" ")[2]
                if self._seen.get(token) is None:
                    self._seen[token] = rebuilt
                _incoming.set(token)
        return rebuilt


class FloorClient(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """The least a token-attaching client interceptor does: find the downstream token for the
    incoming one (a dict lookup; each new incoming token gets the next of `tokens`, so 1,000
    users send 1,000 distinct tokens downstream as they would), copy the metadata, add it."""

    def __init__(self, tokens: list[str]) -> None:
        self._tokens = [f"Bearer {t}" for t in tokens]
        self._by_incoming: dict[str | None, str] = {}

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        incoming = _incoming.get()
        value = self._by_incoming.get(incoming)
        if value is None:
            value = self._tokens[len(self._by_incoming) % len(self._tokens)]
            self._by_incoming[incoming] = value
        metadata = grpc.aio.Metadata(*(details.metadata or ()), ("authorization", value))
        return await continuation(
            grpc.aio.ClientCallDetails(
                details.method, details.timeout, metadata, details.credentials,
                details.wait_for_ready,
            ),
            request,
        )  # fmt: skip


def serve_original(
    kind: str, config: dict[str, Any], port: int, cpu: int | None, queue: Any, stop: Any
) -> None:
    h.serve_forever(lambda: _build_original(kind, config, port), cpu, queue, stop)


def serve_downstream(
    kind: str, config: dict[str, Any], cpu: int | None, queue: Any, stop: Any
) -> None:
    def build() -> grpc.aio.Server:
        interceptors: list[Any] = []
        if kind == "grpc_obo":
            validator = grpc_obo.TokenValidator(h.validator_options(config, "downstream"))
            interceptors = [grpc_obo.server_interceptor(validator)]
        elif kind == "floor":
            interceptors = [Floor("lookup")]
        elif kind == "noop":
            interceptors = [NoOp()]
        elif kind == "naive":
            interceptors = [
                h.NaiveJwt(config["jwks"], config["downstream"]["audiences"], config["issuers"])
            ]
        server = grpc.aio.server(interceptors=interceptors)
        h.echo_pb2_grpc.add_EchoServicer_to_server(h.Echo(), server)
        return server

    h.serve_forever(build, cpu, queue, stop)


CHAINS = {  # variant: (Original kind, Downstream kind, label)
    "none": ("none", "none", "no auth"),
    "noop-client": ("noop-client", "none", "no auth, a no-op client interceptor"),
    "noop": ("noop", "noop", "no auth, no-op client + server interceptors on both tiers"),
    "floor": ("floor", "floor", "floor: both tiers' floor interceptors, a token per user attached"),
    "grpc_obo": ("grpc_obo", "grpc_obo", "grpc_obo (validation + On-Behalf-Of, cached)"),
    "msal": ("msal", "naive", "MSAL acquire_token_on_behalf_of every call + PyJWT per call"),
    "azure": ("azure", "naive", "azure-identity OnBehalfOfCredential per request + PyJWT"),
}


async def run(
    bench: h.Bench,
    *,
    rounds: int = 9,
    duration: float = 1.2,
    inflight: int = 64,
    conns: int = 4,
    latencies: tuple[float, ...] = (0.0, 0.02, 0.2),
    latency_seconds: float = 5.0,
    first_calls: int = 96,
    stampede: int = 1_000,
) -> dict[str, Any]:
    variants = [v for v in CHAINS if v != "azure" or HAVE_AZURE]
    if not HAVE_AZURE:
        h.log("NOTE: azure-identity is not installed: its variant is skipped")
    combos = [("none", "one"), ("noop-client", "one"), ("noop", "one"), ("floor", "one")]
    combos += [("grpc_obo", "one")]
    combos += [("none", "1k"), ("floor", "1k"), ("grpc_obo", "1k")]
    combos += [(v, "1k") for v in ("msal", "azure") if v in variants]
    authority = bench.authority
    files = {name: bench.tokens(name) for name in ("one", "1k")}
    probe = files["one"].read_text().split()[0]
    probe_down = bench.mint(audience="downstream")
    floor_tokens = [bench.mint(i, audience="downstream") for i in range(h.USERS)]
    config = {**bench.config, "floor_tokens": floor_tokens}
    pinned = h.can_pin() and bench.load.kind == "go"
    h.log(f"chain bench: {len(combos)} variants, {rounds} rounds of {duration} s each")

    def exchanges() -> int:
        return authority.requests.count(grant="obo")

    warm_exchanges: dict[tuple[str, str], int] = {}
    with h.Processes() as processes, contextlib.ExitStack() as stack:
        ports: dict[str, tuple[int, int]] = {}
        for variant in variants:
            original_kind, downstream_kind, _ = CHAINS[variant]
            down = processes.start(
                serve_downstream, downstream_kind, config, h.LOAD_CPU if pinned else None
            )
            up = processes.start(
                serve_original, original_kind, config, down, h.SERVER_CPU if pinned else None
            )
            ports[variant] = (up, down)
        stack.enter_context(h.driver_pinned(pinned))
        offsets = dict.fromkeys(combos, 0)

        async def drive(
            combo: tuple[str, str],
            *,
            seconds: float | None = None,
            calls: int | None = None,
            tokens: Path | None = None,
            load_inflight: int = inflight,
            latency: bool = False,
        ) -> dict[str, Any]:
            up, down = ports[combo[0]]
            up_cpu, up_served = await h.server_state(up, probe)
            down_cpu, down_served = await h.server_state(down, probe_down)
            authority_cpu, before = time.process_time(), exchanges()
            result = await bench.load.run(
                up,
                tokens=tokens or files[combo[1]],
                duration=seconds,
                calls=calls,
                inflight=min(load_inflight, calls or load_inflight),
                conns=conns,
                start=offsets[combo],
                latency=latency,
                timeout=120,
            )
            authority_cpu = time.process_time() - authority_cpu
            made = exchanges() - before
            up_cpu2, up_served2 = await h.server_state(up, probe)
            down_cpu2, down_served2 = await h.server_state(down, probe_down)
            offsets[combo] += result["calls"]
            ok = result["ok"]
            if (
                ok != result["calls"]
                or up_served2 - up_served != ok
                or down_served2 - down_served != ok
            ):
                raise RuntimeError(
                    f"chain {combo}: {ok} of {result['calls']} ok ({result['codes']}); served "
                    f"{up_served2 - up_served} / {down_served2 - down_served}"
                )
            result.update(
                exchanges=made,
                original_cpu_us=(up_cpu2 - up_cpu) / ok * 1e6,
                downstream_cpu_us=(down_cpu2 - down_cpu) / ok * 1e6,
                authority_cpu_us=authority_cpu / ok * 1e6,
            )
            return result

        started = time.perf_counter()
        for combo in combos:  # warm-up: every user's token seen (grpc_obo exchanges them here)
            before = exchanges()
            warm = 2_000 if combo[1] == "1k" else 500
            if combo[0] not in ("none", "grpc_obo"):
                warm = 300
            await drive(combo, calls=warm)
            warm_exchanges[combo] = exchanges() - before
        h.log(f"  warm-up {time.perf_counter() - started:.0f} s")
        results = await h.anchored_rounds(
            combos,
            combos[0],
            rounds,
            lambda combo: drive(combo, seconds=duration),
            keys=("rps",),
            on_round=lambda r: h.log(f"  round {r + 1}/{rounds} done"),
        )

        # -- stampede: 1,000 concurrent first calls with one fresh token ----------------------
        stampedes = []
        authority.faults.latency = 0.02
        try:
            for variant in (v for v in variants if v not in ("noop-client", "noop", "floor")):
                fresh = bench.write_tokens(f"stampede-{variant}", [bench.mint(USER_STAMPEDE)])
                began = time.perf_counter()
                result = await drive(
                    (variant, "1k"), calls=stampede, tokens=fresh, load_inflight=stampede,
                    latency=True,
                )  # fmt: skip
                stampedes.append({
                    "variant": variant, "label": CHAINS[variant][2], "calls": stampede,
                    "ok": result["ok"], "codes": result["codes"],
                    "exchanges": result["exchanges"], "seconds": time.perf_counter() - began,
                    "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
                    "max_ms": result["max_ms"], "authority_latency_ms": 20,
                })  # fmt: skip
                h.log(f"  stampede {variant}: {result['exchanges']} exchange(s)")

            # -- latency with a slow authority ------------------------------------------------
            latency_rows = []
            user = 0
            for level in latencies:
                authority.faults.latency = level
                order = ["grpc_obo", "msal"] if level != 0.0 else ["none", "grpc_obo", "msal"]
                for variant in order:
                    steady = await drive(
                        (variant, "1k"), seconds=latency_seconds, load_inflight=8, latency=True
                    )
                    latency_rows.append(_latency_row(variant, level, "steady", steady))
                    if variant == "none":
                        continue
                    fresh = bench.write_tokens(
                        f"first-{variant}-{level}",
                        [bench.mint((user + i) % h.USERS) for i in range(first_calls)],
                    )
                    user += first_calls
                    first = await drive(
                        (variant, "1k"), calls=first_calls, tokens=fresh, load_inflight=8,
                        latency=True,
                    )  # fmt: skip
                    latency_rows.append(_latency_row(variant, level, "first call", first))
                h.log(f"  latency at {level * 1000:.0f} ms done")
        finally:
            authority.faults.latency = 0.0

    out = []
    for combo in combos:
        runs = results[combo]
        base = results[("none", combo[1])]
        calls = sum(r["calls"] for r in runs)
        out.append({
            "name": f"{combo[0]}@{combo[1]}",
            "variant": combo[0],
            "label": CHAINS[combo[0]][2],
            "users": 1 if combo[1] == "one" else h.USERS,
            "rps": h.spread([r["rps"] for r in runs]),
            "vs_none": h.spread(
                [
                    (r["rps"] / r["anchor_rps"]) / (b["rps"] / b["anchor_rps"])
                    for r, b in zip(runs, base, strict=True)
                ]
            ),
            "original_cpu_us": h.spread([r["original_cpu_us"] for r in runs]),
            "downstream_cpu_us": h.spread([r["downstream_cpu_us"] for r in runs]),
            "authority_cpu_us": h.spread([r["authority_cpu_us"] for r in runs]),
            "calls": calls,
            "exchanges": sum(r["exchanges"] for r in runs),
            "exchanges_per_call": sum(r["exchanges"] for r in runs) / calls,
            "warmup_exchanges": warm_exchanges[combo],
            # per round: RPS, and that of the no-auth runs around it (one user's token)
            "raw_rps": [[round(r["rps"], 1), round(r["anchor_rps"], 1)] for r in runs],
        })  # fmt: skip
    return {
        "layout": "Original on CPU 0; Downstream, dev authority (driver thread) and load on CPU 1"
        if pinned
        else "unpinned",
        "rounds": rounds,
        "duration_s": duration,
        "inflight": inflight,
        "connections": conns,
        "variants": out,
        "stampede": stampedes,
        "latency": latency_rows,
    }


USER_STAMPEDE = h.USERS - 1


def _latency_row(variant: str, level: float, phase: str, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "variant": variant,
        "label": CHAINS[variant][2],
        "authority_ms": round(level * 1000),
        "phase": phase,
        "calls": result["calls"],
        "exchanges": result["exchanges"],
        "p50_ms": result["p50_ms"],
        "p90_ms": result["p90_ms"],
        "p99_ms": result["p99_ms"],
        "max_ms": result["max_ms"],
    }


def tables(section: dict[str, Any]) -> str:
    lines = [
        "| chain | users | RPS vs no-auth chain, median (range) | RPS | Original CPU µs/call "
        "| Downstream CPU µs/call | authority CPU µs/call | exchanges/call (warm-up) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in section["variants"]:
        lines.append(
            f"| {v['label']} | {v['users']:,} | {h.fmt_spread(v['vs_none'])} | "
            f"{v['rps']['median']:,.0f} | {v['original_cpu_us']['median']:.0f} | "
            f"{v['downstream_cpu_us']['median']:.0f} | {v['authority_cpu_us']['median']:.0f} | "
            f"{v['exchanges_per_call']:.3f} ({v['warmup_exchanges']:,}) |"
        )
    lines += [
        "",
        "| stampede: 1,000 concurrent first calls, one fresh token | exchanges | ok "
        "| p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for s in section["stampede"]:
        lines.append(
            f"| {s['label']} | {s['exchanges']:,} | {s['ok']:,} | {s['p50_ms']:.0f} "
            f"| {s['p99_ms']:.0f} |"
        )
    lines += [
        "",
        "| chain latency, 8 in flight | authority | calls | p50 ms | p99 ms | exchanges |",
        "|---|---|---|---|---|---|",
    ]
    for r in section["latency"]:
        lines.append(
            f"| {r['label']}, {r['phase']} | {r['authority_ms']} ms | {r['calls']:,} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['exchanges']:,} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--load", choices=["go", "python"], default="go")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with h.bench_context(quick=args.quick, load=args.load) as bench:
        section = asyncio.run(run(bench, **settings(args.quick, args.rounds, args.duration)))
    print(tables(section))
    if args.json:
        h.write_json(args.json, {"machine": h.machine(), "chain": section})
    return 0


def settings(
    quick: bool, rounds: int | None = None, duration: float | None = None
) -> dict[str, Any]:
    if quick:
        return {"rounds": rounds or 3, "duration": duration or 0.6, "latency_seconds": 1.5,
                "first_calls": 24, "stampede": 1_000}  # fmt: skip
    return {"rounds": rounds or 9, "duration": duration or 1.2}


if __name__ == "__main__":
    raise SystemExit(main())
