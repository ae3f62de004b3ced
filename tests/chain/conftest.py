"""The example chain in one process: dev authority (the examples' world), Workspace, store, vault.

client ──▶ Workspace ──(On-Behalf-Of)──▶ DocumentStore ──(On-Behalf-Of)──▶ KeyVault
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import pytest

import grpc_obo
from examples.chain import RunningChain, start_chain
from examples.gen.workspace.v1 import common_pb2, workspace_pb2_grpc
from examples.settings import Settings
from examples.world import apply_policies, example_world
from grpc_obo.devauthority import DevAuthority

FAST_RETRY = grpc_obo.RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05, budget=2.0)
TIMEOUT = 20.0  # every RPC of these tests


@pytest.fixture(scope="session")
def example_authority_session() -> Iterator[DevAuthority]:
    with DevAuthority(world=example_world()).running_in_thread() as authority:
        yield authority


@pytest.fixture
def example_authority(example_authority_session: DevAuthority) -> Iterator[DevAuthority]:
    """The examples' authority with its policies, consents and log as at start, for one test."""
    authority = example_authority_session
    consents = {
        app.name: (dict(app.api_permissions), dict(app.pre_authorized))
        for app in authority.world.apps
    }
    authority.faults.clear()
    authority.requests.clear()
    apply_policies(authority)
    yield authority
    authority.faults.clear()
    authority.requests.clear()
    for app in authority.world.apps:
        app.api_permissions, app.pre_authorized = map(dict, consents[app.name])


@dataclass
class Chain:
    authority: DevAuthority
    settings: Settings
    running: RunningChain
    channel: grpc.aio.Channel

    @property
    def stub(self) -> workspace_pb2_grpc.WorkspaceStub:
        return workspace_pb2_grpc.WorkspaceStub(self.channel)

    def token(self, user: str = "alice", **claims: object) -> str:
        """A token the client app would hold for the Workspace (minted, no HTTP)."""
        return self.authority.mint_user_token(
            user, audience="original", client="client", scopes=["access_as_user"], **claims
        )

    @staticmethod
    def auth(token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),)

    def exchanges(self, user: str | None = None, *, by: str | None = None) -> int:
        """Successful On-Behalf-Of exchanges (for `user`, by the registration `by`)."""
        client = self.authority.world.app(by).client_id if by else None
        return self.authority.requests.count(grant="obo", user=user, client_id=client, ok=True)

    def owner(self, user: str) -> str:
        found = self.authority.world.user(user)
        return f"{found.tenant_id}/{found.oid}"

    async def upload(
        self, user: str, *ids: str, token: str | None = None
    ) -> common_pb2.UploadSummary:
        async def documents() -> AsyncIterator[common_pb2.Document]:
            for document_id in ids:
                yield common_pb2.Document(id=document_id, body=f"{user}: {document_id}")

        summary: common_pb2.UploadSummary = await self.stub.UploadDocuments(
            documents(), metadata=self.auth(token or self.token(user)), timeout=TIMEOUT
        )
        return summary

    async def watch(self, token: str, limit: int = 1) -> list[common_pb2.Document]:
        return [
            d
            async for d in self.stub.WatchDocuments(
                common_pb2.WatchRequest(limit=limit), metadata=self.auth(token), timeout=TIMEOUT
            )
        ]


@pytest.fixture
def settings(example_authority: DevAuthority) -> Settings:
    return Settings(example_authority.summary())


@pytest.fixture
async def chain(example_authority: DevAuthority, settings: Settings) -> AsyncIterator[Chain]:
    running = await start_chain(settings, retry=FAST_RETRY)
    channel = grpc.aio.insecure_channel(running.workspace)
    try:
        yield Chain(example_authority, settings, running, channel)
    finally:
        await channel.close()
        await running.stop()
