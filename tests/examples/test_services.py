"""The example APIs as the processes `make demo` runs: `python -m examples.{original,downstream,
vault}` configured from the environment, the dev authority as `python -m examples.authority`.

One set of processes serves the whole module, over TLS as the demo runs them: each API serves
the certificate the authority issued it, and clients here trust the authority's CA. A plaintext
client gets nowhere; PLAINTEXT_LOOPBACK=1 is an explicit opt-out that warns. Every process is
stopped at the end, also when a test fails, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import grpc_obo
from examples.chain import start_chain
from examples.gen.workspace.v1 import common_pb2, store_pb2_grpc, workspace_pb2_grpc
from examples.processes import SERVICES, ChainProcesses, Child, running_chain
from examples.settings import Settings
from examples.signin import sign_in
from examples.world import MFA_CLAIMS, apply_policies, example_world
from grpc_obo.devauthority import DevAuthority

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


def _key_body(path: str | Path) -> list[str]:
    """The base64 lines of a PEM private key: what no output may contain."""
    return [line for line in Path(path).read_text().splitlines() if "-----" not in line and line]


async def _health(channel: grpc.aio.Channel) -> grpc.StatusCode:
    try:
        await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=TIMEOUT
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_the_apis_serve_tls_with_the_certificates_the_authority_issued(
    processes: ChainProcesses,
) -> None:
    assert processes.tls
    for name, child in processes.services.items():
        assert any(line.endswith("(TLS)") for line in child.lines), child.output()
        assert not any("PLAINTEXT" in line for line in child.lines), child.output()
        issued = processes.settings.server_certificate(name)
        assert issued is not None and issued["ca_file"] == processes.settings.ca_file
        assert stat.S_IMODE(Path(issued["key_file"]).stat().st_mode) == 0o600


async def test_a_plaintext_client_cannot_talk_to_any_api(processes: ChainProcesses) -> None:
    for name in SERVICES:
        async with grpc.aio.insecure_channel(processes.addresses[name]) as plaintext:
            assert await _health(plaintext) == grpc.StatusCode.UNAVAILABLE, name
        # Nor a TLS client that trusts only the system's CAs, not the authority's.
        async with grpc.aio.secure_channel(
            processes.addresses[name], grpc.ssl_channel_credentials()
        ) as untrusting:
            assert await _health(untrusting) == grpc.StatusCode.UNAVAILABLE, name
        async with processes.channel(processes.addresses[name]) as trusting:
            assert await _health(trusting) == grpc.StatusCode.OK, name


async def test_every_api_is_healthy_and_reflects_its_service(processes: ChainProcesses) -> None:
    for name in SERVICES:
        async with processes.channel(processes.addresses[name]) as channel:
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
    async with processes.channel(processes.workspace) as channel:
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
        processes.channel(processes.workspace) as channel,
        processes.channel(processes.store) as direct,
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
        tenant=settings.tenant_id,
        credential=grpc_obo.ClientCredential.secret(daemon["secrets"][0]),
        authority_host=settings.authority_host,
        ca_file=settings.ca_file,
    )
    scope = f"{settings.app('downstream')['app_id_uri']}/.default"
    async with (
        grpc_obo.AppOnly(client) as app_only,
        app_only.channel(
            processes.store, scopes=[scope], credentials=processes.channel_credentials()
        ) as channel,
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
    plaintext = settings.service_env(
        "store", listen="127.0.0.1:0", next_address="127.0.0.1:1", plaintext_loopback=True
    )
    no_tls = {k: v for k, v in good.items() if not k.startswith("TLS_")}
    cases = {
        "missing variable": ({**good, "AZURE_CLIENT_ID": ""}, 2, "AZURE_CLIENT_ID is not set"),
        "no credential": (
            {**good, "AZURE_FEDERATED_TOKEN_FILE": ""},
            2,
            "AZURE_FEDERATED_TOKEN_FILE",
        ),
        "no TLS": (no_tls, 2, "TLS_CERT_FILE is not set (or set PLAINTEXT_LOOPBACK=1"),
        "unreadable key": (
            {**good, "TLS_KEY_FILE": "/nonexistent/key.pem"},
            2,
            "TLS_KEY_FILE (/nonexistent/key.pem) cannot be read",
        ),
        "plaintext off loopback": (
            {**plaintext, "LISTEN_ADDRESS": "0.0.0.0:0"},
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
    with contextlib.ExitStack() as stack:  # every process reaped and its pipes closed
        runs = {
            name: stack.enter_context(
                subprocess.Popen(
                    [sys.executable, "-m", "examples.downstream"],
                    cwd=ROOT,
                    env={**base, "PYTHONPATH": str(ROOT), **env},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
            for name, (env, _, _) in cases.items()
        }
        stack.callback(lambda: [run.kill() for run in runs.values()])  # first, on a failure
        for name, run in runs.items():
            out, err = run.communicate(timeout=90)
            _, code, says = cases[name]
            assert run.returncode == code, (name, out, err)
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1 and says in lines[0], (name, err)
            assert "Traceback" not in out + err


async def test_plaintext_loopback_is_an_explicit_opt_out_that_warns(
    processes: ChainProcesses,
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        **processes.settings.service_env("vault", listen="127.0.0.1:0", plaintext_loopback=True),
    }
    assert not any(k.startswith("TLS_") for k in env)
    vault = Child.start("vault", [sys.executable, "-m", "examples.vault"], env, ROOT)
    try:
        serving = re.compile(r"serving on (\S+) \(plaintext, loopback only\)")
        address = (await asyncio.to_thread(vault.next_line, serving, 30)).group(1)
        async with grpc.aio.insecure_channel(address) as plaintext:
            assert await _health(plaintext) == grpc.StatusCode.OK
    finally:
        await asyncio.to_thread(vault.stop)
    warning = [line for line in vault.lines if "WARNING" in line]
    assert len(warning) == 1 and "PLAINTEXT_LOOPBACK=1: serving" in warning[0], vault.output()
    assert "without TLS" in warning[0]


async def test_the_in_process_chain_serves_tls_with_certificates_from_the_api(
    tmp_path: Path,
) -> None:
    """examples.chain with `certificates=`: the same servers, every hop TLS, in one process."""
    with DevAuthority(world=example_world()).running_in_thread() as authority:
        apply_policies(authority)
        certificates = {
            name: authority.issue_server_certificate(tmp_path, name=name) for name in SERVICES
        }
        running = await start_chain(Settings(authority.summary()), certificates=certificates)
        try:
            token = authority.mint_user_token(
                "alice", audience="original", client="client", scopes=["access_as_user"]
            )
            async with running.channel() as channel:
                summary = await workspace_pb2_grpc.WorkspaceStub(channel).UploadDocuments(
                    documents("x"), metadata=auth(token), timeout=TIMEOUT
                )
            assert [s.service for s in summary.trail] == ["vault", "store", "workspace"]
            for address in (running.workspace, running.store, running.vault):
                async with grpc.aio.insecure_channel(address) as plaintext:
                    assert await _health(plaintext) == grpc.StatusCode.UNAVAILABLE
        finally:
            await running.stop()


def test_no_private_key_or_token_in_any_output(processes: ChainProcesses) -> None:
    """Last in the module: every process's output so far, searched for every key it serves."""
    keys = []
    for name in SERVICES:
        issued = processes.settings.server_certificate(name)
        assert issued is not None
        keys += _key_body(issued["key_file"])
    assert keys
    for child in [processes.authority, *processes.services.values()]:
        output = "\n".join(child.lines)
        assert "PRIVATE KEY" not in output, child.name
        assert not any(line in output for line in keys), child.name
        assert "eyJ" not in output, child.name  # JWTs: base64url JSON headers
