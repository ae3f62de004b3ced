"""The Downstream API: trusts neither the network nor its caller's word about the user.

Every call carries a token that this service validates itself; the user it serves is the `tid` +
`oid` of that token (`grpc_obo.current_identity()`), never a field of the request. It needs a
delegated token with `Data.Read` (so only the user's own exchanged token works, never the
Original API's application identity).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

import grpc_obo
from examples.caller import caller
from examples.gen.demo.v1 import demo_pb2, demo_pb2_grpc

POLICY = grpc_obo.Policy(default=grpc_obo.MethodPolicy(scopes={"Data.Read"}))
MAX_RECORDS = 100


class DownstreamService(demo_pb2_grpc.DownstreamServicer):
    async def GetRecord(
        self, request: demo_pb2.RecordRequest, context: grpc.aio.ServicerContext
    ) -> demo_pb2.Record:
        return demo_pb2.Record(
            id=request.id, body=f"record {request.id}", seen_by_downstream=caller()
        )

    async def ListRecords(
        self, request: demo_pb2.ListRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[demo_pb2.Record]:
        seen = caller()
        for number in range(min(request.count, MAX_RECORDS)):
            yield demo_pb2.Record(id=str(number), body=f"record {number}", seen_by_downstream=seen)

    async def PutRecords(
        self, request_iterator: AsyncIterator[demo_pb2.Record], context: grpc.aio.ServicerContext
    ) -> demo_pb2.PutSummary:
        stored = 0
        async for _ in request_iterator:
            stored += 1
        return demo_pb2.PutSummary(stored=stored, seen_by_downstream=caller())

    async def SyncRecords(
        self, request_iterator: AsyncIterator[demo_pb2.Record], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[demo_pb2.Record]:
        seen = caller()
        async for record in request_iterator:
            yield demo_pb2.Record(id=record.id, body=record.body, seen_by_downstream=seen)


async def start(
    validator: grpc_obo.TokenValidator, *, address: str = "127.0.0.1:0"
) -> tuple[grpc.aio.Server, str]:
    """Start the Downstream API; returns the server and the address it listens on."""
    server = grpc.aio.server(interceptors=[grpc_obo.server_interceptor(validator, policy=POLICY)])
    demo_pb2_grpc.add_DownstreamServicer_to_server(DownstreamService(), server)
    host = address.rsplit(":", 1)[0]
    # NOTE: plaintext on loopback keeps the demo self-contained; bearer tokens need TLS
    # (grpc.ssl_server_credentials) anywhere else.
    port = server.add_insecure_port(address)
    await server.start()
    return server, f"{host}:{port}"
