"""Several replicas as real processes (each its own event loop) sharing one real Redis and the
dev authority: one exchange between them for a user's first calls, and a replica killed in the
middle of its exchange costs the others no call, only the rest of its lease."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from grpc_obo.devauthority import DevAuthority

from .conftest import Spawn, user_of

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def scope_of(authority: DevAuthority) -> str:
    return f"{authority.world.app('downstream').app_id_uri}/Data.Read"


async def test_300_first_calls_spread_over_three_replicas_make_one_exchange(
    grpc_obo_authority: DevAuthority, spawn_replicas: Spawn
) -> None:
    authority = grpc_obo_authority
    replicas = await spawn_replicas(3)
    bob = user_of(authority, "bob")
    authority.faults.latency = 0.3  # an exchange long enough for every replica to miss
    command = {"cmd": "call", "n": 100, "user": bob, "scope": scope_of(authority), "timeout": 10}
    for replica in replicas:  # all at once
        await replica.send(command)
    answers = [await replica.answer() for replica in replicas]
    authority.faults.latency = 0.0

    assert [a["errors"] for a in answers] == [[], [], []]
    digests = {d for a in answers for d in a["digests"]}
    assert sum(len(a["digests"]) for a in answers) == 300
    assert len(digests) == 1  # one token, bob's, everywhere
    assert authority.requests.count(grant="obo", user="bob") == 1
    assert sorted(a["exchanges"] for a in answers) == [0, 0, 1]
    assert sum(a["stats"].get("waited", 0) for a in answers) >= 2  # the others waited for it


async def test_a_lease_holder_killed_mid_exchange_costs_the_others_only_its_lease(
    grpc_obo_authority: DevAuthority, spawn_replicas: Spawn, replicas_redis: redis.Redis
) -> None:
    authority = grpc_obo_authority
    lease_ttl = 1.0
    holder, *others = await spawn_replicas(3, lease_ttl=lease_ttl)
    alice = user_of(authority, "alice")
    scope = scope_of(authority)
    authority.faults.latency = 1.5  # the holder will be mid-exchange when it dies
    await holder.send({"cmd": "call", "n": 10, "user": alice, "scope": scope, "timeout": 20})
    for _ in range(500):
        if list(replicas_redis.scan_iter(match="replicas-*:lease")):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the holder never took the lease")
    # The others miss too and wait on the holder (their deadline's patience is 10 s).
    for replica in others:
        await replica.send({"cmd": "call", "n": 50, "user": alice, "scope": scope, "timeout": 20})
    # The others are separate processes: nothing here tells when their calls reach the wait on
    # the holder's lease, so this one sleep stays (a call that arrives later still waits).
    await asyncio.sleep(0.2)
    holder.kill()
    killed = time.time()
    authority.faults.latency = 0.0  # the take-over's exchange is quick
    answers = [await replica.answer() for replica in others]

    assert [a["errors"] for a in answers] == [[], []]
    assert len({d for a in answers for d in a["digests"]}) == 1
    assert sum(a["exchanges"] for a in answers) == 1  # one of them took over
    recovered = max(a["finished"] for a in answers) - killed
    assert recovered < lease_ttl + 1.0, f"took {recovered:.2f} s after the kill"
    # The dead holder's request was still sleeping in the authority: let it end here (it
    # fails writing to a closed socket), not in the next test's request log.
    for _ in range(60):
        if authority.requests.count(endpoint="token") >= 2:
            break
        await asyncio.sleep(0.05)
    assert authority.requests.count(endpoint="token") == 2
    assert authority.requests.count(grant="obo", user="alice", ok=True) == 1
