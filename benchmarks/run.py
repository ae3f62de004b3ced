"""`make bench`: every benchmark in one run, the numbers as JSON, one chart, markdown tables.

  server_bench   server throughput: bare, no-op, naive PyJWT, the instrumentation, grpc_obo (one
                 token, 1,000 users' tokens; full runs: 100,000), grpc_obo with the
                 instrumentation (its own telemetry on and off), and the floors
  chain_bench    client -> Original -> Downstream in separate processes: no auth, grpc_obo, MSAL
                 OBO on every call, azure-identity per request; exchanges counted at the
                 authority; 1,000 concurrent first calls; latency with the authority slowed
  scale_bench    in-process: cache hit cost and memory per entry at 1 / 1,000 / 100,000
  replica_bench  a new replica receiving 1,000 users' first calls at once (one key fetch):
                 failed calls, p50/p99, time to serve all vs a validator that checks nothing
  memory_bench   a middle tier on default settings while new users keep arriving: RSS over
                 users (250,000; quick: 30,000), the plateau once both caches are full
  cold_bench     a never-seen token: validate() vs RSAPublicKey.verify vs PyJWT (CPU time)
  cache_bench    the On-Behalf-Of token cache alone: memory and Redis stores, stampedes
  http_bench     HTTP downstreams: OnBehalfOf.http_auth (cache hit) vs a fixed bearer header,
                 exchanges per user for concurrent first HTTP calls
  server_instructions   (only with --instructions: five more minutes, needs valgrind)
                 instructions per call under callgrind

This machine is shared and noisy: every number that is compared is a ratio taken within one
round of the same run, rounds in rotated order, reported as the median and the range over rounds.
Nothing here is asserted; targets are reported as met or missed.

Writes benchmarks/results/bench-<time>.{json,png,md} and copies them to latest.{json,png,md}.
Run: .venv/bin/python benchmarks/run.py [--quick] [--skip chain,scale,...] [--instructions]
     .venv/bin/python benchmarks/run.py --render benchmarks/results/latest.json  (redraw only)
(or `make bench`, `make bench BENCH_ARGS=--quick`). A full run takes about 22 minutes on a
2-core machine (the memory plateau, 250,000 users, about 6 of them); --quick about 4.
"""

# ruff: noqa: E402  (imports after sys.path is set up)
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness as h
import chain_bench
import cold_bench
import memory_bench
import replica_bench
import scale_bench
import server_bench

SECTIONS = (
    "server", "chain", "scale", "replica", "memory", "cold", "cache", "http", "instructions",
)

# -- targets ---------------------------------------------------------------------------------


def _by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


def _normalized(row: list[float]) -> float:
    """A run's RPS relative to the baseline runs around it ([rps, cpu, base rps, base cpu]);
    results written before anchored rounds hold [rps, cpu]: the RPS itself."""
    return row[0] / row[2] if len(row) >= 3 else row[0]


def _chain_normalized(row: float | list[float]) -> float:
    return row[0] / row[1] if isinstance(row, list) else row


def _chain_pair(entry: dict[str, Any], base: dict[str, Any] | None) -> dict[str, float] | None:
    """A chain variant against another, round by round (each through its no-auth anchors)."""
    if base is None or "raw_rps" not in entry or "raw_rps" not in base:
        return None
    rows = zip(entry["raw_rps"], base["raw_rps"], strict=True)
    return h.spread([_chain_normalized(v) / _chain_normalized(b) for v, b in rows])


def _pair(server: dict[str, dict[str, Any]], name: str, base: str) -> dict[str, float] | None:
    """`name` against `base`, round by round (each through the bare runs next to it)."""
    if name not in server or base not in server:
        return None
    rows = zip(server[name]["raw"], server[base]["raw"], strict=True)
    return h.spread([_normalized(v) / _normalized(b) for v, b in rows])


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(
        what: str,
        target: float,
        measured: dict[str, float] | None,
        floor: str = "",
        *,
        at_most: bool = False,
    ) -> None:
        if measured is None:
            return
        met = measured["median"] <= target if at_most else measured["median"] >= target
        rows.append({
            "target": what, "goal": target, "measured": measured, "met": met, "floor": floor,
        })  # fmt: skip

    if "server" in data:
        s = _by_name(data["server"]["variants"])
        floor_parts = [
            f"{label} {h.fmt_spread(ratio)}"
            for label, ratio in (
                ("floor + token + dict lookup:", _pair(s, "floor+lookup", "bare")),
                ("floor + token + SHA-256:", _pair(s, "floor+sha256", "bare")),
            )
            if ratio
        ]
        floor_text = "; ".join(floor_parts)
        add("server: grpc_obo, one token, RPS >= 0.95 of bare", 0.95,
            _pair(s, "grpc_obo", "bare"), floor_text)  # fmt: skip
        add("server: grpc_obo, 1,000 users' tokens rotating, RPS >= 0.93 of bare", 0.93,
            _pair(s, "grpc_obo@1k", "bare"),
            f"bare with the same 1,000 tokens {h.fmt_spread(_pair(s, 'bare@1k', 'bare'))}"
            if "bare@1k" in s else "")  # fmt: skip
        add("server: grpc_obo, 100,000 distinct tokens rotating, default settings, RPS >= 0.85 "
            "of bare with the same tokens", 0.85, _pair(s, "grpc_obo@100k", "bare@100k"),
            f"cache held to 10,000 tokens (every call verifies) "
            f"{h.fmt_spread(_pair(s, 'grpc_obo@100k-10k', 'bare@100k'))}"
            if "grpc_obo@100k-10k" in s else "")  # fmt: skip
        add("server: grpc_obo + otel instrumentation, RPS >= 0.95 of the instrumentation alone",
            0.95, _pair(s, "otel+grpc_obo", "otel"),
            "; ".join(
                f"{label} {h.fmt_spread(_pair(s, name, 'otel'))}"
                for label, name in (("grpc_obo's telemetry off:", "otel+grpc_obo-off"),
                                    ("otel + floor:", "otel+floor"))
                if name in s
            ))  # fmt: skip
        add(
            "telemetry: grpc_obo's own spans+metrics cost <= 5 % (on vs off, with the "
            "instrumentation)",
            0.95,
            _pair(s, "otel+grpc_obo", "otel+grpc_obo-off"),
        )
    if data.get("cold"):
        cold = data["cold"]["vs_rsa_verify"]
        add("cold: `validate()` of a never-seen token <= 2x `RSAPublicKey.verify` (CPU time)",
            2.0, cold["grpc_obo"], f"PyJWT decode {h.fmt_spread(cold['pyjwt'])}",
            at_most=True)  # fmt: skip
    if "chain" in data:
        c = _by_name(data["chain"]["variants"])
        for users, suffix in ((1, "one"), (1_000, "1k")):
            entry = c.get(f"grpc_obo@{suffix}")
            if entry:
                context = [
                    f"{label} {h.fmt_spread(c[name]['vs_none'])}"
                    for label, name in (
                        ("floor chain:", f"floor@{suffix}"),
                        ("no-op client interceptor:", f"noop-client@{suffix}"),
                        ("no-op interceptors on both tiers:", f"noop@{suffix}"),
                    )
                    if name in c
                ]
                base = c.get(f"none@{suffix}")
                measured = _chain_pair(entry, base) if base else None
                measured = measured or entry["vs_none"]
                # What no interceptor can avoid, measured in the same rounds: grpc_obo against
                # the floor chain (both tiers' least interceptors, a ready token attached).
                against_floor = _chain_pair(entry, c.get(f"floor@{suffix}"))
                if against_floor:
                    context.append(f"grpc_obo vs the floor chain: {h.fmt_spread(against_floor)}")
                add(f"chain: grpc_obo, {users:,} user(s), RPS >= 0.90 of the no-auth chain", 0.90,
                    measured, "; ".join(context))  # fmt: skip
    http = data.get("http")
    if http:
        cpu = http["cache_hit"].get("cpu_ratio")
        cpu_text = f"client CPU per request, fixed / obo: {h.fmt_spread(cpu, 3)}" if cpu else ""
        add("http: a GET through OnBehalfOf.http_auth (cache hit), req/s >= 0.95 of a fixed "
            "bearer header", 0.95, http["cache_hit"]["ratio"], cpu_text)  # fmt: skip
        first = http["first_calls"]
        per_user = first["exchanges_per_user"]
        rows.append({
            "target": f"http: {first['calls_per_user']} concurrent first calls per user "
                      f"({first['users']} users) -> 1 exchange per user",
            "goal": 1.0,
            "measured": {"median": per_user, "min": per_user, "max": per_user, "n": 1},
            "met": per_user <= 1.0, "floor": f"{first['exchanges']} exchanges in all",
        })  # fmt: skip
    return rows


# -- markdown ------------------------------------------------------------------------------------


def machine_line(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    load = ", ".join(f"{x:.1f}" for x in m.get("loadavg_at_start", ()))
    return (
        f"{m['cpu']}, {m['cpus']} CPUs ({m.get('hypervisor') or 'bare metal'} VM)"
        if m.get("hypervisor")
        else f"{m['cpu']}, {m['cpus']} CPUs"
    ) + (
        f", {m['memory_gib']} GiB; {m['os']}; Python {m['python']}, grpcio {m['grpcio']}; "
        f"load average at start {load} (shared machine)"
    )


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    out = [
        f"# grpc_obo benchmarks ({'quick' if meta['quick'] else 'full'} run, "
        f"{meta['started_at']}, {meta['minutes']:.1f} min)",
        "",
        f"Machine: {machine_line(meta)}. Commit {meta['git'].get('commit', '?')[:10]}"
        + (" + uncommitted changes in src/" if meta["git"].get("dirty_src") else "")
        + ".",
        "",
        "Ratios: median (min–max) over the rotated rounds of one run; every run is compared "
        "with the baseline runs just before and after it (bare, or the no-auth chain, runs "
        "again after every three variants). Targets also with the interquartile range (IQR).",
        "",
        "| target | measured | met | floor / context |",
        "|---|---|---|---|",
    ]
    for t in data["targets"]:
        m = t["measured"]
        quartiles = f"IQR {m['q1']:.2f}–{m['q3']:.2f}, " if "q1" in m else ""
        out.append(
            f"| {t['target']} | {m['median']:.3f} ({quartiles}range {m['min']:.2f}–{m['max']:.2f})"
            f" | {'yes' if t['met'] else '**no**'} | {t['floor']} |"
        )
    if "server" in data:
        s = data["server"]
        out += [
            "",
            f"## Server (unary echo; server pinned to one CPU, Go load generator on the other, "
            f"{s['inflight']} in flight; {s['rounds']} rounds x {s['duration_s']} s)",
            "",
            server_bench.table(s, ("server", "scale", "floor")),
            "",
            "### Telemetry (SDK tracer provider with a no-op exporter; meter provider, in-memory)",
            "",
            server_bench.table(s, ("telemetry",)),
        ]
    if "chain" in data:
        c = data["chain"]
        out += [
            "",
            f"## Chain (client -> Original -> Downstream, separate processes; {c['layout']}; "
            f"{c['inflight']} in flight; {c['rounds']} rounds x {c['duration_s']} s)",
            "",
            chain_bench.tables(c),
        ]
    if "scale" in data:
        out += ["", "## How cost grows (in-process)", "", scale_bench.tables(data["scale"])]
    if data.get("replica"):
        r = data["replica"]
        out += [
            "",
            f"## A replica starting under load (benchmarks/replica_bench.py; {r['rounds']} rounds,"
            " a new server process each)",
            "",
            replica_bench.table(r),
        ]
    if data.get("memory"):
        m = data["memory"]
        out += [
            "",
            f"## A middle tier's memory on default settings (benchmarks/memory_bench.py; "
            f"{m['token_chars']:,}-character tokens in, {m['downstream_token_chars']:,} out)",
            "",
            memory_bench.table(m),
        ]
    if data.get("cold"):
        out += [
            "",
            f"## A never-seen token (benchmarks/cold_bench.py; {data['cold']['tokens']:,} tokens, "
            f"{data['cold']['rounds']} rounds, CPU time)",
            "",
            cold_bench.table(data["cold"]),
        ]
    if "cache" in data and data["cache"].get("hits"):
        cache = data["cache"]
        out += [
            "",
            "## On-Behalf-Of token cache alone (benchmarks/cache_bench.py)",
            "",
            "| store | cached users | µs per hit |",
            "|---|---|---|",
        ]
        out += [f"| {r['store']} | {r['users']:,} | {r['hit_us']:.2f} |" for r in cache["hits"]]
        memory = cache.get("memory")
        if memory:
            out.append("")
            out.append(
                f"Memory at {memory['entries']:,} entries of {memory['token_chars']:,}-character "
                f"tokens: {memory['bytes_per_entry']:,.0f} bytes per entry "
                f"({memory['overhead_bytes']:,.0f} beyond the token string)."
            )
        out.append(
            "Stampedes: "
            + "; ".join(
                f"{r['store']}, {r['callers']:,} concurrent first calls -> {r['fetches']} fetch"
                for r in cache.get("stampede", [])
            )
            + "."
        )
    if data.get("instructions"):
        out += [
            "",
            "## Server instructions per call (callgrind; steady to about 1 %)",
            "",
            "| server | instructions/call | bare / variant |",
            "|---|---|---|",
        ]
        out += [
            f"| {r['name']} | {r['instructions']:,.0f} | {r['bare_ratio']:.3f} |"
            for r in data["instructions"]
        ]
    return "\n".join(out) + "\n"


# -- the chart ----------------------------------------------------------------------------------


def chart(data: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        h.log("NOTE: matplotlib is not installed (pip install -e '.[bench]'): no chart")
        return False
    panels: list[tuple[str, list[tuple[str, dict[str, float] | None, float | None, bool]]]] = []
    if "server" in data:
        s = _by_name(data["server"]["variants"])
        rows = []
        for name, target in (
            ("noop", None), ("floor", None), ("floor+token", None), ("floor+lookup", None),
            ("floor+sha256", None),
            ("interceptor-only", None), ("grpc_obo", 0.95), ("bare@1k", None),
            ("grpc_obo@1k", 0.93), ("pyjwt", None), ("bare@100k", None),
            ("grpc_obo@100k", None), ("grpc_obo@100k-10k", None), ("otel", None),
        ):  # fmt: skip
            if name in s:
                rows.append((s[name]["label"], _pair(s, name, "bare"), target,
                             name.startswith("grpc_obo")))  # fmt: skip
        panels.append(("Server throughput vs bare grpc.aio (same run, one CPU)", rows))
        tele = []
        for name, base, target in (
            ("otel+floor", "otel", None),
            ("otel+grpc_obo", "otel", 0.95),
            ("otel+grpc_obo-off", "otel", None),
        ):
            if name in s:
                tele.append((s[name]["label"].replace("otel instrumentation", "instrumentation"),
                             _pair(s, name, base), target, name != "otel+floor"))  # fmt: skip
        if "otel+grpc_obo" in s and "otel+grpc_obo-off" in s:
            tele.append(("grpc_obo telemetry on vs off (both with the instrumentation)",
                         _pair(s, "otel+grpc_obo", "otel+grpc_obo-off"), 0.95, True))  # fmt: skip
        panels.append(("Telemetry: vs opentelemetry-instrumentation-grpc alone", tele))
    if "chain" in data:
        rows = []
        for v in data["chain"]["variants"]:
            if v["variant"] == "none":
                continue
            target = 0.90 if v["variant"] == "grpc_obo" else None
            rows.append((f"{v['label']}, {v['users']:,} user(s)", v["vs_none"], target,
                         v["variant"] == "grpc_obo"))  # fmt: skip
        panels.append(("Chain (client -> Original -> Downstream) vs the no-auth chain", rows))
    if data.get("cold"):
        cold = data["cold"]["vs_rsa_verify"]
        panels.append((
            "A never-seen token: CPU time vs RSAPublicKey.verify alone (lower is better)",
            [("grpc_obo validate(), every check", cold["grpc_obo"], 2.0, True),
             ("PyJWT decode", cold["pyjwt"], None, False)],
        ))  # fmt: skip
    if not panels:
        return False
    heights = [max(len(rows), 1) * 0.42 + 0.9 for _, rows in panels]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(11, sum(heights)), gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )  # fmt: skip
    for ax, (title, rows) in zip(axes[:, 0], panels, strict=True):
        labels = [r[0] for r in rows]
        medians = [r[1]["median"] if r[1] else 0.0 for r in rows]
        low = [m - r[1]["min"] if r[1] else 0.0 for m, r in zip(medians, rows, strict=True)]
        high = [r[1]["max"] - m if r[1] else 0.0 for m, r in zip(medians, rows, strict=True)]
        y = list(range(len(rows)))[::-1]
        colors = ["#1f6fb4" if r[3] else "#9aa5b1" for r in rows]
        ax.barh(y, medians, xerr=[low, high], color=colors, capsize=3, height=0.6,
                error_kw={"elinewidth": 1, "ecolor": "#333333"})  # fmt: skip
        top = max([r[1]["max"] for r in rows if r[1]] + [1.0])
        right = max(1.2, top + 0.15)
        for yy, m, r in zip(y, medians, rows, strict=True):
            end = r[1]["max"] if r[1] else m
            ax.text(end + 0.012, yy, f"{m:.2f}", va="center", fontsize=8)
            if r[2] is not None:
                ax.plot([r[2], r[2]], [yy - 0.4, yy + 0.4], color="#d62728", linewidth=2)
        ax.axvline(1.0, color="#333333", linewidth=0.8)
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_xlim(0, right)
        ax.set_title(title, fontsize=10, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel(
        "throughput ratio: median over rounds, bar = min–max; red tick = target; blue = grpc_obo"
    )
    meta = data["meta"]
    fig.suptitle(
        f"grpc_obo `make bench` {meta['started_at']} ({'quick' if meta['quick'] else 'full'}): "
        f"{meta['machine']['cpus']} CPUs, {meta['machine']['cpu']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- running ----------------------------------------------------------------------------------


async def in_process(bench: h.Bench, wanted: set[str], quick: bool) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if "server" in wanted:
        data["server"] = await server_bench.run(
            bench, **(server_bench.QUICK if quick else server_bench.FULL)
        )
    if "chain" in wanted:
        data["chain"] = await chain_bench.run(bench, **chain_bench.settings(quick))
    if "scale" in wanted:
        data["scale"] = await scale_bench.run(bench, quick=quick)
    if "replica" in wanted:
        data["replica"] = await replica_bench.run(bench, rounds=2 if quick else 5)
    if "memory" in wanted:
        data["memory"] = await memory_bench.run(
            bench, users=30_000 if quick else 250_000, step=5_000 if quick else 25_000
        )
    return data


def subprocess_json(script: str, args: list[str], key: str, timeout: float) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        h.log(f"\n== {script} ==")
        code = subprocess.call(
            [sys.executable, str(HERE / script), *args, "--json", str(out)], timeout=timeout
        )
        if code != 0 or not out.exists():
            h.log(f"{script} failed (exit {code})")
            return None
        return json.loads(out.read_text()).get(key)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: minutes, not a result")
    parser.add_argument("--skip", default="", help=f"comma-separated of {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=h.RESULTS)
    parser.add_argument("--load", choices=["go", "python"], default="go")
    parser.add_argument(
        "--instructions", action="store_true", help="also count instructions under callgrind"
    )
    parser.add_argument(
        "--render", type=Path, help="only redraw the chart and tables of a results JSON file"
    )
    args = parser.parse_args(os.environ.get("BENCH_ARGS", "").split() + sys.argv[1:])
    if args.render:
        data = json.loads(args.render.read_text())
        data["targets"] = targets(data)
        h.write_json(args.render, data)
        args.render.with_suffix(".md").write_text(markdown(data))
        chart(data, args.render.with_suffix(".png"))
        print(args.render.with_suffix(".md").read_text())
        return 0
    wanted = set(SECTIONS) - set(filter(None, args.skip.split(",")))
    if not args.instructions:
        wanted.discard("instructions")  # five minutes under valgrind: on request only
    started = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    meta: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(started)),
        "quick": args.quick,
        "sections": sorted(wanted),
        "machine": h.machine(),
        "git": h.git_revision(),
    }
    data: dict[str, Any] = {"meta": meta}
    with h.bench_context(quick=args.quick, load=args.load) as bench:
        data.update(asyncio.run(in_process(bench, wanted, args.quick)))
        meta["load_generator"] = bench.load.kind
    if "cold" in wanted:
        data["cold"] = subprocess_json(
            "cold_bench.py", ["--quick"] if args.quick else [], "cold", 600
        )
    if "cache" in wanted:
        data["cache"] = subprocess_json(
            "cache_bench.py", ["--quick"] if args.quick else [], "cache", 600
        )
    if "http" in wanted:
        data["http"] = subprocess_json(
            "http_bench.py", ["--quick"] if args.quick else [], "http", 900
        )
    if "instructions" in wanted:
        data["instructions"] = subprocess_json(
            "server_instructions.py", ["--variants", "bare,noop,interceptor-only,grpc_obo"],
            "instructions", 900,
        )  # fmt: skip
    meta["minutes"] = (time.time() - started) / 60
    meta["loadavg_at_end"] = os.getloadavg()
    data["targets"] = targets(data)

    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"bench-{stamp}{'-quick' if args.quick else ''}"
    h.write_json(base.with_suffix(".json"), data)
    text = markdown(data)
    base.with_suffix(".md").write_text(text)
    drew = chart(data, base.with_suffix(".png"))
    if data.get("memory") and memory_bench.chart(
        data["memory"], base.with_name(base.name + "-memory.png")
    ):
        shutil.copyfile(base.with_name(base.name + "-memory.png"), args.out / "latest-memory.png")
    for suffix in (".json", ".md", ".png"):
        if suffix == ".png" and not drew:
            continue
        shutil.copyfile(base.with_suffix(suffix), args.out / f"latest{suffix}")
    print()
    print(text)
    h.log(f"JSON:  {base.with_suffix('.json')}  (copied to {args.out / 'latest.json'})")
    if drew:
        h.log(f"chart: {base.with_suffix('.png')}  (copied to {args.out / 'latest.png'})")
    h.log(f"took {meta['minutes']:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
