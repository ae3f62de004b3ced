"""`make demo`: the whole Zero Trust chain on one machine, on embedded defaults.

    client app ──(aud=Original)──▶ Original API ──(On-Behalf-Of, aud=Downstream)──▶ Downstream API

A local Entra-compatible authority (HTTPS on 127.0.0.1), the Downstream and Original APIs as
grpc.aio servers, and a client app that signs users in with MSAL and calls every RPC kind. It
prints what each API saw (identities, never tokens) and how many exchanges the authority served,
then the trace of one chained call as OpenTelemetry recorded it (exported over OTLP too when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set, e.g. to a local Jaeger).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import grpc
import msal
from opentelemetry import trace

from examples import tracing
from examples.chain import start_chain
from examples.gen.demo.v1 import demo_pb2, demo_pb2_grpc
from examples.settings import Settings
from grpc_obo.devauthority import DevAuthority


def sign_in(authority: DevAuthority, settings: Settings, user: str) -> str:
    """The client app's part: sign `user` in (ROPC, for the demo) for the Original API."""
    found = authority.world.user(user)
    client = msal.PublicClientApplication(
        settings.app("client")["client_id"],
        authority=authority.authority_for(found.tenant_id),
        instance_discovery=False,
        http_client=authority.msal_http_client(),
    )
    result = client.acquire_token_by_username_password(
        found.username, found.password, scopes=[settings.scope("original", "access_as_user")]
    )
    if "access_token" not in result:
        raise SystemExit(f"sign-in failed for {user}: {result.get('error')}")
    return str(result["access_token"])


def who(caller: demo_pb2.Caller) -> str:
    return (
        f"oid={caller.oid} tid={caller.tid} client={caller.client_id} scp={' '.join(caller.scopes)}"
    )


async def records(count: int) -> AsyncIterator[demo_pb2.Record]:
    for number in range(count):
        yield demo_pb2.Record(id=f"r{number}", body=f"body {number}")


async def run_chain(authority: DevAuthority) -> int:
    provider, memory = tracing.setup()
    try:
        return await _run_chain(authority, memory)
    finally:
        provider.shutdown()  # flushes the OTLP exporter, if any


async def _run_chain(authority: DevAuthority, memory: tracing.InMemorySpanExporter) -> int:
    tracer = trace.get_tracer("grpc_obo.demo")
    traced: int | None = None
    settings = Settings(authority.summary())
    chain = await start_chain(settings)
    downstream_address, original_address = chain.downstream, chain.original
    print(f"Downstream API on {downstream_address}, Original API on {original_address}")
    try:
        async with grpc.aio.insecure_channel(original_address) as channel:
            stub = demo_pb2_grpc.OriginalStub(channel)
            for user in ("alice", "carol"):
                token = await asyncio.to_thread(sign_in, authority, settings, user)
                auth = (("authorization", f"Bearer {token}"),)
                print(f"\n{user} signed in (token for the Original API; not shown)")
                # The client app's own span: the trace of this call is printed at the end.
                with tracer.start_as_current_span(f"client app: {user} GetProfile") as span:
                    profile = await stub.GetProfile(
                        demo_pb2.ProfileRequest(record_id="42"), metadata=auth
                    )
                if traced is None:
                    traced = span.get_span_context().trace_id
                print(f"  unary-unary    Original saw   {who(profile.seen_by_original)}")
                print(f"                 Downstream saw {who(profile.record.seen_by_downstream)}")
                request = demo_pb2.ListRequest(count=3)
                streamed = [p async for p in stub.ListProfiles(request, metadata=auth)]
                saw = streamed[0].record.seen_by_downstream.oid
                print(f"  unary-stream   {len(streamed)} records, Downstream saw oid={saw}")
                summary = await stub.UploadRecords(records(5), metadata=auth)
                saw = summary.seen_by_downstream.oid
                print(f"  stream-unary   {summary.stored} stored, Downstream saw oid={saw}")
                synced = [p async for p in stub.SyncProfiles(records(2), metadata=auth)]
                saw = synced[0].record.seen_by_downstream.oid
                print(f"  stream-stream  {len(synced)} synced, Downstream saw oid={saw}")

                # Zero Trust: the Original API's token is not accepted by the Downstream API.
                async with grpc.aio.insecure_channel(downstream_address) as direct:
                    try:
                        await demo_pb2_grpc.DownstreamStub(direct).GetRecord(
                            demo_pb2.RecordRequest(id="42"), metadata=auth
                        )
                        print("  UNEXPECTED: Downstream accepted a token for another API")
                        return 1
                    except grpc.aio.AioRpcError as error:
                        challenge = dict(error.trailing_metadata() or ()).get("www-authenticate")
                        print(f"  forwarding the token instead: {error.code().name} ({challenge})")
        print(
            f"\nauthority served {authority.requests.count(grant='password')} sign-ins and "
            f"{authority.requests.count(grant='obo')} On-Behalf-Of exchanges for "
            "8 downstream calls (one exchange per user: the rest came from the cache)"
        )
        if traced is not None:
            print(f"\ntrace {traced:032x} of alice's first call (exchange: cache miss):")
            for line in tracing.tree(memory.get_finished_spans(), traced):
                print(f"  {line}")
            if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
                print(f"exported over OTLP: look up trace {traced:032x} in Jaeger")
    finally:
        await chain.stop()
    return 0


def main() -> int:
    print("grpc_obo demo: client -> Original API -> (On-Behalf-Of) -> Downstream API")
    with DevAuthority().running_in_thread() as authority:
        print(f"dev authority (Entra-compatible) at {authority.authority_url}")
        return asyncio.run(run_chain(authority))


if __name__ == "__main__":
    sys.exit(main())
