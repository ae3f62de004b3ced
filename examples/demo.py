"""`make demo`: a Zero Trust chain of three APIs on one machine, each in its own process.

    client app ──▶ Workspace ──(On-Behalf-Of)──▶ DocumentStore ──(On-Behalf-Of)──▶ KeyVault

It starts a local Entra-compatible authority (HTTPS on 127.0.0.1) and the three example APIs as
separate processes on free ports, every hop over TLS with a certificate the authority issued each
API (`PLAINTEXT_LOOPBACK=1 make demo` opts out, with a warning). Then, as a client app that
trusts the authority's CA, it signs users of two tenants in with MSAL and narrates: what each
hop saw of the user (oid, tid, the calling app; never a token), the exchanges (a miss, then
cache hits), and the refusals Zero Trust is about. Last, the trace of the first chained call,
read back from the spans each process wrote (and exported over OTLP too when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set). It exits 0 when every outcome was the expected one, and
stops every process it started, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import msal
from opentelemetry import trace

import grpc_obo
from examples import tracing
from examples.gen.workspace.v1 import common_pb2, store_pb2_grpc, workspace_pb2_grpc
from examples.processes import ChainProcesses, StartError, running_chain
from examples.settings import Settings
from examples.signin import sign_in
from grpc_obo.devauthority import msal_http_client

CALL_TIMEOUT = 20.0
APPS = {"client": "the client app", "original": "the Workspace", "downstream": "the store"}


class Unexpected(Exception):
    """An outcome the demo did not expect: it says which, and the demo exits 1."""


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def trailer(error: grpc.aio.AioRpcError, name: str) -> str:
    return str(dict(error.trailing_metadata() or ()).get(name, ""))


def challenge_claims(error: grpc.aio.AioRpcError) -> str | None:
    """The claims a relayed `insufficient_claims` challenge asks for (decoded), if any."""
    header = trailer(error, "www-authenticate")
    if 'error="insufficient_claims"' not in header or 'claims="' not in header:
        return None
    return base64.b64decode(header.split('claims="', 1)[1].split('"', 1)[0]).decode()


async def refused(call: Awaitable[Any], code: grpc.StatusCode, what: str) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        if error.code() != code:
            raise Unexpected(
                f"{what}: {error.code().name} ({error.details()}), not {code.name}"
            ) from None
        return error
    raise Unexpected(f"{what}: accepted, but it should have been refused with {code.name}")


async def iter_async(*items: common_pb2.Document) -> AsyncIterator[common_pb2.Document]:
    for item in items:
        yield item


async def documents(*items: tuple[str, str]) -> AsyncIterator[common_pb2.Document]:
    for document_id, body in items:
        yield common_pb2.Document(id=document_id, body=body)


class Narrator:
    def __init__(self, chain: ChainProcesses, channel: grpc.aio.Channel) -> None:
        self.chain = chain
        self.settings: Settings = chain.settings
        self.workspace = workspace_pb2_grpc.WorkspaceStub(channel)
        self.tokens: dict[str, str] = {}
        self.app_names = {
            self.settings.app(name)["client_id"]: label for name, label in APPS.items()
        }

    async def sign_in(self, user: str, *, claims: str | None = None) -> str:
        token = await asyncio.to_thread(sign_in, self.settings, user, claims=claims)
        self.tokens[user] = token
        return token

    def who(self, user: str) -> str:
        found = self.settings.user(user)
        tenant = next(
            t["name"] for t in self.settings.document["tenants"] if t["id"] == found["tenant_id"]
        )
        return f"{user} ({tenant.capitalize()})"

    def trail(self, trail: Sequence[common_pb2.Seen], indent: str = "    ") -> None:
        for seen in reversed(trail):  # the order the call took: workspace, store, vault
            app = self.app_names.get(seen.client_id, seen.client_id)
            print(
                f"{indent}{seen.service:<9} saw oid={seen.oid} tid={seen.tid} "
                f"azp={seen.client_id} ({app}) scp={' '.join(seen.scopes)}"
            )

    def exchanges(self, user: str) -> tuple[int, int]:
        """The On-Behalf-Of exchanges served for `user`: (by the Workspace, by the store)."""
        return (
            self.chain.authority.count(grant="obo", user=user, client="original", ok=True),
            self.chain.authority.count(grant="obo", user=user, client="downstream", ok=True),
        )

    def check_trail(self, user: str, trail: Sequence[common_pb2.Seen]) -> None:
        found = self.settings.user(user)
        expected = [
            ("vault", self.settings.app("downstream")["client_id"]),
            ("store", self.settings.app("original")["client_id"]),
            ("workspace", self.settings.app("client")["client_id"]),
        ]
        got = [(s.service, s.client_id) for s in trail]
        if got != expected or any(
            (s.oid, s.tid) != (found["oid"], found["tenant_id"]) for s in trail
        ):
            raise Unexpected(f"{user}'s identity did not reach every hop intact: {trail}")

    async def watch(self, md: tuple[tuple[str, str], ...]) -> list[common_pb2.Document]:
        """Watch (unary request: a refusal arrives intact, see grpc issue 36066 in the README)."""
        return [
            d
            async for d in self.workspace.WatchDocuments(
                common_pb2.WatchRequest(limit=1), metadata=md, timeout=CALL_TIMEOUT
            )
        ]

    # -- the story ---------------------------------------------------------------------

    async def through_the_chain(self, user: str, traced: list[str]) -> None:
        token = await self.sign_in(user)
        print(
            f"\n{self.who(user)} signs in: the client app holds a token for the Workspace "
            "(not shown)"
        )
        md = auth(token)
        tracer = trace.get_tracer("examples.demo")
        with tracer.start_as_current_span(f"client app: {user} UploadDocuments") as span:
            summary = await self.workspace.UploadDocuments(
                documents(("plan", f"{user}'s plan"), ("notes", f"{user}'s notes")),
                metadata=md,
                timeout=CALL_TIMEOUT,
            )
        if not traced:
            traced.append(f"{span.get_span_context().trace_id:032x}")
        self.check_trail(user, summary.trail)
        print(f"  UploadDocuments (client streaming): {summary.stored} stored; each hop saw:")
        self.trail(summary.trail)
        first = self.exchanges(user)
        document = await self.workspace.GetDocument(
            common_pb2.GetDocumentRequest(id="plan"), metadata=md, timeout=CALL_TIMEOUT
        )
        watched = [
            d
            async for d in self.workspace.WatchDocuments(
                common_pb2.WatchRequest(limit=2), metadata=md, timeout=CALL_TIMEOUT
            )
        ]
        edited = common_pb2.Document(id="plan", body=f"{user}'s plan, v2", revision=1)
        synced = [
            d
            async for d in self.workspace.SyncDocuments(
                iter_async(edited), metadata=md, timeout=CALL_TIMEOUT
            )
        ]
        for result in (document, *watched, *synced):
            self.check_trail(user, result.trail)
        print(
            f"  GetDocument (unary) {document.id!r} revision {document.revision}, sealed with key "
            f"{document.key_id}; WatchDocuments (server streaming) {[d.id for d in watched]}; "
            f"SyncDocuments (bidi) {synced[0].id!r} revision 1 -> {synced[0].revision}"
        )
        after = self.exchanges(user)
        print(
            f"  exchanges for {user}: first call Workspace {first[0]} + store {first[1]} "
            f"(cache miss at each hop), next 3 calls +{after[0] - first[0]} +{after[1] - first[1]}"
            " (cache hits)"
        )
        if first != (1, 1) or after != first:
            raise Unexpected(
                f"exchanges for {user}: {first} then {after}, not (1, 1) then the same"
            )

    async def wrong_audience(self) -> None:
        async with self.chain.channel(self.chain.store) as direct:
            error = await refused(
                store_pb2_grpc.DocumentStoreStub(direct).GetDocument(
                    common_pb2.GetDocumentRequest(id="plan"),
                    metadata=auth(self.tokens["alice"]),
                    timeout=CALL_TIMEOUT,
                ),
                grpc.StatusCode.UNAUTHENTICATED,
                "the Workspace's token sent straight to the store",
            )
        print(
            "  alice's Workspace token sent straight to the store (wrong audience): "
            f"{error.code().name}, {trailer(error, 'www-authenticate')}"
        )

    async def app_token_on_a_user_operation(self) -> None:
        daemon = self.settings.app("daemon")
        client = grpc_obo.ConfidentialClient(
            client_id=daemon["client_id"],
            tenant=self.settings.tenant_id,
            credential=grpc_obo.ClientCredential.secret(daemon["secrets"][0]),
            authority_host=self.settings.authority_host,
            ca_file=self.settings.ca_file,
        )
        scope = f"{self.settings.app('downstream')['app_id_uri']}/.default"
        async with (
            grpc_obo.AppOnly(client) as app_only,
            app_only.channel(
                self.chain.store, scopes=[scope], credentials=self.chain.channel_credentials()
            ) as channel,
        ):
            error = await refused(
                store_pb2_grpc.DocumentStoreStub(channel).GetDocument(
                    common_pb2.GetDocumentRequest(id="plan"), timeout=CALL_TIMEOUT
                ),
                grpc.StatusCode.PERMISSION_DENIED,
                "an app-only token on a user operation",
            )
        print(
            "  the daemon's app-only token (client credentials, role Data.Read.All) on the "
            f"store's GetDocument, a user operation: {error.code().name} ({error.details()})"
        )

    async def bob_asks_for_alices_document(self) -> None:
        md = auth(await self.sign_in("bob"))
        alice = self.settings.user("alice")
        error = await refused(
            self.workspace.GetDocument(
                common_pb2.GetDocumentRequest(id="plan"), metadata=md, timeout=CALL_TIMEOUT
            ),
            grpc.StatusCode.NOT_FOUND,
            "bob asking for document 'plan'",
        )
        print(
            f"  bob asks for 'plan' (alice has one): {error.code().name}: the store looks in bob's "
            "own documents, keyed by his token's tid + oid"
        )
        error = await refused(
            self.workspace.GetDocument(
                common_pb2.GetDocumentRequest(
                    id="plan", owner=f"{alice['tenant_id']}/{alice['oid']}"
                ),
                metadata=md,
                timeout=CALL_TIMEOUT,
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            "bob naming alice as the owner",
        )
        print(
            f"  bob names alice as the owner in the request: {error.code().name} "
            f"({error.details()})"
        )

    async def mfa(self) -> None:
        md = auth(await self.sign_in("dave"))
        request = common_pb2.GetDocumentRequest(id="plan")
        error = await refused(self.watch(md), grpc.StatusCode.UNAUTHENTICATED, "dave without MFA")
        claims = challenge_claims(error)
        if claims is None:
            raise Unexpected(
                f"dave's refusal carried no claims challenge: {trailer(error, 'www-authenticate')}"
            )
        print(
            "  dave signs in with a password and watches his documents; the vault's conditional "
            "access needs MFA: the store's exchange for the vault gets a claims challenge, "
            "relayed by the store and the Workspace to the client app: "
            f'{error.code().name}, error="insufficient_claims", claims={claims}'
        )
        md = auth(await self.sign_in("dave", claims=claims))
        summary = await self.workspace.UploadDocuments(
            documents(("plan", "dave's plan")), metadata=md, timeout=CALL_TIMEOUT
        )
        document = await self.workspace.GetDocument(request, metadata=md, timeout=CALL_TIMEOUT)
        self.check_trail("dave", document.trail)
        print(
            "  a password cannot answer MFA: the client app signs dave in interactively (device "
            "code flow; the authority's sign-in page filled in over HTTP, its MFA step approved)"
        )
        print(
            f"  dave signs in again, answering the challenge (MFA): {summary.stored} stored, "
            f"GetDocument 'plan' -> revision {document.revision}"
        )

    async def missing_consent(self) -> None:
        authority = self.chain.authority
        authority.control(op="consent", client="downstream", resource="vault", grant=False)
        md = auth(self.tokens["bob"])
        try:
            error = await refused(
                self.watch(md),
                grpc.StatusCode.PERMISSION_DENIED,
                "the store without consent for the vault",
            )
        finally:
            authority.control(
                op="consent",
                client="downstream",
                resource="vault",
                grant=True,
                scopes=["Keys.Read"],
            )
        print(
            "  an administrator withdraws the store's consent (Keys.Read on the vault); bob's "
            f"first call that needs his key: {error.code().name}, "
            f"{trailer(error, 'www-authenticate')}"
        )
        summary = await self.workspace.UploadDocuments(
            documents(("plan", "bob's plan")), metadata=md, timeout=CALL_TIMEOUT
        )
        print(f"  consent granted again: bob's upload stores {summary.stored}")


class Secretless:
    """Workload identity in the middle tiers: what they hold, and a pod that is refused."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def middle_tiers_hold_no_secret(self) -> None:
        for app, label in (("original", "the Workspace"), ("downstream", "the store")):
            given = self.settings.middle_tier_credential(app)
            if set(given) != {"AZURE_FEDERATED_TOKEN_FILE"}:
                raise Unexpected(f"{label} was given {sorted(given)}, not a token file")
        print(
            "no middle tier holds a secret or a private key: the Workspace and the store prove "
            "who they are with workload identity, a service-account token file from the dev "
            "cluster's issuer (AZURE_FEDERATED_TOKEN_FILE, rotated while they run), which their "
            "app registrations trust as a federated credential"
        )

    async def unfederated_service_account(self) -> None:
        token_file = self.settings.workload_token("intruder")
        if token_file is None:
            raise Unexpected("the authority projected no token for the intruder's pod")
        result = await asyncio.to_thread(self._as_workspace, Path(token_file))
        if result.get("error_codes") != [700213]:
            raise Unexpected(f"the intruder's pod: {result.get('error_codes') or 'a token'}")
        print(
            "  a pod of the same cluster running as service account demo:intruder presents its "
            f"token as the Workspace's credential: {result['error']}, AADSTS700213 (no federated "
            "credential of the Workspace names its subject)"
        )

    def _as_workspace(self, token_file: Path) -> dict[str, Any]:
        host = urlsplit(self.settings.authority_host)
        app = msal.ConfidentialClientApplication(
            self.settings.app("original")["client_id"],
            client_credential={"client_assertion": lambda: token_file.read_text()},
            authority=f"{self.settings.authority_host}/{self.settings.tenant_id}",
            instance_discovery=False,
            http_client=msal_http_client(self.settings.ca_file, host=host.hostname, port=host.port),
        )
        result: dict[str, Any] = app.acquire_token_for_client(
            [self.settings.scope("downstream", ".default")]
        )
        return result


async def narrate(chain: ChainProcesses, workdir: Path) -> int:
    provider = tracing.setup(
        os.environ.get("OTEL_SERVICE_NAME") or "grpc-obo-demo",
        {**os.environ, "SPANS_FILE": str(workdir / "client.spans.jsonl")},
    )
    traced: list[str] = []
    secretless = Secretless(chain.settings)
    try:
        secretless.middle_tiers_hold_no_secret()
        async with chain.channel(chain.workspace) as channel:
            story = Narrator(chain, channel)
            print("\n== Through the chain, as the signed-in user ==")
            for user in ("alice", "carol"):
                await story.through_the_chain(user, traced)
            print("\n== Refusals ==")
            await story.wrong_audience()
            await story.app_token_on_a_user_operation()
            await story.bob_asks_for_alices_document()
            await story.mfa()
            await story.missing_consent()
            await secretless.unfederated_service_account()
    except Unexpected as error:
        print(f"\nUNEXPECTED: {error}")
        return 1
    finally:
        provider.shutdown()  # the client app's spans, written and exported
    codes = await asyncio.to_thread(chain.stop_services)
    print(f"\nAPIs stopped (SIGTERM, calls in flight finished): exit codes {codes}")
    if traced:
        spans = tracing.read_spans([*chain.spans_files, workdir / "client.spans.jsonl"])
        print(f"\ntrace {traced[0]} of alice's first call (exchanges: cache misses):")
        for line in tracing.tree(spans, traced[0]):
            print(f"  {line}")
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            print(f"exported over OTLP by every process: look up trace {traced[0]} in Jaeger")
    return 0 if all(code == 0 for code in codes.values()) else 1


def main() -> int:
    print(
        "grpc_obo demo: client app -> Workspace -> (On-Behalf-Of) -> DocumentStore "
        "-> (On-Behalf-Of) -> KeyVault"
    )
    prefix = os.environ.get("OTEL_SERVICE_NAME") or "grpc-obo-demo"
    plaintext = os.environ.get("PLAINTEXT_LOOPBACK", "").strip() == "1"
    with tempfile.TemporaryDirectory(prefix="grpc-obo-demo-") as workdir:
        try:
            with running_chain(
                Path(workdir), service_name_prefix=prefix, plaintext_loopback=plaintext
            ) as chain:
                pids = ", ".join(
                    f"{name} {address} (pid {chain.services[name].process.pid})"
                    for name, address in chain.addresses.items()
                )
                print(
                    f"dev authority at {chain.settings.authority_host} "
                    f"(pid {chain.authority.process.pid}); {pids}"
                )
                if plaintext:
                    print(
                        "WARNING: PLAINTEXT_LOOPBACK=1: every hop without TLS; bearer tokens "
                        "cross loopback unencrypted"
                    )
                else:
                    print(
                        "every hop over TLS: each API serves a certificate from the dev "
                        "authority's CA, which the client app and the middle tiers trust"
                    )
                return asyncio.run(narrate(chain, Path(workdir)))
        except StartError as error:
            print(f"could not start the chain: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted: every process the demo started is stopped", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
