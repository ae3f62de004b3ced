"""The bounded soak (issue 9, point 4): a chain under a steady mixed load while faults come and go.

    driver (this process) ─round robin─▶ Original ×3 (processes, RedisTokenStore) ─▶ Downstream
           │                                  │   On-Behalf-Of through one real Redis
           └─ dev authority (a thread here) ◀─┘   (its own redis-server, restarted on its port)

All on 127.0.0.1: plaintext gRPC, the authority over HTTPS. 50 users of two tenants (alice, bob,
carol and 47 added with `world.add_user` while the authority runs, 12 of them at the start of
the redis, 503 and 429 phases). At most `workers` (14) calls in flight (20 with the streams
held across the kill), started at `rate` (60) per second, cycling through the users, the four
RPC kinds drawn at random (half unary-unary), each with a 5 s deadline. Every second one
user's client signs in again (a new token: a new cache key), as token renewals do in any
deployment. About 3,500 calls, a minute of load.

The phases, one after the other; a phase's window includes its recovery (`scale` multiplies
the waits):

    steady           nothing wrong, 6 s
    redis restart    redis-server SIGKILLed, 4 users added; restarted empty on the same port
                     3 s later; the phase lasts until every replica uses Redis again, plus
                     l1_ttl + 1 s (11 s: an entry a replica filled by exchanging locally while
                     Redis was away is rechecked, and re-exchanged if no replica stored it,
                     l1_ttl after it was filled; that belongs to this phase, not the next)
    authority 503    4 users added; every token request answers 503 for 2.5 s; then 4 s
    authority 429    4 users added; every token request answers 429 with Retry-After 1 s for
                     2.5 s; then 4 s
    key rollover     publish_next_key; 2 s later switch_signing_key and every user signs in
                     again (tokens with the new `kid`: each validator refreshes its keys once,
                     on that unknown `kid`); 6 s later (more than a deadline: no old-key token
                     is in use any more) retire_key; then 3 s
    replica restart  6 server streams held open (replies 0.1 s apart, 2 s in all; round robin
                     puts about 2 on each replica), then one Original replica SIGKILLed and
                     started again on its port 1 s later; the phase ends 5 s after it is ready
                     (it fetched the keys after the retirement)
    final            nothing wrong, 5 s

What may fail (anything else failing fails the soak). A failure must be UNAVAILABLE and end
within the call's deadline (+0.25 s), and:

    authority 503/429  the call needed an exchange (no call with that user's token had
                       succeeded before it started) and started before the fault's end plus the
                       middle tier's retry budget (2 s: an exchange begun in the fault may still
                       be failing until then); calls whose token was cached must succeed
    replica restart    the call was on the killed replica: a held stream whose replies came
                       from it; or a short call in flight at the kill or started within 0.5 s
                       after it (before the client saw the connection close and round robin
                       stopped picking it; which replica a failed short call was on is not
                       known). Held streams on the other replicas must complete, and at least
                       one must have been on the killed replica. A client-streaming call cut
                       there may also end INTERNAL "Internal error from Core": grpc's client
                       says so for a call still sending its requests when the connection
                       drops (as in grpc issue 36066), not grpc_obo
    all other phases   nothing, the Redis restart included

Exchanges (successful On-Behalf-Of requests the authority answered, per user and phase; R = 3
replicas; a token is new in a phase when its first call started there; the user's first
exchange within a deadline after a token's first call counts in that call's phase, any other
in the phase it happened in):

    steady, key rollover,   exactly one per new token, none for the others; more only as many
    replica restart, final  as the replicas recorded impatient waits in the phase (a waiter's
                            patience, half its caller's deadline, ran out while another replica
                            exchanged: it exchanges itself, by design; seen only on an
                            overloaded machine), and never more than R per new token
    redis restart           at most R + 1 per token in use: while Redis is down each replica
                            exchanges its own misses (once per token: single flight in the
                            process, then its memory level); Redis comes back empty and every
                            replica's subscription was cut, so each entry is re-checked, finds
                            nothing, and one replica (holding the lease) exchanges again
    authority 503/429       none for cached tokens; at most R per new token (the lease holder's,
                            and one per other replica whose callers ran out of patience while
                            the holder was refused and retried)

Also: no mix-up (every response, each streamed message too, carries its call's tag and the
caller's tid/oid as both hops saw it); every replica uses Redis again within 10 s of its
restart; the restarted replica serves calls with tokens other replicas exchanged. Latency
p50/p99/max per phase over the calls that succeeded. The whole run is cut at `time_limit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import random
import re
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from grpc_obo import TokenSealer
from grpc_obo.devauthority import DevAuthority
from tests.exchange.redis_nodes import RedisNode
from tests.gen.grpc_obo.testing.v1 import echo_pb2, echo_pb2_grpc
from tests.replicas.process import Replica, start_process
from tests.soak.service import HELD

SERVICE = "tests.soak.service"
HELD_REPLIES = 20  # a held stream: the Downstream sends its replies 0.1 s apart (2 s in all)
READY_TIMEOUT = 60.0
KINDS = (  # drawn at random: half unary-unary, a sixth each of the other kinds
    "unary_unary",
    "unary_stream",
    "unary_unary",
    "stream_unary",
    "unary_unary",
    "stream_stream",
)
REPLIES = {
    "unary_unary": 1,
    "unary_stream": 3,
    "stream_unary": 1,
    "stream_stream": 2,
    "held_stream": HELD_REPLIES,
}
SLACK = 0.25  # seconds past the deadline a failure may take to reach the client
REDIS_RECOVERY = 10.0  # seconds after its restart by which every replica must use Redis again
L1_TTL = 10.0  # RedisTokenStore's default l1_ttl, which the replicas use
CORE_ERROR = "Internal error from Core"
KILLED = "original-1"  # the replica the restart phase kills
KILL_NOTICE = 0.5
"""Seconds after a replica's SIGKILL during which the client may still send it calls (until
its channel sees the connection closed and round robin stops picking it)."""


@dataclass(frozen=True)
class SoakConfig:
    users: int = 50
    """alice, bob, carol and `users - 3` added at run time."""
    users_per_fault: int = 4
    """Users added at the start of the redis, 503 and 429 phases (first calls under the fault)."""
    replicas: int = 3
    workers: int = 14
    """At most this many calls in flight (plus the 2 × replicas streams held across the kill:
    20 in all)."""
    rate: float = 60.0
    """Calls started per second (fewer if the calls take longer than workers / rate)."""
    deadline: float = 5.0
    scale: float = 1.0
    """Multiplies every phase's waits (0.5 for a quick run)."""
    lease_ttl: float = 2.0
    redis_timeout: float = 3.0
    """Generous: a loaded 2-core machine must not trip the breaker where no fault is meant."""
    retry: dict[str, float] = field(
        default_factory=lambda: {
            "max_attempts": 3,
            "base_delay": 0.05,
            "max_delay": 0.2,
            "budget": 2.0,
        }
    )
    renew_every: float = 1.0
    """Every this many seconds one user's client app signs in again (a new token, so a new
    cache key): the trickle of token renewals every real deployment sees."""
    time_limit: float = 120.0
    """The whole run (start-up and teardown included) is cut here."""


# -- what happened -----------------------------------------------------------------------


@dataclass
class User:
    name: str
    tid: str
    oid: str
    token: str
    gen: int = 1
    first_ok: dict[int, float] = field(default_factory=dict)
    """Token generation -> when its first successful call ended (wall clock)."""

    @property
    def expected(self) -> str:
        return f"original {self.tid}/{self.oid} | downstream {self.tid}/{self.oid}"


@dataclass
class Call:
    index: int
    user: str
    gen: int
    kind: str
    phase: str
    started: float
    ended: float = 0.0
    latency: float = 0.0
    code: str | None = None
    """None: succeeded; else the gRPC status name."""
    detail: str = ""
    """A failure's status details (grpc_obo's are fixed sentences, never a token)."""
    replica: str | None = None
    mixup: str | None = None
    cached_before: bool = False
    """A call with this user's token had succeeded before this one started."""
    allowed: bool = False
    """A failure the phase's rule allows."""


@dataclass
class Phase:
    name: str
    started: float
    ended: float = 0.0
    marks: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    store: Counter[str] = field(default_factory=Counter)
    """What the replicas' stores did in this phase (`Outcomes` increments, summed)."""

    def holds(self, moment: float) -> bool:
        return self.started <= moment < self.ended


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class SoakResult:
    config: SoakConfig
    phases: list[Phase]
    calls: list[Call]
    users: dict[str, User]
    exchanges: dict[str, Counter[str]]
    """Phase -> successful On-Behalf-Of exchanges per user name."""
    refused: Counter[str]
    """Phase -> token requests the authority refused (injected faults)."""
    key_fetches: Counter[str]
    """Phase -> JWKS requests (validators fetching signing keys)."""
    replica_stats: list[dict[str, Any]]
    exchange_times: dict[str, list[float]]
    """User -> when the authority answered each successful exchange."""
    warnings: list[str]
    checks: list[Check]
    wall: float
    setup: float

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for phase in self.phases:
            calls = [c for c in self.calls if c.phase == phase.name]
            # Held streams last 2 s by design: counted, but not in the latency figures.
            ok = sorted(c.latency for c in calls if c.code is None and c.kind != "held_stream")
            failed = [c for c in calls if c.code is not None]
            rows.append(
                {
                    "phase": phase.name,
                    "seconds": round(phase.ended - phase.started, 1),
                    "calls": len(calls),
                    "ok": len(ok),
                    "failed_allowed": sum(c.allowed for c in failed),
                    "failed_unexpected": sum(not c.allowed for c in failed),
                    "failure_codes": dict(Counter(c.code for c in failed if c.code)),
                    "mixups": sum(c.mixup is not None for c in calls),
                    "exchanges": sum(self.exchanges[phase.name].values()),
                    "new_tokens": len(new_tokens(self.calls, phase.name)),
                    "refused": self.refused[phase.name],
                    "key_fetches": self.key_fetches[phase.name],
                    "store": dict(phase.store),
                    "p50_ms": _ms(percentile(ok, 50)),
                    "p99_ms": _ms(percentile(ok, 99)),
                    "max_ms": _ms(ok[-1] if ok else None),
                }
            )
        return rows

    def figures(self) -> dict[str, Any]:
        """Everything the report prints, as JSON-ready data."""
        tokens = {(c.user, c.gen) for c in self.calls}
        total = sum(sum(counts.values()) for counts in self.exchanges.values())
        return {
            "config": dataclasses.asdict(self.config),
            "wall_seconds": round(self.wall, 1),
            "setup_seconds": round(self.setup, 1),
            "calls": len(self.calls),
            "max_in_flight": self.config.workers + 2 * self.config.replicas,
            "users": len(self.users),
            "tokens": len(tokens),
            "exchanges": total,
            "exchanges_per_token": round(total / max(len(tokens), 1), 2),
            "kinds": dict(Counter(c.kind for c in self.calls)),
            "replicas_served": dict(Counter(c.replica for c in self.calls if c.replica)),
            "phases": self.rows(),
            "replica_stats": self.replica_stats,
            "warnings": self.warnings,
            "checks": [dataclasses.asdict(c) for c in self.checks],
            "passed": self.passed,
        }

    def report(self) -> str:
        figures = self.figures()
        lines = [
            f"soak: {figures['calls']} calls ({figures['max_in_flight']} at most in flight), "
            f"{figures['users']} users, {figures['tokens']} tokens, {self.config.replicas} "
            f"Original replicas + Downstream, one Redis; {figures['wall_seconds']} s "
            f"({figures['setup_seconds']} s start-up)",
            "",
            "| phase | s | calls | ok | failed: allowed | failed: unexpected | mix-ups "
            "| exchanges | new tokens | refused by authority | key fetches "
            "| p50 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in figures["phases"]:
            codes = ", ".join(f"{k} {v}" for k, v in sorted(row["failure_codes"].items()))
            lines.append(
                f"| {row['phase']} | {row['seconds']} | {row['calls']} | {row['ok']} "
                f"| {row['failed_allowed']} | {row['failed_unexpected']} "
                f"{f'({codes}) ' if codes else ''}"
                f"| {row['mixups']} | {row['exchanges']} | {row['new_tokens']} "
                f"| {row['refused']} | {row['key_fetches']} "
                f"| {row['p50_ms']} | {row['p99_ms']} | {row['max_ms']} |"
            )
        lines.append("")
        lines.append(
            "What the replicas' Redis stores did, per phase (Outcomes: tokens read from "
            "Redis, exchanges under the lease, waits for another replica's exchange, waits cut "
            "by patience, misses handled without Redis, memory entries served while Redis was "
            "away):"
        )
        lines.append("")
        lines.append("| phase | from redis | leased | waited | impatient | unavailable | stale |")
        lines.append("|---|---|---|---|---|---|---|")
        for phase in self.phases:
            st = phase.store
            lines.append(
                f"| {phase.name} | {st['from_redis']} | {st['leased']} | {st['waited']} "
                f"| {st['impatient']} | {st['unavailable']} | {st['stale']} |"
            )
        lines.append("")
        lines.append(
            f"exchanges: {figures['exchanges']} for {figures['tokens']} tokens "
            f"({figures['exchanges_per_token']} per token); calls by kind: "
            + ", ".join(f"{k} {v}" for k, v in sorted(figures["kinds"].items()))
            + "; by replica: "
            + ", ".join(f"{k} {v}" for k, v in sorted(figures["replicas_served"].items()))
        )
        for phase in self.phases:
            for note in phase.notes:
                lines.append(f"{phase.name}: {note}")
        for stats in self.replica_stats:
            lines.append(
                f"{stats.get('name')}{' (restarted)' if stats.get('restarted') else ''}: "
                f"calls {stats.get('calls')}, exchanges {stats.get('exchanges')}, "
                f"store {stats.get('store')}"
            )
        failures = [c for c in self.calls if c.code is not None]
        if failures:
            lines.append(f"failed calls ({len(failures)}), first of each phase and status:")
            seen: set[tuple[str, str]] = set()
            for c in failures:
                if (c.phase, c.code or "") in seen:
                    continue
                seen.add((c.phase, c.code or ""))
                lines.append(
                    f"  {c.phase}: {c.kind} -> {c.code} after {c.latency * 1000:.0f} ms, "
                    f"{'allowed' if c.allowed else 'NOT allowed'}"
                    f"{', token cached' if c.cached_before else ', token new'}: {c.detail}"
                )
        if self.warnings:
            lines.append(
                f"WARNING and ERROR lines in the services' logs ({len(self.warnings)}), alike "
                "ones counted (times, ports, ids and numbers masked):"
            )
            alike = Counter(_masked(line) for line in self.warnings)
            lines.extend(f"  {n} × {line}" for line, n in sorted(alike.items()))
        lines.append("")
        for check in self.checks:
            mark = "ok  " if check.passed else "FAIL"
            lines.append(f"{mark} {check.name}{f': {check.detail}' if check.detail else ''}")
        return "\n".join(lines)


_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")
_VARYING = re.compile(r"[0-9a-f]{8}-[0-9a-f-]{27}|\d+(\.\d+)?")


def _masked(line: str) -> str:
    return _VARYING.sub("#", _TIMESTAMP.sub("", line))


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _first_calls(calls: list[Call]) -> dict[tuple[str, int], Call]:
    """The first call of each (user, token generation)."""
    first: dict[tuple[str, int], Call] = {}
    for call in sorted(calls, key=lambda c: c.started):
        first.setdefault((call.user, call.gen), call)
    return first


def new_tokens(calls: list[Call], phase: str) -> set[tuple[str, int]]:
    """(user, generation) whose first call started in `phase`."""
    return {key for key, call in _first_calls(calls).items() if call.phase == phase}


# -- the processes ------------------------------------------------------------------------


@dataclass
class Services:
    authority: DevAuthority
    redis: RedisNode
    downstream: Replica
    originals: list[Replica]
    ports: list[int]
    configs: list[dict[str, Any]]
    workdir: Path
    restarted: set[int] = field(default_factory=set)
    retired: list[Replica] = field(default_factory=list)

    async def stats(self) -> list[dict[str, Any]]:
        answers = []
        for n, replica in enumerate(self.originals):
            await replica.send({"cmd": "stats"})
            answer = await replica.answer(10)
            answer["restarted"] = n in self.restarted
            answers.append(answer)
        return answers

    async def restart(self, n: int, *, down_for: float) -> float:
        """SIGKILL replica `n`, start it again on its port after `down_for` s; the kill time."""
        old = self.originals[n]
        old.kill()
        killed = time.time()
        await old.process.wait()
        self.retired.append(old)
        await asyncio.sleep(down_for)
        config = {**self.configs[n], "port": self.ports[n]}
        new = await start_process(SERVICE, config, old.log)
        self.originals[n] = new
        ready = await new.answer(READY_TIMEOUT)
        assert ready.get("ready") and ready.get("port") == self.ports[n], new.tail()
        self.restarted.add(n)
        return killed

    def warnings(self) -> list[str]:
        lines = []
        for log in sorted(self.workdir.glob("*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if " WARNING " in line or " ERROR " in line or "Traceback" in line:
                    lines.append(line[:300])
        return lines


@contextlib.asynccontextmanager
async def services(config: SoakConfig, workdir: Path) -> AsyncIterator[Services]:
    """The dev authority, Redis, the Downstream and the Original replicas; all stopped after."""
    async with contextlib.AsyncExitStack() as stack:
        authority = stack.enter_context(DevAuthority().running_in_thread())
        redis = RedisNode(workdir / "redis")
        stack.callback(redis.stop)
        await asyncio.to_thread(redis.start)
        world = authority.world
        downstream_app, original_app = world.app("downstream"), world.app("original")
        common = {
            "authority_host": authority.base_url,
            "tenant_id": authority.tenant_id,
            "ca_file": str(authority.ca_file),
            "allowed_tenants": [t.id for t in world.tenants],
        }
        children: list[Replica] = []

        async def stop_children() -> None:
            await asyncio.gather(*(child.stop() for child in children), return_exceptions=True)

        stack.push_async_callback(stop_children)
        downstream = await start_process(
            SERVICE,
            {
                **common,
                "role": "downstream",
                "name": "downstream",
                "audiences": [downstream_app.client_id, str(downstream_app.app_id_uri)],
                "required_scopes": ["Data.Read"],
            },
            workdir / "downstream.log",
        )
        children.append(downstream)
        ready = await downstream.answer(READY_TIMEOUT)
        assert ready.get("ready"), downstream.tail()
        sealing_key = TokenSealer.generate_key().hex()
        namespace = f"soak-{uuid.uuid4().hex[:12]}"
        configs = [
            {
                **common,
                "role": "original",
                "name": f"original-{n}",
                "audiences": [original_app.client_id, str(original_app.app_id_uri)],
                "required_scopes": ["access_as_user"],
                "client_id": original_app.client_id,
                "client_secret": original_app.secrets[0],
                "redis_url": redis.url,
                "namespace": namespace,
                "sealing_key": sealing_key,
                "lease_ttl": config.lease_ttl,
                "redis_timeout": config.redis_timeout,
                "retry": config.retry,
                "downstream": f"127.0.0.1:{ready['port']}",
                "downstream_scope": f"{downstream_app.app_id_uri}/Data.Read",
            }
            for n in range(config.replicas)
        ]
        originals = []
        for n, replica_config in enumerate(configs):
            originals.append(
                await start_process(SERVICE, replica_config, workdir / f"original-{n}.log")
            )
            children.append(originals[-1])
        ports = []
        for replica in originals:
            answer = await replica.answer(READY_TIMEOUT)
            assert answer.get("ready"), replica.tail()
            ports.append(int(answer["port"]))
        found = Services(authority, redis, downstream, originals, ports, configs, workdir)
        try:
            yield found
        finally:
            # The restarted replicas are children too (the killed ones are gone already).
            children[:] = [downstream, *found.originals]


# -- the load -----------------------------------------------------------------------------


class Driver:
    """Starts calls at `rate` per second on `workers` workers, cycling users and kinds."""

    def __init__(self, config: SoakConfig, channel: grpc.aio.Channel, users: list[User]) -> None:
        self.config = config
        self.stub = echo_pb2_grpc.EchoStub(channel)
        self.users = users
        self.calls: list[Call] = []
        self.phase = "start"
        self._counter = itertools.count()
        self._kinds = random.Random(9)  # a fixed load mix
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        begin = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._worker(begin + n / self.config.rate))
            for n in range(self.config.workers)
        ]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _worker(self, next_at: float) -> None:
        period = self.config.workers / self.config.rate
        while not self._stop.is_set():
            wait = next_at - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), wait)
                if self._stop.is_set():
                    return
            index = next(self._counter)
            kind = self._kinds.choice(KINDS)  # not index-based: users and kinds uncorrelated
            await self._call(index, self.users[index % len(self.users)], kind)
            next_at = max(next_at + period, time.monotonic() - period)

    def hold(self, count: int) -> list[asyncio.Task[None]]:
        """`count` server streams held open about 2 s (round robin spreads them)."""
        tasks = []
        for _ in range(count):
            index = next(self._counter)
            user = self.users[index % len(self.users)]
            tasks.append(asyncio.create_task(self._call(index, user, "held_stream")))
        return tasks

    async def _call(self, index: int, user: User, kind: str) -> None:
        gen, token = user.gen, user.token
        call = Call(index, user.name, gen, kind, self.phase, started=time.time())
        call.cached_before = gen in user.first_ok
        self.calls.append(call)
        tag = f"{HELD if kind == 'held_stream' else 'c'}{index}"
        metadata = (("authorization", f"Bearer {token}"),)
        timeout = self.config.deadline
        replies: list[echo_pb2.EchoResponse] = []  # kept as they come: a stream may fail later
        begun = time.perf_counter()
        try:
            if kind == "unary_unary":
                replies.append(
                    await self.stub.UnaryUnary(
                        echo_pb2.EchoRequest(text=tag), metadata=metadata, timeout=timeout
                    )
                )
            elif kind in ("unary_stream", "held_stream"):
                stream = self.stub.UnaryStream(
                    echo_pb2.EchoRequest(text=tag, count=REPLIES[kind]),
                    metadata=metadata,
                    timeout=timeout,
                )
                async for reply in stream:
                    replies.append(reply)
            elif kind == "stream_unary":
                requests = iter([echo_pb2.EchoRequest(text=tag), echo_pb2.EchoRequest(text=tag)])
                replies.append(
                    await self.stub.StreamUnary(requests, metadata=metadata, timeout=timeout)
                )
            else:
                requests = iter([echo_pb2.EchoRequest(text=tag), echo_pb2.EchoRequest(text=tag)])
                async for reply in self.stub.StreamStream(
                    requests, metadata=metadata, timeout=timeout
                ):
                    replies.append(reply)
        except grpc.aio.AioRpcError as error:
            call.code = error.code().name
            call.detail = (error.details() or "")[:160]
        call.latency = time.perf_counter() - begun
        call.ended = time.time()
        if replies:
            call.replica = replies[0].text.rsplit("@", 1)[-1]
        if call.code is not None:
            return
        call.mixup = _mixup(replies, kind, tag, user.expected)
        if call.mixup is None:
            user.first_ok.setdefault(gen, call.ended)


def _mixup(replies: list[echo_pb2.EchoResponse], kind: str, tag: str, expected: str) -> str | None:
    if len(replies) != REPLIES[kind]:
        return f"{len(replies)} replies to a {kind} call"
    for reply in replies:
        if reply.principal != expected:
            return f"principal {reply.principal!r}, expected {expected!r}"
        body, _, replica = reply.text.rpartition("@")
        if not replica.startswith("original-") or body.split("#")[0] not in (tag, f"{tag}+{tag}"):
            return f"text {reply.text!r} is not this call's ({tag})"
    return None


# -- the run ------------------------------------------------------------------------------


def _add_user(authority: DevAuthority, users: list[User], number: int) -> User:
    domain = "contoso" if number % 3 else "fabrikam"
    added = authority.world.add_user(f"soak{number:02d}@{domain}.example")
    return _user(authority, added.username, users)


def _user(authority: DevAuthority, name: str, users: list[User]) -> User:
    found = authority.world.user(name)
    user = User(found.username, found.tenant_id, found.oid, _mint(authority, found.username))
    users.append(user)
    return user


def _mint(authority: DevAuthority, name: str) -> str:
    return authority.mint_user_token(
        name, audience="original", client="client", scopes=["access_as_user"]
    )


async def run_soak(config: SoakConfig | None = None, *, workdir: Path | None = None) -> SoakResult:
    """Run the whole soak (start-up to teardown, at most `config.time_limit` s)."""
    config = config or SoakConfig()
    with contextlib.ExitStack() as cleanup:
        if workdir is None:
            workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        async with asyncio.timeout(config.time_limit):
            return await _run(config, workdir)


async def _run(config: SoakConfig, workdir: Path) -> SoakResult:
    began = time.monotonic()
    scale = config.scale
    phases: list[Phase] = []
    async with services(config, workdir) as running:
        setup = time.monotonic() - began
        authority = running.authority
        users: list[User] = []
        for name in ("alice", "bob", "carol"):
            _user(authority, name, users)
        numbers = itertools.count(1)
        during_faults = 3 * config.users_per_fault
        while len(users) < config.users - during_faults:
            _add_user(authority, users, next(numbers))
        target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in running.ports)
        options = [
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            await asyncio.wait_for(channel.channel_ready(), 10)
            driver = Driver(config, channel, users)

            tally = Tally(running)

            async def enter(name: str) -> Phase:
                if phases:
                    await tally.take(phases[-1].store)
                now = time.time()
                if phases:
                    phases[-1].ended = now
                phases.append(Phase(name, now))
                driver.phase = name
                return phases[-1]

            def add_users(count: int) -> None:
                for _ in range(count):
                    _add_user(authority, users, next(numbers))

            await enter("steady")
            driver.start()
            renewals = asyncio.create_task(_renew_tokens(users, authority, config.renew_every))
            try:
                await asyncio.sleep(6 * scale)

                phase = await enter("redis restart")
                running.redis.kill()
                add_users(config.users_per_fault)
                await asyncio.sleep(3 * scale)
                await asyncio.to_thread(running.redis.start)
                phase.marks["redis back"] = time.time()
                if await _until_redis_used(running, within=REDIS_RECOVERY):
                    phase.marks["replicas on redis"] = time.time()
                phase.notes.append(
                    f"Redis down {phase.marks['redis back'] - phase.started:.1f} s; every "
                    "replica used it again "
                    + (
                        f"{phase.marks['replicas on redis'] - phase.marks['redis back']:.1f} s"
                        if "replicas on redis" in phase.marks
                        else f"NOT within {REDIS_RECOVERY:.0f} s"
                    )
                    + " after its restart"
                )
                # Entries a replica filled by exchanging locally while Redis was away are in
                # Redis only once rechecked (after l1_ttl): done before the next phase's faults.
                await asyncio.sleep(max(4 * scale, L1_TTL + 1))

                for status in (503, 429):
                    phase = await enter(f"authority {status}")
                    add_users(config.users_per_fault)
                    if status == 503:
                        authority.faults.fail(503, times=None, endpoint="token")
                    else:
                        authority.faults.throttle(retry_after=1.0, times=None, endpoint="token")
                    await asyncio.sleep(2.5 * scale)
                    authority.faults.clear()
                    phase.marks["fault end"] = time.time()
                    await asyncio.sleep(4 * scale)

                phase = await enter("key rollover")
                authority.keys.publish_next_key()
                await asyncio.sleep(2 * scale)
                authority.keys.switch_signing_key()
                phase.marks["switched"] = time.time()
                for user in list(users):  # each client app signs its user in again
                    token = await asyncio.to_thread(_mint, authority, user.name)
                    user.token, user.gen = token, user.gen + 1
                await asyncio.sleep(max(6 * scale, config.deadline + 1))
                authority.keys.retire_key()
                phase.marks["retired"] = time.time()
                await asyncio.sleep(3 * scale)

                phase = await enter("replica restart")
                await asyncio.sleep(1 * scale)
                held = driver.hold(2 * config.replicas)
                await asyncio.sleep(0.5)  # their replies are flowing
                await tally.take(phase.store)  # the killed process's last counts
                killed = phase.marks["killed"] = await running.restart(
                    int(KILLED.rsplit("-", 1)[1]), down_for=1 * scale
                )
                phase.marks["ready"] = time.time()
                in_flight = sum(
                    c.started <= killed and (not c.ended or c.ended >= killed) for c in driver.calls
                )
                phase.notes.append(
                    f"{KILLED} SIGKILLed with {in_flight} calls in flight (to any replica), "
                    f"serving again on its port {phase.marks['ready'] - killed:.1f} s later"
                )
                await asyncio.gather(*held)
                streams = [c for c in driver.calls if c.kind == "held_stream"]
                phase.notes.append(
                    f"{len(streams)} server streams held open across the kill: "
                    + ", ".join(
                        f"{c.replica or '?'} {c.code or 'OK'} after {c.latency:.2f} s"
                        for c in streams
                    )
                )
                await asyncio.sleep(5 * scale)

                await enter("final")
                await asyncio.sleep(5 * scale)
            finally:
                renewals.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewals
                await driver.stop()
                if phases:
                    phases[-1].ended = time.time()
                    await tally.take(phases[-1].store)
        replica_stats = await running.stats()
        warnings = running.warnings()
        log = list(authority.requests)
    wall = time.monotonic() - began

    by_oid = {user.oid: user.name for user in users}
    calls = driver.calls
    # A token's first call causes its first exchange, which may land just past the end of
    # the call's phase: the user's first exchange within a deadline after that call counts
    # in the call's phase. Every other exchange counts in the phase it happened in.
    firsts: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for (name, _gen), first in _first_calls(calls).items():
        firsts[name].append((first.started, first.phase))
    claimed: dict[str, set[float]] = defaultdict(set)  # first-call starts already matched
    exchanges: dict[str, Counter[str]] = defaultdict(Counter)
    exchange_times: dict[str, list[float]] = defaultdict(list)
    refused: Counter[str] = Counter()
    key_fetches: Counter[str] = Counter()
    for entry in log:
        phase_of = next((p.name for p in phases if p.holds(entry.at)), None)
        if phase_of is None:
            continue
        if entry.grant == "obo" and entry.status == 200:
            name = by_oid.get(entry.user_oid or "", entry.user_oid or "?")
            cause = next(
                (
                    (started, phase)
                    for started, phase in sorted(firsts[name])
                    if entry.at - config.deadline <= started <= entry.at
                    and started not in claimed[name]
                ),
                None,
            )
            if cause is not None:
                claimed[name].add(cause[0])
            exchanges[cause[1] if cause else phase_of][name] += 1
            exchange_times[name].append(entry.at)
        elif entry.endpoint == "token" and entry.status != 200:
            refused[phase_of] += 1
        elif entry.endpoint == "jwks":
            key_fetches[phase_of] += 1
    _judge_failures(calls, phases, config)
    result = SoakResult(
        config=config,
        phases=phases,
        calls=calls,
        users={user.name: user for user in users},
        exchanges=exchanges,
        refused=refused,
        key_fetches=key_fetches,
        replica_stats=replica_stats,
        exchange_times=exchange_times,
        warnings=warnings,
        checks=[],
        wall=wall,
        setup=setup,
    )
    result.checks = checks(result)
    return result


class Tally:
    """Per-phase increments of the replicas' store counters (a restarted process counts anew)."""

    def __init__(self, running: Services) -> None:
        self.running = running
        self.seen: dict[int, dict[str, int]] = {}

    async def take(self, into: Counter[str]) -> None:
        for stats in await self.running.stats():
            now = {key: int(value) for key, value in stats["store"].items()}
            now["exchanges"] = int(stats["exchanges"])
            before = self.seen.get(stats["pid"], {})
            for key, value in now.items():
                into[key] += value - before.get(key, 0)
            self.seen[stats["pid"]] = now


async def _until_redis_used(running: Services, *, within: float) -> bool:
    """Whether every replica's store uses Redis again (`available`) within `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        stats = await running.stats()
        if all(s["redis_available"] for s in stats):
            return True
        await asyncio.sleep(0.2)
    return False


async def _renew_tokens(users: list[User], authority: DevAuthority, every: float) -> None:
    """One user's client signs in again every `every` s (cycling through the users)."""
    for n in itertools.count():
        await asyncio.sleep(every)
        user = users[n % len(users)]
        user.token = await asyncio.to_thread(_mint, authority, user.name)
        user.gen += 1


# -- the rules ----------------------------------------------------------------------------


def _judge_failures(calls: list[Call], phases: list[Phase], config: SoakConfig) -> None:
    """Mark each failed call allowed or not (see the module docstring)."""
    by_name = {p.name: p for p in phases}
    budget = float(config.retry["budget"])
    for call in calls:
        if call.code is None:
            continue
        phase = by_name[call.phase]
        timely = call.code == "UNAVAILABLE" and call.latency <= config.deadline + SLACK
        if call.phase in ("authority 503", "authority 429"):
            call.allowed = (
                timely
                and not call.cached_before
                and call.started < phase.marks["fault end"] + budget
            )
        elif call.kind == "held_stream":  # its replies named its replica: exact
            call.allowed = timely and call.replica == KILLED
        elif call.phase == "replica restart":
            killed = phase.marks.get("killed", math.inf)
            # NOTE: grpc's client reports a call still sending its request stream when the
            # connection drops as INTERNAL "Internal error from Core" (as in grpc issue 36066).
            core = (
                call.code == "INTERNAL"
                and call.detail == CORE_ERROR
                and call.kind in ("stream_unary", "stream_stream")
                and call.latency <= config.deadline + SLACK
            )
            on_it = call.started <= killed + KILL_NOTICE and killed <= call.ended
            call.allowed = (timely or core) and on_it
        else:
            call.allowed = False


def checks(result: SoakResult) -> list[Check]:
    found: list[Check] = []
    calls, config = result.calls, result.config
    unexpected = [c for c in calls if c.code is not None and not c.allowed]
    found.append(
        Check(
            "no call that should succeed failed",
            not unexpected,
            "; ".join(
                f"{c.phase}: {c.kind} of {c.user} -> {c.code} after {c.latency:.2f} s"
                f"{' (token cached)' if c.cached_before else ''}"
                for c in unexpected[:10]
            ),
        )
    )
    mixups = [c for c in calls if c.mixup is not None]
    found.append(
        Check(
            "no cross-user mix-up (each response names its caller at both hops)",
            not mixups,
            "; ".join(f"{c.user}: {c.mixup}" for c in mixups[:5]),
        )
    )
    silent = [row["phase"] for row in result.rows() if row["ok"] == 0 or row["calls"] < 20]
    found.append(Check("every phase carried load", not silent, ", ".join(silent)))
    replicas = config.replicas
    for phase in result.phases:
        counts = result.exchanges[phase.name]
        new = Counter(user for user, _ in new_tokens(calls, phase.name))
        in_use = Counter(
            user for user, _ in {(c.user, c.gen) for c in calls if c.phase == phase.name}
        )
        if phase.name in ("steady", "key rollover", "replica restart", "final"):
            # Beyond one per new token only when a replica ran out of patience waiting for
            # another's exchange (half the caller's deadline) and exchanged itself.
            impatient = phase.store["impatient"]
            rule = (
                "1 per new token, 0 for the others; more only by a replica that ran out of "
                f"patience (at most {replicas} per token)"
            )
            wrong = {
                u: counts[u]
                for u in set(counts) | set(new)
                if not new[u] <= counts[u] <= (new[u] if not impatient else replicas * new[u])
            }
            extra = sum(counts.values()) - sum(new.values())
            if extra > impatient:
                wrong["(all users)"] = extra
        elif phase.name == "redis restart":
            rule = f"at most {replicas + 1} per token in use"
            wrong = {u: n for u, n in counts.items() if n > (replicas + 1) * in_use[u]}
        elif phase.name.startswith("authority"):
            rule = f"0 for cached tokens, at most {replicas} per new token"
            wrong = {u: n for u, n in counts.items() if n > replicas * new[u]}
        else:
            raise AssertionError(f"no exchange rule for phase {phase.name}")
        found.append(
            Check(
                f"exchanges in {phase.name}: {rule}",
                not wrong,
                f"{sum(counts.values())} for {sum(new.values())} new tokens, "
                f"{phase.store['impatient']} impatient waits"
                + "".join(
                    f"; {u}: {n} for {new[u]} new, {in_use[u]} in use ({_story(result, u)})"
                    for u, n in sorted(wrong.items())[:4]
                    if u in result.users
                ),
            )
        )
    restarted = [s for s in result.replica_stats if s.get("restarted")]
    found.append(
        Check(
            "the restarted replica served calls with tokens other replicas had exchanged",
            bool(restarted)
            and all(s["calls"] > 0 and s["store"].get("from_redis", 0) > 0 for s in restarted),
            "; ".join(
                f"calls {s['calls']}, exchanges {s['exchanges']}, "
                f"read from Redis {s['store'].get('from_redis')}"
                for s in restarted
            ),
        )
    )
    held = [c for c in calls if c.kind == "held_stream"]
    on_killed = [c for c in held if c.replica == KILLED]
    found.append(
        Check(
            f"streams held open across the kill: those on {KILLED} failed UNAVAILABLE in time, "
            "the others completed",
            bool(on_killed)
            and all(c.allowed for c in on_killed)
            and all(c.code is None for c in held if c.replica != KILLED),
            f"{len(on_killed)} of {len(held)} on {KILLED}",
        )
    )
    redis_phase = next((p for p in result.phases if "redis back" in p.marks), None)
    found.append(
        Check(
            f"every replica used Redis again within {REDIS_RECOVERY:.0f} s of its restart",
            redis_phase is not None and "replicas on redis" in redis_phase.marks,
        )
    )
    return found


def _story(result: SoakResult, user: str) -> str:
    """A user's token first calls and exchanges (seconds from the start), for a failed check."""
    begin = result.phases[0].started
    events = [
        (first.started, f"token {gen} first call {first.kind} {first.code or 'ok'}")
        for (name, gen), first in _first_calls(result.calls).items()
        if name == user
    ]
    events += [(at, "exchange") for at in result.exchange_times.get(user, [])]
    return ", ".join(f"{at - begin:.2f} {what}" for at, what in sorted(events))


def main_report(config: SoakConfig, *, json_path: Path | None = None) -> int:
    """`python -m tests.soak`: run, print the report, optionally write the figures."""
    result = asyncio.run(run_soak(config))
    print(result.report(), flush=True)
    if json_path is not None:
        json_path.write_text(json.dumps(result.figures(), indent=2) + "\n")
    return 0 if result.passed else 1
