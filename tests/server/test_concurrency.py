"""Many users at once: each handler sees only its own caller's identity."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.gen.grpc_obo.testing.v1.echo_pb2 import EchoRequest
from tests.server.conftest import Serve
from tests.server.echo import SyncEcho
from tests.server.tokens import bearer, principal, user_token

USERS = 50
CALLS = 1_000
IN_FLIGHT = 200


@pytest.mark.slow
@pytest.mark.parametrize("servicer", [None, SyncEcho], ids=["async", "sync-thread-pool"])
async def test_a_thousand_calls_from_fifty_users_see_only_their_own_identity(
    serve: Serve, servicer: type | None
) -> None:
    served = await serve(servicer=servicer() if servicer else None)
    tokens = {user: user_token(user) for user in range(USERS)}
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def call(n: int) -> tuple[int, str, str]:
        user = n % USERS
        async with gate:
            response = await served.stub.UnaryUnary(
                EchoRequest(text=str(n)), metadata=bearer(tokens[user])
            )
        return user, response.text, response.principal

    started = time.perf_counter()
    results = await asyncio.gather(*(call(n) for n in range(CALLS)))
    elapsed = time.perf_counter() - started
    assert len(results) == CALLS
    wrong = [(user, seen) for user, _, seen in results if seen != principal(user)]
    assert not wrong, f"{len(wrong)} calls saw another identity, e.g. {wrong[:3]}"
    assert sorted(int(text) for _, text, _ in results) == list(range(CALLS))
    assert elapsed < 20, f"{CALLS} calls took {elapsed:.1f}s"
