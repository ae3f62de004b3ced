"""The example chain on loopback: dev authority, Downstream and Original APIs, real grpc.aio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

import grpc_obo
from examples.chain import start_chain
from examples.gen.demo.v1 import demo_pb2_grpc
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


@pytest.fixture
async def chain(grpc_obo_authority: DevAuthority, settings: Settings) -> AsyncIterator[Chain]:
    running = await start_chain(settings, retry=FAST_RETRY)
    channel = grpc.aio.insecure_channel(running.original)
    try:
        yield Chain(
            grpc_obo_authority,
            settings,
            running.obo,
            running.original,
            running.downstream,
            channel,
        )
    finally:
        await channel.close()
        await running.stop()
