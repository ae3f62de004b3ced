"""The Workspace: the API users call; it calls the DocumentStore as the signed-in user.

It validates the user's token (delegated scope `access_as_user`) and keeps no documents. It never
forwards the token it received (its audience is this API, not the store) and never uses an
application permission to act for a user: its outbound channel exchanges the user's token
On-Behalf-Of for one whose audience is the store, cached per user.

Refusals from the store's side of the chain (a claims challenge, missing consent, an unavailable
store) are not caught here: grpc_obo ends the user's call with the store's status and
`www-authenticate` challenge, so the client app can act on it. The store's answers about the
documents themselves (not found, invalid) are passed on as they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

import grpc_obo
from examples.caller import refuse_other_owner, seen
from examples.gen.workspace.v1 import common_pb2, store_pb2_grpc, workspace_pb2, workspace_pb2_grpc
from examples.serving import Api

NAME = "workspace"
SERVICE = workspace_pb2.DESCRIPTOR.services_by_name["Workspace"]
POLICY = grpc_obo.Policy(
    methods={SERVICE.full_name: grpc_obo.MethodPolicy(scopes={"access_as_user"})}, strict=True
)
STORE_TIMEOUT = 10.0  # unless the user's call has a shorter deadline
# The store's answers about documents, which the user may see as they are.
_ANSWERS = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DATA_LOSS,
    }
)


def _timeout(context: grpc.aio.ServicerContext) -> float:  # type: ignore[type-arg]
    """The next hop gets what is left of the user's deadline, at most STORE_TIMEOUT."""
    remaining = context.time_remaining()
    return STORE_TIMEOUT if remaining is None else min(remaining, STORE_TIMEOUT)


@contextlib.asynccontextmanager
async def _store_answers(
    context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
) -> AsyncIterator[None]:
    try:
        yield
    except grpc.aio.AioRpcError as error:
        if error.code() in _ANSWERS:
            await context.abort(error.code(), error.details() or "")
        raise  # refusals and outages: grpc_obo relays them with the store's challenge


class Workspace(workspace_pb2_grpc.WorkspaceServicer):
    def __init__(self, store: store_pb2_grpc.DocumentStoreStub) -> None:
        self._store = store

    async def GetDocument(
        self,
        request: common_pb2.GetDocumentRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> common_pb2.Document:
        await refuse_other_owner(request.owner, context)  # before any exchange
        async with _store_answers(context):
            document: common_pb2.Document = await self._store.GetDocument(
                request, timeout=_timeout(context)
            )
        document.trail.append(seen(NAME))
        return document

    async def WatchDocuments(
        self,
        request: common_pb2.WatchRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> AsyncIterator[common_pb2.Document]:
        await refuse_other_owner(request.owner, context)
        remaining = context.time_remaining()  # a watch lasts as long as the user's call
        call = self._store.WatchDocuments(request, timeout=remaining)
        try:
            async with _store_answers(context):
                async for document in call:
                    document.trail.append(seen(NAME))
                    yield document
        finally:
            call.cancel()  # the user went away: so does the watch on the store

    async def UploadDocuments(
        self,
        request_iterator: AsyncIterator[common_pb2.Document],
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> common_pb2.UploadSummary:
        async with _store_answers(context):
            summary: common_pb2.UploadSummary = await self._store.UploadDocuments(
                request_iterator, timeout=_timeout(context)
            )
        summary.trail.append(seen(NAME))
        return summary

    async def SyncDocuments(
        self,
        request_iterator: AsyncIterator[common_pb2.Document],
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> AsyncIterator[common_pb2.Document]:
        call = self._store.SyncDocuments(request_iterator, timeout=_timeout(context))
        try:
            async with _store_answers(context):
                async for document in call:
                    document.trail.append(seen(NAME))
                    yield document
        finally:
            call.cancel()


def _add(server: grpc.aio.Server, store: grpc.aio.Channel | None) -> None:
    if store is None:
        raise grpc_obo.ConfigurationError("the workspace needs a channel to the store")
    workspace_pb2_grpc.add_WorkspaceServicer_to_server(
        Workspace(store_pb2_grpc.DocumentStoreStub(store)), server
    )


API = Api(
    name=NAME,
    default_listen="127.0.0.1:50051",
    policy=POLICY,
    services=(SERVICE,),
    add=_add,
    next_hop="STORE",
)
