"""One API of the soak's chain as its own process: the Downstream API, or a replica of the
Original API (the middle tier) whose On-Behalf-Of cache is a `RedisTokenStore`.

Run by tests/soak/ as `python -m tests.soak.service`. Public API only. It reads one JSON line
of configuration from stdin, serves the Echo service (all four RPC kinds, plaintext on
127.0.0.1) behind grpc_obo's server interceptor, and says `{"ready": true, "port": ...}`.
Each hop answers `principal` = what it saw, the caller's end last:

    Downstream:  "downstream <tid>/<oid>"  (a UnaryStream whose text starts with "held" gets
                 its replies 0.1 s apart: a stream held open across a replica's kill)
    Original:    "original <tid>/<oid> | downstream <tid>/<oid>"  (and `text` names the replica)

The Original calls the Downstream with the same RPC kind on an `OnBehalfOf` channel, inside
the incoming call's deadline. Then each stdin line is a command (answers are JSON lines):

    {"cmd": "stats"} -> exchanges started, the Redis store's counters, calls served
    {"cmd": "exit"}  -> graceful stop (also on SIGTERM, SIGINT and stdin closed: never an orphan)

Nothing secret is written to stdout; logs (WARNING and up) go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import grpc.aio

import grpc_obo
from tests.exchangers import Metered
from tests.gen.grpc_obo.testing.v1 import echo_pb2, echo_pb2_grpc
from tests.outcomes import Outcomes

_SLACK = 0.05  # seconds of the incoming deadline kept for the answer's way back
HELD = "held"  # UnaryStream requests whose text starts so get replies 0.1 s apart


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class Hop(echo_pb2_grpc.EchoServicer):
    """Echo at one hop: the Downstream answers, the Original calls on and adds what it saw."""

    def __init__(self, name: str, label: str, next_hop: echo_pb2_grpc.EchoStub | None) -> None:
        self.name = name
        self.label = label  # the replica's name, in `text`
        self.next_hop = next_hop
        self.calls = 0

    def _seen(self) -> str:
        me = grpc_obo.current_identity()
        assert me is not None  # the interceptor refused the call otherwise
        self.calls += 1
        return f"{self.name} {me.principal}"

    @staticmethod
    def _timeout(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
        left = context.time_remaining()
        return None if left is None else max(left - _SLACK, 0.001)

    def _reply(self, reply: echo_pb2.EchoResponse, seen: str) -> echo_pb2.EchoResponse:
        return echo_pb2.EchoResponse(
            text=f"{reply.text}@{self.label}", principal=f"{seen} | {reply.principal}"
        )

    async def UnaryUnary(
        self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> echo_pb2.EchoResponse:
        seen = self._seen()
        if self.next_hop is None:
            return echo_pb2.EchoResponse(text=request.text, principal=seen)
        reply = await self.next_hop.UnaryUnary(request, timeout=self._timeout(context))
        return self._reply(reply, seen)

    async def UnaryStream(
        self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[echo_pb2.EchoResponse]:
        seen = self._seen()
        if self.next_hop is None:
            for n in range(request.count):
                if n and request.text.startswith(HELD):  # a stream held open (the soak's kill)
                    await asyncio.sleep(0.1)
                yield echo_pb2.EchoResponse(text=f"{request.text}#{n}", principal=seen)
            return
        async for reply in self.next_hop.UnaryStream(request, timeout=self._timeout(context)):
            yield self._reply(reply, seen)

    async def StreamUnary(
        self,
        request_iterator: AsyncIterator[echo_pb2.EchoRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> echo_pb2.EchoResponse:
        seen = self._seen()
        texts = [request.text async for request in request_iterator]
        if self.next_hop is None:
            return echo_pb2.EchoResponse(text="+".join(texts), principal=seen)
        reply = await self.next_hop.StreamUnary(_requests(texts), timeout=self._timeout(context))
        return self._reply(reply, seen)

    async def StreamStream(
        self,
        request_iterator: AsyncIterator[echo_pb2.EchoRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[echo_pb2.EchoResponse]:
        seen = self._seen()
        if self.next_hop is None:
            async for request in request_iterator:
                yield echo_pb2.EchoResponse(text=request.text, principal=seen)
            return
        # NOTE: read the caller's (short) request stream before calling on: a refusal while the
        # client still streams requests can reach it as INTERNAL (grpc issue 36066).
        texts = [request.text async for request in request_iterator]
        call = self.next_hop.StreamStream(_requests(texts), timeout=self._timeout(context))
        async for reply in call:
            yield self._reply(reply, seen)


async def _requests(texts: Iterable[str]) -> AsyncIterator[echo_pb2.EchoRequest]:
    for text in texts:
        yield echo_pb2.EchoRequest(text=text)


def validator_options(config: dict[str, Any]) -> grpc_obo.ValidatorOptions:
    return grpc_obo.ValidatorOptions(
        tenant="organizations",
        allowed_tenants=frozenset(config["allowed_tenants"]),
        audiences=frozenset(config["audiences"]),
        authority_host=config["authority_host"],
        v1_issuer_host=config["authority_host"],
        ca_file=config["ca_file"],
    )


async def serve(config: dict[str, Any], commands: asyncio.StreamReader) -> None:
    validator = grpc_obo.TokenValidator(validator_options(config))
    obo: grpc_obo.OnBehalfOf | None = None
    metered: Metered | None = None
    store: grpc_obo.RedisTokenStore | None = None
    outcomes = Outcomes()
    channel: grpc.aio.Channel | None = None
    next_hop = None
    if config["role"] == "original":
        store = grpc_obo.RedisTokenStore.from_url(
            config["redis_url"],
            sealer=grpc_obo.TokenSealer(bytes.fromhex(config["sealing_key"])),
            namespace=config["namespace"],
            lease_ttl=config["lease_ttl"],
            timeout=config["redis_timeout"],
            observer=outcomes,
        )
        metered = Metered()  # exchanges counted from the metrics grpc_obo exports
        obo = grpc_obo.OnBehalfOf(
            grpc_obo.ConfidentialClient(
                client_id=config["client_id"],
                tenant=config["tenant_id"],
                credential=grpc_obo.ClientCredential.secret(config["client_secret"]),
                authority_host=config["authority_host"],
                ca_file=config["ca_file"],
            ),
            store=store,
            retry=grpc_obo.RetryPolicy(**config["retry"]),
            telemetry=metered.telemetry(),
        )
        channel = obo.channel(config["downstream"], scopes=[config["downstream_scope"]])
        next_hop = echo_pb2_grpc.EchoStub(channel)
    hop = Hop(config["role"], config["name"], next_hop)
    server = grpc.aio.server(
        interceptors=[
            grpc_obo.server_interceptor(
                validator,
                policy=grpc_obo.Policy(
                    default=grpc_obo.MethodPolicy(scopes=set(config["required_scopes"]))
                ),
            )
        ]
    )
    echo_pb2_grpc.add_EchoServicer_to_server(hop, server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await validator.start()  # signing keys now, as a real replica does before serving
        port = server.add_insecure_port(f"127.0.0.1:{config.get('port', 0)}")
        await server.start()
        say({"ready": True, "port": port})

        async def obey() -> None:
            while True:
                line = await commands.readline()
                if not line:
                    break  # the parent is gone: never outlive it
                command = json.loads(line)
                if command["cmd"] == "exit":
                    break
                if command["cmd"] == "stats":
                    say(
                        {
                            "name": config["name"],
                            "pid": os.getpid(),
                            "calls": hop.calls,
                            "exchanges": metered.exchanges if metered is not None else 0,
                            "store": dict(outcomes),
                            "redis_available": store.available if store else None,
                        }
                    )
            stop.set()

        reader = asyncio.create_task(obey())
        await stop.wait()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await server.stop(1.0)
    finally:
        if channel is not None:
            await channel.close()
        if obo is not None:
            await obo.close()
        if store is not None:
            await store.close()  # passed in, so ours to close: leases released, writes landed
        await validator.close()


async def main() -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    line = await reader.readline()
    if not line:
        return
    config = json.loads(line)
    logging.getLogger().handlers[0].setFormatter(
        logging.Formatter(f"%(asctime)s {config['name']} %(levelname)s %(name)s: %(message)s")
    )
    await serve(config, reader)


if __name__ == "__main__":
    asyncio.run(main())
