"""The Original API: validates the user's token, then calls the Downstream API as that user.

It never forwards the token it received (its audience is this API, not the downstream) and never
uses an application permission to act for the user: the outbound channel's interceptors exchange
the user's token On-Behalf-Of for one whose audience is the Downstream API, cached per user.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc

import grpc_obo
from examples.caller import caller
from examples.gen.demo.v1 import demo_pb2, demo_pb2_grpc

POLICY = grpc_obo.Policy(default=grpc_obo.MethodPolicy(scopes={"access_as_user"}))
DOWNSTREAM_TIMEOUT = 10.0


class OriginalService(demo_pb2_grpc.OriginalServicer):
    def __init__(self, downstream: demo_pb2_grpc.DownstreamStub) -> None:
        self._downstream = downstream

    async def GetProfile(
        self, request: demo_pb2.ProfileRequest, context: grpc.aio.ServicerContext
    ) -> demo_pb2.Profile:
        record = await self._downstream.GetRecord(
            demo_pb2.RecordRequest(id=request.record_id), timeout=DOWNSTREAM_TIMEOUT
        )
        return demo_pb2.Profile(seen_by_original=caller(), record=record)

    async def ListProfiles(
        self, request: demo_pb2.ListRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[demo_pb2.Profile]:
        seen = caller()
        async for record in self._downstream.ListRecords(request, timeout=DOWNSTREAM_TIMEOUT):
            yield demo_pb2.Profile(seen_by_original=seen, record=record)

    async def UploadRecords(
        self, request_iterator: AsyncIterator[demo_pb2.Record], context: grpc.aio.ServicerContext
    ) -> demo_pb2.PutSummary:
        summary: demo_pb2.PutSummary = await self._downstream.PutRecords(
            request_iterator, timeout=DOWNSTREAM_TIMEOUT
        )
        return summary

    async def SyncProfiles(
        self, request_iterator: AsyncIterator[demo_pb2.Record], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[demo_pb2.Profile]:
        seen = caller()
        async for record in self._downstream.SyncRecords(
            request_iterator, timeout=DOWNSTREAM_TIMEOUT
        ):
            yield demo_pb2.Profile(seen_by_original=seen, record=record)


async def start(
    validator: grpc_obo.TokenValidator,
    obo: grpc_obo.OnBehalfOf,
    *,
    downstream: str,
    downstream_scopes: Sequence[str],
    address: str = "127.0.0.1:0",
) -> tuple[grpc.aio.Server, str, grpc.aio.Channel]:
    """Start the Original API; returns the server, its address and the outbound channel."""
    channel = grpc.aio.insecure_channel(
        downstream, interceptors=obo.client_interceptors(scopes=downstream_scopes)
    )
    server = grpc.aio.server(interceptors=[grpc_obo.server_interceptor(validator, policy=POLICY)])
    demo_pb2_grpc.add_OriginalServicer_to_server(
        OriginalService(demo_pb2_grpc.DownstreamStub(channel)), server
    )
    host = address.rsplit(":", 1)[0]
    port = server.add_insecure_port(address)
    await server.start()
    return server, f"{host}:{port}", channel
