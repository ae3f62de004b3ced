"""What every example API shares: building its grpc.aio server and running it as a process.

`start()` serves an `Api` with grpc_obo's interceptor (last, after the OpenTelemetry one the
global instrumentor adds first), the standard health service and reflection, and (middle tiers)
an outbound On-Behalf-Of channel to the next hop. `main()` is the process around it: read the
environment (`examples.config`), load signing keys (an unreachable authority fails start-up),
serve, print `<name>: serving on HOST:PORT`, and on SIGTERM or SIGINT go NOT_SERVING, finish the
calls in flight, close and exit 0. Misconfiguration is one line on stderr and exit code 2; an
unreachable authority, exit code 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import grpc_obo
from examples import tracing
from examples.config import Downstream, ServiceConfig

GRACE = 5.0  # seconds the calls in flight get at shutdown
EXIT_CONFIGURATION = 2
EXIT_UNREACHABLE = 1

_LOG = logging.getLogger("examples")


@dataclass(frozen=True)
class Api:
    """One example API: its name, rules, services, and how to put its servicers on a server."""

    name: str
    default_listen: str
    policy: grpc_obo.Policy
    services: tuple[ServiceDescriptor, ...]
    add: Callable[[grpc.aio.Server, grpc.aio.Channel | None], None]
    """Adds the servicers; the channel is the next hop's (None for the last API in the chain)."""
    next_hop: str | None = None
    """Middle tiers: the environment prefix of the next hop (`STORE`, `VAULT`)."""


@dataclass
class Running:
    """A started API: its address, and everything `stop()` must close."""

    address: str
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    _closers: list[object] = field(default_factory=list, repr=False)

    async def stop(self, grace: float = GRACE) -> None:
        # NOT_SERVING first: a load balancer watching health stops sending new calls.
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        for part in self._closers:
            await part.close()  # type: ignore[attr-defined]


async def start(
    api: Api,
    *,
    validator: grpc_obo.TokenValidator,
    listen: str,
    server_credentials: grpc.ServerCredentials | None,
    obo: grpc_obo.OnBehalfOf | None = None,
    downstream: Downstream | None = None,
) -> Running:
    """Serve `api` on `listen` (TLS with `server_credentials`, plaintext without)."""
    api.policy.check_served(api.services)  # a rule naming no served method fails here
    channel = None
    if downstream is not None:
        if obo is None:
            raise grpc_obo.ConfigurationError(f"{api.name} calls on, so it needs an OnBehalfOf")
        channel = obo.channel(
            downstream.address, scopes=downstream.scopes, credentials=downstream.credentials
        )
    server = grpc.aio.server(
        interceptors=[grpc_obo.server_interceptor(validator, policy=api.policy)]
    )
    api.add(server, channel)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    names = [service.full_name for service in api.services]
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    if server_credentials is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, server_credentials)
    await server.start()
    for name in ["", *names]:
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    closers: list[object] = [c for c in (channel, obo) if c is not None]
    return Running(f"{listen.rsplit(':', 1)[0]}:{port}", server, checker, closers)


def main(api: Api) -> int:
    """`python -m examples.<api>`: the API as a process configured from the environment."""
    logging.basicConfig(
        level=logging.INFO, format=f"{api.name}: %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = ServiceConfig.from_env(
            api.name, os.environ, default_listen=api.default_listen, next_hop=api.next_hop
        )
    except grpc_obo.ConfigurationError as error:
        print(f"{api.name}: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIGURATION
    return asyncio.run(_serve(api, config))


async def _serve(api: Api, config: ServiceConfig) -> int:
    stop = _stop_event()  # first: a SIGTERM while starting stops cleanly too
    provider = tracing.setup(f"grpc-obo-{api.name}")
    # Key refreshes are traced like the rest (global providers, set up just above).
    validator = grpc_obo.TokenValidator(config.validator, telemetry=grpc_obo.Telemetry())
    obo = grpc_obo.OnBehalfOf(config.client) if config.client is not None else None
    try:
        quiet = logging.getLogger("grpc_obo.validation")
        level, quiet.level = quiet.level, logging.ERROR  # the line below says it, once
        try:
            await validator.start()  # signing keys now: an unreachable authority fails here
        except grpc_obo.KeySourceUnavailableError:
            print(
                f"{api.name}: cannot reach the authority at {config.validator.authority_host} "
                "(its signing keys could not be fetched)",
                file=sys.stderr,
            )
            return EXIT_UNREACHABLE
        finally:
            quiet.setLevel(level)
        if config.server_credentials is None:
            _LOG.warning(
                "PLAINTEXT_LOOPBACK=1: serving %s without TLS; bearer tokens cross loopback "
                "unencrypted (set TLS_CERT_FILE and TLS_KEY_FILE anywhere else)",
                config.listen,
            )
        try:
            running = await start(
                api,
                validator=validator,
                listen=config.listen,
                server_credentials=config.server_credentials,
                obo=obo,
                downstream=config.downstream,
            )
        except RuntimeError as error:  # grpc: the address cannot be bound
            print(f"{api.name}: cannot serve on {config.listen}: {error}", file=sys.stderr)
            return EXIT_CONFIGURATION
        obo = None  # closed by running.stop()
        transport = "plaintext, loopback only" if config.server_credentials is None else "TLS"
        print(f"{api.name}: serving on {running.address} ({transport})", flush=True)
        await stop.wait()
        print(f"{api.name}: stopping (finishing calls in flight)", flush=True)
        await running.stop()
        return 0
    finally:
        if obo is not None:
            await obo.close()
        await validator.close()
        provider.shutdown()


def _stop_event() -> asyncio.Event:
    """Set on SIGTERM or SIGINT, or (STOP_ON_STDIN_EOF=1) when the parent closes our stdin."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if os.environ.get("STOP_ON_STDIN_EOF") == "1":
        # A process started by the demo or a test exits with its parent, even a killed one.
        # NOTE: os.read, not sys.stdin: a daemon thread blocked inside the buffered reader
        # holds its lock, and the interpreter aborts when it finds it taken at exit.
        def watch() -> None:
            with contextlib.suppress(OSError):
                while os.read(0, 4096):
                    pass
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch, name="stdin-eof", daemon=True).start()
    return stop
