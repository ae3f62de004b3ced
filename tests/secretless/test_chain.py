"""A whole chain with no secret and no private key in any middle tier: client -> Workspace ->
(On-Behalf-Of) -> store -> (On-Behalf-Of) -> vault on real grpc.aio servers, the middle tiers
authenticating with workload identity (projected token files from the dev issuer) through
unmodified MSAL; their registrations' secrets are not even in the settings they are given."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from examples.chain import start_chain
from examples.gen.workspace.v1 import common_pb2, workspace_pb2_grpc
from examples.settings import Settings
from examples.world import WORKLOAD_CLUSTER, WORKLOAD_SUBJECTS, apply_policies, example_world
from grpc_obo.devauthority import DevAuthority

TIMEOUT = 20.0


@pytest.fixture(scope="module")
def examples_authority() -> Iterator[DevAuthority]:
    with DevAuthority(world=example_world()).running_in_thread() as authority:
        apply_policies(authority)
        yield authority


def secretless_settings(authority: DevAuthority, directory: Path) -> Settings:
    document = copy.deepcopy(authority.summary(include_secrets=True))
    document["workload_tokens"] = {
        app: str(
            authority.workloads.project(
                directory / f"{app}.token", subject, cluster=WORKLOAD_CLUSTER
            ).path
        )
        for app, subject in WORKLOAD_SUBJECTS.items()
    }
    for app in WORKLOAD_SUBJECTS:
        document["apps"][app]["secrets"] = []  # nothing to fall back to
        document["apps"][app].pop("certificate_file", None)
    return Settings(document)


@pytest.fixture
async def workspace(
    examples_authority: DevAuthority, tmp_path: Path
) -> AsyncIterator[workspace_pb2_grpc.WorkspaceStub]:
    running = await start_chain(secretless_settings(examples_authority, tmp_path))
    channel = grpc.aio.insecure_channel(running.workspace)
    try:
        yield workspace_pb2_grpc.WorkspaceStub(channel)
    finally:
        await channel.close()
        await running.stop()


async def test_the_chain_runs_with_workload_identity_in_every_middle_tier(
    examples_authority: DevAuthority, workspace: workspace_pb2_grpc.WorkspaceStub
) -> None:
    authority = examples_authority
    alice = authority.world.user("alice")
    token = authority.mint_user_token(
        "alice", audience="original", client="client", scopes=["access_as_user"]
    )

    async def documents() -> AsyncIterator[common_pb2.Document]:
        yield common_pb2.Document(id="plan", body="secretless")

    summary = await workspace.UploadDocuments(
        documents(), metadata=(("authorization", f"Bearer {token}"),), timeout=TIMEOUT
    )
    assert summary.stored == 1
    ids = {name: authority.world.app(name).client_id for name in ("client", "original")}
    ids["downstream"] = authority.world.app("downstream").client_id
    assert [(s.service, s.client_id) for s in summary.trail] == [
        ("vault", ids["downstream"]),
        ("store", ids["original"]),
        ("workspace", ids["client"]),
    ]
    assert {(s.oid, s.tid) for s in summary.trail} == {(alice.oid, alice.tenant_id)}
    for app in ("original", "downstream"):
        assert authority.requests.count(grant="obo", client_id=ids[app], ok=True) >= 1


@pytest.mark.slow
def test_the_demo_middle_tier_processes_hold_no_secret_or_key(tmp_path: Path) -> None:
    """As `make demo` starts them: read each middle tier's environment from /proc."""
    from examples.processes import running_chain

    with running_chain(tmp_path) as chain:
        document = chain.settings.document
        secrets = [s for app in document["apps"].values() for s in app["secrets"]]
        for service in ("workspace", "store"):
            pid = chain.services[service].process.pid
            raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
            assert "AZURE_CLIENT_SECRET" not in env and "AZURE_CLIENT_CERTIFICATE_PATH" not in env
            token_file = Path(env["AZURE_FEDERATED_TOKEN_FILE"])
            assert token_file.read_text().count(".") == 2  # a JWT, no key material
            assert not any(secret in "\n".join(env.values()) for secret in secrets)
            assert "PRIVATE KEY" not in token_file.read_text()
