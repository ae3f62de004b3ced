"""One replica of a middle-tier API, as its own process with its own event loop.

Run by tests/replicas/ as `python -m tests.replicas.replica`. It reads one JSON line of
configuration (the dev authority's address and CA, the Original API's client id and secret,
the Redis URL, namespace and sealing key), builds an On-Behalf-Of exchanger on a
`RedisTokenStore`, warms up (MSAL's discovery, the Redis subscription) and says `ready`. Then
each JSON line is a command:

    {"cmd": "call", "n": 100, "user": {"tid", "oid", "sub", "token"}, "scope": ..., "timeout": s}
        -> n concurrent acquisitions for that user, all started at once; the answer holds
           SHA-256 digests of the tokens (never a token), errors by type, timings, counters
    {"cmd": "exit"}

Nothing secret is ever written to stdout.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from typing import Any

from grpc_obo import (
    ClientCredential,
    ConfidentialClient,
    Identity,
    IdentityKind,
    RedisTokenStore,
    RetryPolicy,
    SecretToken,
    TokenSealer,
)
from grpc_obo._exchange._exchanger import Exchanger
from tests.exchangers import Counted, on_behalf_of
from tests.outcomes import Outcomes


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def read_line(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    line = await reader.readline()
    return json.loads(line) if line else None


async def call(
    exchanger: Exchanger, counted: Counted, outcomes: Outcomes, command: dict[str, Any]
) -> None:
    user = command["user"]
    identity = Identity(
        tid=user["tid"],
        oid=user["oid"],
        sub=user["sub"],
        kind=IdentityKind.USER,
        token=SecretToken(user["token"]),
    )

    async def one() -> tuple[str, float]:
        token = await exchanger.acquire(
            [command["scope"]], identity=identity, timeout=command.get("timeout")
        )
        return hashlib.sha256(token.reveal().encode()).hexdigest(), time.time()

    started = time.time()
    results = await asyncio.gather(*(one() for _ in range(command["n"])), return_exceptions=True)
    digests = [o[0] for o in results if isinstance(o, tuple)]
    say(
        {
            "started": started,
            "finished": max((o[1] for o in results if isinstance(o, tuple)), default=None),
            "digests": digests,
            "errors": [type(o).__name__ for o in results if isinstance(o, BaseException)],
            "exchanges": counted.exchanges,
            "stats": dict(outcomes),
        }
    )


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = await read_line(reader)
    assert config is not None
    client = ConfidentialClient(
        client_id=config["client_id"],
        tenant=config["tenant_id"],
        credential=ClientCredential.secret(config["client_secret"]),
        authority_host=config["authority_host"],
        ca_file=config["ca_file"],
    )
    outcomes = Outcomes()
    store = RedisTokenStore.from_url(
        config["redis_url"],
        sealer=TokenSealer(bytes.fromhex(config["sealing_key"])),
        namespace=config["namespace"],
        lease_ttl=config["lease_ttl"],
        timeout=config["redis_timeout"],
        observer=outcomes,
    )
    counted = Counted()
    exchanger = on_behalf_of(
        client,
        store=store,
        retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, budget=5.0),
        observer=counted,
    )
    try:
        # Warm up what every replica has done long before a burst: MSAL's discovery, the
        # Redis connection and the subscription to the store's notifications.
        await exchanger._runner.application(config["tenant_id"])
        await store.get("warm-up")
        for _ in range(1000):
            if store.notifications_live:
                break
            await asyncio.sleep(0.01)
        say({"ready": True})
        while (command := await read_line(reader)) is not None:
            if command["cmd"] == "exit":
                break
            if command["cmd"] == "call":
                await call(exchanger, counted, outcomes, command)
    finally:
        await exchanger.close()
        await store.close()  # passed in: the exchanger leaves it open


if __name__ == "__main__":
    asyncio.run(main())
