"""What the benchmarks share: the load generator, the dev authority and its tokens, server
processes pinned to a CPU, the echo servicer, a naive PyJWT interceptor, and statistics.

Nothing here is a test: it measures, it asserts only that every call was answered and accepted
(the echo handler counts the calls it served, so a call refused by an interceptor shows up).
Everything listens on 127.0.0.1 and every run is bounded in calls or seconds.
"""

# ruff: noqa: E402  (imports after sys.path is set up)
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # tests.gen (the echo service's generated code)

import grpc
import jwt

import grpc_obo
from grpc_obo.devauthority import DevAuthority
from tests.gen.grpc_obo.testing.v1 import echo_pb2, echo_pb2_grpc

ECHO_METHOD = "/grpc_obo.testing.v1.Echo/UnaryUnary"
RESULTS = HERE / "results"
LOADGEN_SRC = HERE / "loadgen"
SERVER_CPU, LOAD_CPU = 0, 1  # a server process on one CPU, load generator and driver on the other


def log(*parts: object) -> None:
    print(*parts, flush=True)


# -- the load generator ---------------------------------------------------------------------


def loadgen_binary() -> str | None:
    """The Go load generator (benchmarks/loadgen), built once per source version; None without Go.

    BENCH_LOADGEN=/path uses a binary you built. The build fetches grpc-go through the Go module
    proxy (GOPROXY) the first time and is cached in ~/.cache/grpc_obo/loadgen-<hash>/.
    """
    given = os.environ.get("BENCH_LOADGEN")
    if given:
        return given
    go = shutil.which("go")
    if go is None:
        return None
    digest = hashlib.sha256()
    for name in ("main.go", "go.mod", "go.sum"):
        digest.update((LOADGEN_SRC / name).read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    target = cache / "grpc_obo" / f"loadgen-{digest.hexdigest()[:12]}" / "loadgen"
    if target.exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    log(f"building the Go load generator into {target} (once; fetches grpc-go via GOPROXY)")
    partial = target.with_name(f"loadgen.{os.getpid()}.tmp")
    try:
        subprocess.run(
            [go, "build", "-trimpath", "-o", str(partial), "."],
            cwd=LOADGEN_SRC,
            check=True,
            timeout=900,
            env={**os.environ, "CGO_ENABLED": "0"},
        )
    except (OSError, subprocess.SubprocessError) as exc:
        # grpc-go 1.85 needs Go >= 1.26 (or GOTOOLCHAIN=auto and the Go proxy to fetch it).
        log(f"NOTE: could not build the Go load generator ({exc})")
        return None
    os.replace(partial, target)
    return str(target)


class Load:
    """Runs the Go load generator against a port: one JSON result per run."""

    kind = "go"

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        body = echo_pb2.EchoRequest(text="x").SerializeToString()
        self.body = workdir / "request.bin"
        self.body.write_bytes(body)

    async def run(
        self,
        port: int,
        *,
        tokens: Path | None,
        duration: float | None = None,
        calls: int | None = None,
        inflight: int = 64,
        conns: int = 4,
        start: int = 0,
        latency: bool = False,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        command = [
            self.binary, "-target", f"127.0.0.1:{port}", "-method", ECHO_METHOD,
            "-body", str(self.body), "-inflight", str(inflight), "-conns", str(conns),
            "-start", str(start), "-timeout", f"{timeout}s",
        ]  # fmt: skip
        if tokens is not None:
            command += ["-tokens", str(tokens)]
        if calls is not None:
            command += ["-n", str(calls)]
        else:
            command += ["-duration", f"{duration or 3.0}s"]
        if latency:
            command.append("-latency")
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "GOMAXPROCS": "1", "GOGC": "400"},
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"loadgen failed ({process.returncode}): {err.decode()[-2000:]}")
        result: dict[str, Any] = json.loads(out)
        return result


class PythonLoad:
    """Fallback without Go: a grpc.aio client in the driver (it shares the CPU with the driver,
    so read server CPU per call rather than RPC/s)."""

    kind = "python"

    def __init__(self) -> None:
        self._tokens: dict[Path, list[str]] = {}

    async def run(
        self,
        port: int,
        *,
        tokens: Path | None,
        duration: float | None = None,
        calls: int | None = None,
        inflight: int = 64,
        conns: int = 1,
        start: int = 0,
        latency: bool = False,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        values: list[str | None] = [None]
        if tokens is not None:
            if tokens not in self._tokens:
                self._tokens[tokens] = tokens.read_text().split()  # noqa: ASYNC240 (small)
            values = list(self._tokens[tokens])
        metadata = [None if t is None else (("authorization", f"Bearer {t}"),) for t in values]
        request = echo_pb2.EchoRequest(text="x")
        counter = 0
        ok = 0
        codes: dict[str, int] = {}
        times: list[float] = []
        deadline = time.perf_counter() + (duration or 3.0)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = echo_pb2_grpc.EchoStub(channel)

            async def worker() -> None:
                nonlocal counter, ok
                while True:
                    index = counter
                    if calls is not None and index >= calls:
                        return
                    if calls is None and time.perf_counter() > deadline:
                        return
                    counter += 1
                    began = time.perf_counter()
                    try:
                        await stub.UnaryUnary(
                            request,
                            metadata=metadata[(start + index) % len(metadata)],
                            timeout=timeout,
                        )
                        ok += 1
                    except grpc.aio.AioRpcError as exc:
                        codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
                    times.append(time.perf_counter() - began)

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(inflight)))
            seconds = time.perf_counter() - began
        done = ok + sum(codes.values())
        times.sort()

        def q(p: float) -> float:
            return times[int(p * (len(times) - 1))] * 1e3 if times else 0.0

        return {
            "calls": done, "ok": ok, "seconds": seconds, "rps": done / seconds, "codes": codes,
            "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": q(1.0),
            "tokens": len(values),
        }  # fmt: skip


def make_load(workdir: Path, prefer: str = "go") -> Load | PythonLoad:
    if prefer != "go":
        return PythonLoad()
    binary = loadgen_binary()
    if binary is None:
        log("NOTE: no Go toolchain: falling back to a Python load generator (read CPU per call)")
        return PythonLoad()
    return Load(binary, workdir)


# -- statistics -------------------------------------------------------------------------------


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and range over rounds (min and max, not a deviation: the noise of a
    shared machine comes in bursts, far from normal)."""
    data = [float(v) for v in values]
    if not data:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    quartiles = statistics.quantiles(data, n=4) if len(data) > 1 else [data[0]] * 3
    return {
        "median": statistics.median(data),
        "min": min(data),
        "max": max(data),
        "q1": quartiles[0],
        "q3": quartiles[2],
        "n": len(data),
    }


def fmt_spread(s: dict[str, float], digits: int = 2) -> str:
    if not s.get("n"):
        return "n/a"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def rotated(items: Sequence[Any], round_: int) -> list[Any]:
    """Each round starts one item later: slow drifts of the shared machine do not always land on
    the same variant (ratios are then taken within a round)."""
    shift = round_ % len(items)
    return list(items[shift:]) + list(items[:shift])


async def anchored_rounds(
    names: Sequence[str],
    anchor: str,
    rounds: int,
    measure: Callable[[str], Any],
    *,
    keys: Sequence[str],
    every: int = 3,
    on_round: Callable[[int], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Run every variant once per round, in rotated order, with the baseline (`anchor`) run
    first and again after every `every` others: each run is compared with the mean of the
    anchor runs just before and after it (under a minute apart), not with one anchor run half
    a round away. The noise of a shared machine drifts in bursts of seconds to minutes.

    `measure(name)` is awaited for one run and returns a dict of numbers; each run of another
    variant gets `anchor_<key>` for each of `keys` (the neighbouring anchors' mean). The
    anchor's own entry per round is the mean of its runs in that round.
    """
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    others = [name for name in names if name != anchor]
    for round_ in range(rounds):
        runs: list[tuple[str, dict[str, Any]]] = [(anchor, await measure(anchor))]
        order = rotated(others, round_) if others else []
        for index, name in enumerate(order):
            runs.append((name, await measure(name)))
            if (index + 1) % every == 0 or index == len(order) - 1:
                runs.append((anchor, await measure(anchor)))
        at = [i for i, (name, _) in enumerate(runs) if name == anchor]
        for i, (name, values) in enumerate(runs):
            if name == anchor:
                continue
            before = runs[max(p for p in at if p < i)][1]
            after = runs[min(p for p in at if p > i)][1]
            for key in keys:
                values[f"anchor_{key}"] = (before[key] + after[key]) / 2
            results[name].append(values)
        own = [runs[p][1] for p in at]
        mean = {
            key: statistics.fmean(v[key] for v in own)
            for key, value in own[0].items()
            if isinstance(value, int | float)
        }
        for key in keys:
            mean[f"anchor_{key}"] = mean[key]
        results[anchor].append(mean)
        if on_round is not None:
            on_round(round_)
    return results


# -- the machine ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    def first(path: str, prefix: str) -> str | None:
        with contextlib.suppress(OSError):
            for line in Path(path).read_text().splitlines():
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
        return None

    mem_kb = first("/proc/meminfo", "MemTotal")
    hypervisor = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in lscpu.splitlines():
            if line.startswith("Hypervisor vendor"):
                hypervisor = line.split(":", 1)[1].strip()
    go = shutil.which("go")
    go_version = None
    if go:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            go_version = subprocess.run(
                [go, "version"], capture_output=True, text=True, timeout=30
            ).stdout.strip()
    import google.protobuf

    return {
        "cpu": first("/proc/cpuinfo", "model name") or platform.processor(),
        "cpus": os.cpu_count(),
        "memory_gib": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "hypervisor": hypervisor,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "pyjwt": jwt.__version__,
        "go": go_version,
        "loadavg_at_start": os.getloadavg(),
    }


def git_revision() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30
        ).stdout.strip()

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return {
            "commit": git("rev-parse", "HEAD"),
            "dirty_src": bool(git("status", "--porcelain", "--", "src")),
        }
    return {}


# -- the authority, its users and their tokens ------------------------------------------------

USERS = 1_000  # registered users (the chain exchanges their tokens)


@dataclass
class Bench:
    """One benchmark run's shared state: the dev authority (a thread of this process), the
    registered users, token files for the load generator, and where to write."""

    authority: DevAuthority
    workdir: Path
    quick: bool
    load: Load | PythonLoad
    token_files: dict[str, Path] = field(default_factory=dict)
    minted: int = 0

    @property
    def config(self) -> dict[str, Any]:
        """Plain data for server processes (pickled to them): no object of this process."""
        authority = self.authority
        original = authority.world.app("original")
        downstream = authority.world.app("downstream")
        return {
            "tenant": authority.tenant_id,
            "authority_host": authority.base_url,
            "ca_file": str(authority.ca_file),
            "jwks": authority.jwks(),
            "issuers": [authority.issuer(2), authority.issuer(1)],
            "original": {
                "client_id": original.client_id,
                "audiences": sorted(original.identifiers()),
                "secret": original.secrets[0],
            },
            "downstream": {
                "client_id": downstream.client_id,
                "audiences": sorted(downstream.identifiers()),
                "scope": f"{downstream.app_id_uri}/Data.Read",
            },
        }

    def user_name(self, index: int) -> str:
        return f"bench{index:05d}"

    def mint(self, index: int | None = None, *, audience: str = "original") -> str:
        """A fresh token (new `uti`, never seen before) for registered user `index` or alice."""
        self.minted += 1
        user = "alice" if index is None else self.user_name(index)
        if audience == "downstream":
            return self.authority.mint_user_token(user, audience="downstream", scopes=["Data.Read"])
        return self.authority.mint_user_token(user)

    def write_tokens(self, name: str, tokens: Sequence[str]) -> Path:
        path = self.workdir / f"tokens-{name}.txt"
        path.write_text("\n".join(tokens) + "\n")
        path.chmod(0o600)
        self.token_files[name] = path
        return path

    def tokens(self, name: str) -> Path:
        """Token files by name: "one" (alice), "1k" (1,000 registered users), "100k"
        (100,000 distinct users, not registered: for servers only)."""
        if name in self.token_files:
            return self.token_files[name]
        if name == "one":
            return self.write_tokens(name, [self.mint()])
        if name == "1k":
            return self.write_tokens(name, [self.mint(i) for i in range(USERS)])
        if name.endswith("k") and name[:-1].isdigit():
            return self.write_tokens(name, self.synthetic_tokens(int(name[:-1]) * 1000))
        raise KeyError(name)

    def synthetic_tokens(self, count: int) -> list[str]:
        """`count` valid tokens for distinct made-up users of the home tenant (RSA-signed each:
        about 0.35 ms apiece). Servers accept them; the authority would not exchange them."""
        from grpc_obo.devauthority._world import User

        world = self.authority.world
        client, original = world.app("client"), world.app("original")
        tenant = self.authority.tenant_id
        log(f"minting {count:,} tokens for distinct users ...")
        started = time.perf_counter()
        tokens = []
        for index in range(count):
            user = User(
                username=f"synthetic{index}@contoso.example",
                oid=f"5e000000-0000-4000-8000-{index:012d}",
                tenant_id=tenant,
                display_name=f"Synthetic {index}",
            )
            tokens.append(
                self.authority.minter.access_token(
                    client=client,
                    resource=original,
                    tenant_id=tenant,
                    user=user,
                    scopes=original.scopes,
                    client_auth="0",
                ).token
            )
        log(f"  ... {time.perf_counter() - started:.0f} s")
        self.minted += count
        return tokens


@contextlib.contextmanager
def bench_context(*, quick: bool, workdir: Path | None = None, load: str = "go") -> Iterator[Bench]:
    """The dev authority with USERS extra users registered, in a thread of this process."""
    from grpc_obo.devauthority._world import User

    authority = DevAuthority()
    tenant = authority.world.home_tenant.id
    for index in range(USERS):
        authority.world.users.append(
            User(
                username=f"bench{index:05d}@contoso.example",
                tenant_id=tenant,
                display_name=f"Bench User {index}",
            )
        )
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="grpc-obo-bench-"))
            )
        stack.enter_context(authority.running_in_thread())
        yield Bench(
            authority=authority, workdir=workdir, quick=quick, load=make_load(workdir, load)
        )


# -- server processes ---------------------------------------------------------------------


class Echo(echo_pb2_grpc.EchoServicer):
    """Unary echo that counts what it served; "cpu" answers the process's CPU time and count."""

    served = 0

    async def UnaryUnary(self, request: Any, context: Any) -> Any:
        if request.text == "cpu":
            return echo_pb2.EchoResponse(text=f"{time.process_time()!r} {Echo.served}")
        Echo.served += 1
        # Reads the identity like a real handler would; the answer is the same in every variant.
        grpc_obo.current_identity()
        return echo_pb2.EchoResponse(text=request.text)


def pin(cpu: int | None) -> None:
    """Pin every thread of this process to `cpu` (threads started later inherit the caller's).

    NOTE: sched_setaffinity(0) pins only the calling thread; the dev authority's thread (and
    grpc's) would stay free to run on the server's CPU.
    """
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        _set_all_threads({cpu})


def _set_all_threads(cpus: set[int]) -> None:
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for thread in threads:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(thread, cpus)


@contextlib.contextmanager
def driver_pinned(enabled: bool) -> Iterator[None]:
    """This process (driver, dev authority thread, and the load generators it starts) on
    LOAD_CPU for the duration; the previous affinity back afterwards."""
    if not enabled:
        yield
        return
    before = os.sched_getaffinity(0)
    _set_all_threads({LOAD_CPU})
    try:
        yield
    finally:
        _set_all_threads(before)


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and {SERVER_CPU, LOAD_CPU} <= os.sched_getaffinity(0)


class Processes:
    """Server child processes (spawned, so nothing of this process leaks in), stopped together."""

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self.stop = self._context.Event()
        self._processes: list[Any] = []

    def start(self, target: Callable[..., None], *args: Any, timeout: float = 120) -> int:
        queue = self._context.Queue()
        process = self._context.Process(target=target, args=(*args, queue, self.stop), daemon=True)
        process.start()
        self._processes.append(process)
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = queue.get(timeout=1)
                break
            except Exception:  # queue.Empty: is the child still there?
                if not process.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"server process {target.__name__}{args[:1]} died or hung at start-up"
                    ) from None
        if isinstance(answer, str):
            raise RuntimeError(f"server process failed to start: {answer}")
        return int(answer)

    def close(self) -> None:
        self.stop.set()
        for process in self._processes:
            process.join(timeout=15)
            if process.is_alive():
                process.kill()
        self._processes.clear()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_forever(build: Callable[[], Any], cpu: int | None, queue: Any, stop: Any) -> None:
    """A child process's life: pin, build the server inside the event loop (`build` returns a
    grpc.aio.Server, maybe as a coroutine), report its port, serve until `stop` is set."""
    pin(cpu)

    async def main() -> None:
        try:
            server = build()
            if asyncio.iscoroutine(server):
                server = await server
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
        except BaseException as exc:
            queue.put(f"{type(exc).__name__}: {exc}")
            raise
        queue.put(port)
        await asyncio.to_thread(stop.wait)
        await server.stop(grace=0.5)

    asyncio.run(main())


async def server_state(port: int, token: str | None) -> tuple[float, int]:
    """(the server process's CPU seconds so far, echo calls it has served)."""
    metadata = None if token is None else (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await echo_pb2_grpc.EchoStub(channel).UnaryUnary(
            echo_pb2.EchoRequest(text="cpu"), metadata=metadata, timeout=30
        )
    cpu, served = reply.text.split()
    return float(cpu), int(served)


# -- a naive validator: what a hand-written per-call PyJWT interceptor does ------------------

naive_claims: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "naive_claims", default=None
)
naive_token: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "naive_token", default=None
)


class NaiveJwt(grpc.aio.ServerInterceptor):
    """PyJWT `decode` (RS256 verify, aud, iss, exp) on every call, the claims in a contextvar.

    The pattern of most hand-written gRPC auth interceptors: no cache, and none of grpc_obo's
    hardening (it is a cost baseline, not something to deploy).
    """

    def __init__(self, jwks: dict[str, Any], audiences: Sequence[str], issuers: Sequence[str]):
        self._keys = {key.key_id: key for key in jwt.PyJWKSet.from_dict(jwks).keys}
        self._audiences = list(audiences)
        self._issuers = list(issuers)

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        token = ""
        for key, value in details.invocation_metadata:
            if key == "authorization":
                token = value.partition(" ")[2]
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            claims = jwt.decode(
                token,
                self._keys[kid],
                algorithms=["RS256"],
                audience=self._audiences,
                issuer=self._issuers,
            )
        except (jwt.InvalidTokenError, KeyError):
            return grpc.unary_unary_rpc_method_handler(_unauthenticated)
        # grpc.aio runs intercept_service and the handler in the call's task: the handler sees it.
        naive_claims.set(claims)
        naive_token.set(token)
        return await continuation(details)


async def _unauthenticated(request: Any, context: Any) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid token")


def validator_options(config: dict[str, Any], api: str, **extra: Any) -> grpc_obo.ValidatorOptions:
    """grpc_obo's validator for `api` ("original" or "downstream") with the authority's keys
    given statically (no key fetch during a run)."""
    return grpc_obo.ValidatorOptions(
        tenant=config["tenant"],
        audiences=frozenset(config[api]["audiences"]),
        authority_host=config["authority_host"],
        v1_issuer_host=config["authority_host"],
        jwks=config["jwks"],
        **extra,
    )


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
