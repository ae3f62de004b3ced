"""Start the whole example chain (Downstream API, then the Original API calling it) in-process.

`make demo` and the end-to-end tests both use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

import grpc_obo
from examples.downstream import app as downstream_app
from examples.original import app as original_app
from examples.settings import Settings


@dataclass
class RunningChain:
    original: str
    """The Original API's address (what a client app calls)."""
    downstream: str
    obo: grpc_obo.OnBehalfOf
    _servers: list[grpc.aio.Server] = field(repr=False)
    _closers: list[object] = field(repr=False)

    async def stop(self) -> None:
        for server in self._servers:
            await server.stop(grace=0.5)
        for part in self._closers:
            await part.close()  # type: ignore[attr-defined]


async def start_chain(
    settings: Settings,
    *,
    cache: grpc_obo.TokenCache | None = None,
    retry: grpc_obo.RetryPolicy | None = None,
) -> RunningChain:
    down_validator = grpc_obo.TokenValidator(settings.validator_options("downstream"))
    orig_validator = grpc_obo.TokenValidator(settings.validator_options("original"))
    obo = grpc_obo.OnBehalfOf(settings.confidential_client("original"), cache=cache, retry=retry)
    downstream, downstream_address = await downstream_app.start(down_validator)
    original, original_address, outbound = await original_app.start(
        orig_validator,
        obo,
        downstream=downstream_address,
        downstream_scopes=[settings.scope("downstream", "Data.Read")],
    )
    return RunningChain(
        original=original_address,
        downstream=downstream_address,
        obo=obo,
        _servers=[original, downstream],
        _closers=[outbound, obo, orig_validator, down_validator],
    )
