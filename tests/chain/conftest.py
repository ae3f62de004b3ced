"""The example chain on loopback: dev authority, Downstream and Original APIs, real grpc.aio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

import grpc_obo
from examples.downstream import app as downstream_app
from examples.gen.demo.v1 import demo_pb2_grpc
from examples.original import app as original_app
from examples.settings import Settings
from grpc_obo.devauthority import DevAuthority

FAST_RETRY = grpc_obo.RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05, budget=2.0)


@dataclass
class Chain:
    authority: DevAuthority
    settings: Settings
    obo: grpc_obo.OnBehalfOf
    original: str
    downstream: str
    channel: grpc.aio.Channel

    @property
    def stub(self) -> demo_pb2_grpc.OriginalStub:
        return demo_pb2_grpc.OriginalStub(self.channel)

    def token(self, user: str = "alice", **claims: object) -> str:
        """A token the client app would hold for the Original API (minted, no HTTP)."""
        return self.authority.mint_user_token(
            user, audience="original", client="client", scopes=["access_as_user"], **claims
        )

    @staticmethod
    def auth(token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),)

    def exchanges(self, user: str | None = None) -> int:
        return self.authority.requests.count(grant="obo", user=user)


@pytest.fixture
def settings(grpc_obo_authority: DevAuthority) -> Settings:
    return Settings(grpc_obo_authority.summary())


async def start_chain(
    authority: DevAuthority, settings: Settings, *, cache: grpc_obo.TokenCache | None = None
) -> tuple[Chain, list[object]]:
    down_validator = grpc_obo.TokenValidator(settings.validator_options("downstream"))
    orig_validator = grpc_obo.TokenValidator(settings.validator_options("original"))
    obo = grpc_obo.OnBehalfOf(
        settings.confidential_client("original"), cache=cache, retry=FAST_RETRY
    )
    downstream, downstream_address = await downstream_app.start(down_validator)
    original, original_address, outbound = await original_app.start(
        orig_validator,
        obo,
        downstream=downstream_address,
        downstream_scopes=[settings.scope("downstream", "Data.Read")],
    )
    channel = grpc.aio.insecure_channel(original_address)
    chain = Chain(authority, settings, obo, original_address, downstream_address, channel)
    return chain, [channel, original, outbound, downstream, obo, orig_validator, down_validator]


async def stop_chain(parts: list[object]) -> None:
    for part in parts:
        if isinstance(part, grpc.aio.Server):
            await part.stop(grace=0.5)
        else:
            await part.close()  # type: ignore[attr-defined]


@pytest.fixture
async def chain(grpc_obo_authority: DevAuthority, settings: Settings) -> AsyncIterator[Chain]:
    built, parts = await start_chain(grpc_obo_authority, settings)
    try:
        yield built
    finally:
        await stop_chain(parts)
