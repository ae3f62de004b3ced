"""The example APIs as the processes `make demo` runs: `python -m examples.{original,downstream,
vault}` configured from the environment, the dev authority as `python -m examples.authority`.

One set of processes serves the whole module (plaintext on loopback, as the demo runs them);
the TLS test starts its own. Every process is stopped at the end, also when a test fails, and
every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import grpc_obo
from examples.gen.workspace.v1 import common_pb2, store_pb2_grpc, workspace_pb2_grpc
from examples.processes import SERVICES, ChainProcesses, Child, running_chain
from examples.signin import sign_in
from examples.world import MFA_CLAIMS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20.0
SERVICE_NAMES = {
    "workspace": "workspace.v1.Workspace",
    "store": "workspace.v1.DocumentStore",
    "vault": "workspace.v1.KeyVault",
}


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChainProcesses]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with running_chain(tmp_path_factory.mktemp("chain"), environ=env) as chain:
        yield chain


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def trailer(error: grpc.aio.AioRpcError, name: str) -> str:
    return str(dict(error.trailing_metadata() or ()).get(name, ""))


async def documents(*ids: str) -> AsyncIterator[common_pb2.Document]:
    for document_id in ids:
        yield common_pb2.Document(id=document_id, body=f"body of {document_id}")


async def watch(stub: workspace_pb2_grpc.WorkspaceStub, token: str) -> list[common_pb2.Document]:
    request = common_pb2.WatchRequest(limit=1)
    return [d async for d in stub.WatchDocuments(request, metadata=auth(token), timeout=TIMEOUT)]


async def test_every_api_is_healthy_and_reflects_its_service(processes: ChainProcesses) -> None:
    for name in SERVICES:
        async with grpc.aio.insecure_channel(processes.addresses[name]) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", SERVICE_NAMES[name]):
                answer = await health.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT
                )
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            reflected = [
                r
                async for r in reflection_pb2_grpc.ServerReflectionStub(
                    channel
                ).ServerReflectionInfo(iter([request]), timeout=TIMEOUT)
            ]
            listed = {s.name for s in reflected[0].list_services_response.service}
            assert SERVICE_NAMES[name] in listed


async def test_a_signed_in_user_reaches_every_hop_with_one_exchange_per_hop(
    processes: ChainProcesses,
) -> None:
    settings = processes.settings
    carol = settings.user("carol")  # the second tenant
    token = await asyncio.to_thread(sign_in, settings, "carol")
    async with grpc.aio.insecure_channel(processes.workspace) as channel:
        stub = workspace_pb2_grpc.WorkspaceStub(channel)
        summary = await stub.UploadDocuments(
            documents("a", "b"), metadata=auth(token), timeout=TIMEOUT
        )
        for _ in range(3):
            got = await stub.GetDocument(
                common_pb2.GetDocumentRequest(id="a"), metadata=auth(token), timeout=TIMEOUT
            )
    for trail in (summary.trail, got.trail):
        assert [(s.service, s.client_id) for s in trail] == [
            ("vault", settings.app("downstream")["client_id"]),
            ("store", settings.app("original")["client_id"]),
            ("workspace", settings.app("client")["client_id"]),
        ]
        assert {(s.oid, s.tid) for s in trail} == {(carol["oid"], carol["tenant_id"])}
    count = processes.authority.count
    assert count(grant="obo", user="carol", client="original", ok=True) == 1
    assert count(grant="obo", user="carol", client="downstream", ok=True) == 1


async def test_refusals_across_processes(processes: ChainProcesses) -> None:
    settings = processes.settings
    alice_token = await asyncio.to_thread(sign_in, settings, "alice")
    bob_token = await asyncio.to_thread(sign_in, settings, "bob")
    async with (
        grpc.aio.insecure_channel(processes.workspace) as channel,
        grpc.aio.insecure_channel(processes.store) as direct,
    ):
        stub = workspace_pb2_grpc.WorkspaceStub(channel)
        await stub.UploadDocuments(documents("plan"), metadata=auth(alice_token), timeout=TIMEOUT)

        # The Workspace's token sent straight to the store: wrong audience.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await store_pb2_grpc.DocumentStoreStub(direct).GetDocument(
                common_pb2.GetDocumentRequest(id="plan"), metadata=auth(alice_token)
            )
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert 'error="invalid_token"' in trailer(raised.value, "www-authenticate")

        # bob asking for alice's document: his own shelf has none; naming her is refused.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetDocument(
                common_pb2.GetDocumentRequest(id="plan"), metadata=auth(bob_token)
            )
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        alice = settings.user("alice")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetDocument(
                common_pb2.GetDocumentRequest(
                    id="plan", owner=f"{alice['tenant_id']}/{alice['oid']}"
                ),
                metadata=auth(bob_token),
            )
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED

        # dave must pass MFA for the vault: the challenge is relayed by two middle tiers.
        dave_token = await asyncio.to_thread(sign_in, settings, "dave")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await watch(stub, dave_token)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        header = trailer(raised.value, "www-authenticate")
        assert 'error="insufficient_claims"' in header
        claims = base64.b64decode(header.split('claims="', 1)[1].split('"', 1)[0]).decode()
        assert claims == MFA_CLAIMS
        assert "127.0.0.1" not in (raised.value.details() or "")
        answered = await asyncio.to_thread(sign_in, settings, "dave", claims=claims)
        summary = await stub.UploadDocuments(
            documents("plan"), metadata=auth(answered), timeout=TIMEOUT
        )
        assert summary.stored == 1

        # The store's consent on the vault withdrawn: bob's first call needing his key.
        processes.authority.control(op="consent", client="downstream", resource="vault")
        try:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await watch(stub, bob_token)
        finally:
            processes.authority.control(
                op="consent",
                client="downstream",
                resource="vault",
                grant=True,
                scopes=["Keys.Read"],
            )
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert 'error="insufficient_scope"' in trailer(raised.value, "www-authenticate")
        summary = await stub.UploadDocuments(  # consent back: the same user, no refusal
            documents("plan"), metadata=auth(bob_token), timeout=TIMEOUT
        )
        assert summary.stored == 1


async def test_an_app_only_token_is_refused_on_a_user_operation(processes: ChainProcesses) -> None:
    settings = processes.settings
    daemon = settings.app("daemon")
    client = grpc_obo.ConfidentialClient(
        client_id=daemon["client_id"],
        tenant_id=settings.tenant_id,
        credential=grpc_obo.ClientCredential.secret(daemon["secrets"][0]),
        authority_host=settings.authority_host,
        ca_file=settings.ca_file,
    )
    scope = f"{settings.app('downstream')['app_id_uri']}/.default"
    async with (
        grpc_obo.AppOnly(client) as app_only,
        app_only.channel(processes.store, scopes=[scope]) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await store_pb2_grpc.DocumentStoreStub(channel).GetDocument(
                common_pb2.GetDocumentRequest(id="plan"), timeout=TIMEOUT
            )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_sigterm_stops_an_api_cleanly(processes: ChainProcesses, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        **processes.settings.service_env("vault", listen="127.0.0.1:0"),
    }
    vault = Child.start("vault", [sys.executable, "-m", "examples.vault"], env, ROOT)
    try:
        vault.next_line(re.compile(r"serving on"), 30)
        vault.process.send_signal(signal.SIGTERM)
        assert vault.process.wait(15) == 0
    finally:
        vault.stop()
    assert any("stopping" in line for line in vault.lines)
    assert not any("Traceback" in line for line in vault.lines), vault.output()


def test_misconfiguration_is_one_line_and_a_nonzero_exit(processes: ChainProcesses) -> None:
    settings = processes.settings
    good = settings.service_env("store", listen="127.0.0.1:0", next_address="127.0.0.1:1")
    cases = {
        "missing variable": ({**good, "AZURE_CLIENT_ID": ""}, 2, "AZURE_CLIENT_ID is not set"),
        "no credential": ({**good, "AZURE_CLIENT_SECRET": ""}, 2, "AZURE_CLIENT_SECRET"),
        "no TLS": ({**good, "PLAINTEXT_LOOPBACK": ""}, 2, "TLS_CERT_FILE is not set"),
        "plaintext off loopback": (
            {**good, "LISTEN_ADDRESS": "0.0.0.0:0"},
            2,
            "loopback addresses only",
        ),
        "unreachable authority": (
            {**good, "AZURE_AUTHORITY_HOST": "https://127.0.0.1:9"},
            1,
            "cannot reach the authority at https://127.0.0.1:9",
        ),
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "OTEL_"))}
    runs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "examples.downstream"],
            cwd=ROOT,
            env={**base, "PYTHONPATH": str(ROOT), **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (env, _, _) in cases.items()
    }
    for name, run in runs.items():
        try:
            out, err = run.communicate(timeout=60)
        finally:
            run.kill()
        _, code, says = cases[name]
        assert run.returncode == code, (name, out, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and says in lines[0], (name, err)
        assert "Traceback" not in out + err


async def test_the_chain_over_tls(tmp_path: Path) -> None:
    # NOTE: the dev authority has no public API for service certificates (yet); its own helper
    # makes a CA and a certificate for 127.0.0.1 that every API here can serve.
    from grpc_obo.devauthority._tls import write_tls_files

    files = write_tls_files(tmp_path / "tls")
    tls = {
        "TLS_CERT_FILE": str(files.cert_file),
        "TLS_KEY_FILE": str(files.key_file),
        "TLS_CA_FILE": str(files.ca_file),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with running_chain(tmp_path / "chain", environ=env, tls=tls) as chain:
        assert not any("PLAINTEXT" in line for c in chain.services.values() for line in c.lines)
        token = await asyncio.to_thread(sign_in, chain.settings, "alice")
        credentials = grpc.ssl_channel_credentials(files.ca_file.read_bytes())
        async with grpc.aio.secure_channel(chain.workspace, credentials) as channel:
            summary = await workspace_pb2_grpc.WorkspaceStub(channel).UploadDocuments(
                documents("x"), metadata=auth(token), timeout=TIMEOUT
            )
        assert [s.service for s in summary.trail] == ["vault", "store", "workspace"]
        async with grpc.aio.insecure_channel(chain.workspace) as plaintext:
            with pytest.raises(grpc.aio.AioRpcError):
                await health_pb2_grpc.HealthStub(plaintext).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
