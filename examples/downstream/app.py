"""The DocumentStore: a per-user document store that trusts neither the network nor its caller.

Every call carries a token this service validates itself, and the documents it touches are those
of the token's `tid` + `oid` (`examples.caller.owner()`), never of a name in the request: bob
asking for alice's document id finds nothing of hers, and a request naming alice as the owner is
refused. Reads need the delegated scope `Data.Read`, writes `Data.Write`, so only a user's own
token (here: one the Workspace got On-Behalf-Of the user) works, never an application's.

It is also a middle tier: each call first fetches the user's data key from the KeyVault through
an On-Behalf-Of channel, and seals (HMAC) each document with it. A refusal on that hop (a claims
challenge, missing consent, an unavailable vault) is not caught here: grpc_obo ends this call
with it, and the Workspace's call in turn, so the client app learns what it must do.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

import grpc_obo
from examples.caller import owner, refuse_other_owner, seen
from examples.gen.workspace.v1 import (
    common_pb2,
    store_pb2,
    store_pb2_grpc,
    vault_pb2,
    vault_pb2_grpc,
)
from examples.serving import Api

NAME = "store"
SERVICE = store_pb2.DESCRIPTOR.services_by_name["DocumentStore"]
READ = grpc_obo.MethodPolicy(scopes={"Data.Read"})
WRITE = grpc_obo.MethodPolicy(scopes={"Data.Write"})
POLICY = grpc_obo.Policy(
    methods={
        f"/{SERVICE.full_name}/GetDocument": READ,
        f"/{SERVICE.full_name}/WatchDocuments": READ,
        f"/{SERVICE.full_name}/UploadDocuments": WRITE,
        f"/{SERVICE.full_name}/SyncDocuments": WRITE,
    },
    strict=True,
)
VAULT_TIMEOUT = 10.0
MAX_DOCUMENTS = 1000  # per user
MAX_BODY = 64 * 1024
MAX_ID = 128
WATCH_BACKLOG = 256  # changes a slow watcher may fall behind before its watch ends


@dataclass
class _Stored:
    body: str
    revision: int
    key_id: str
    seal: bytes


@dataclass(eq=False)
class _Watcher:
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(WATCH_BACKLOG))
    dropped: bool = False


@dataclass
class _Shelf:
    """One user's documents and the watches open on them."""

    documents: dict[str, _Stored] = field(default_factory=dict)
    watchers: set[_Watcher] = field(default_factory=set)

    def changed(self, document_id: str) -> None:
        for watcher in list(self.watchers):
            try:
                watcher.queue.put_nowait(document_id)
            except asyncio.QueueFull:
                watcher.dropped = True
                self.watchers.discard(watcher)


def _seal(key: bytes, document_id: str, revision: int, body: str) -> bytes:
    return hmac.new(key, f"{document_id}\n{revision}\n{body}".encode(), hashlib.sha256).digest()


class DocumentStore(store_pb2_grpc.DocumentStoreServicer):
    def __init__(self, vault: vault_pb2_grpc.KeyVaultStub) -> None:
        self._vault = vault
        self._shelves: dict[str, _Shelf] = {}

    async def _key(self) -> vault_pb2.DataKey:
        """The caller's data key: the KeyVault gives it only to a token for the same user."""
        key: vault_pb2.DataKey = await self._vault.GetDataKey(
            vault_pb2.DataKeyRequest(), timeout=VAULT_TIMEOUT
        )
        return key

    def _shelf(self) -> _Shelf:
        return self._shelves.setdefault(owner(), _Shelf())

    def _trail(self, key: vault_pb2.DataKey) -> list[common_pb2.Seen]:
        return [key.seen, seen(NAME)]

    async def _document(
        self,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
        key: vault_pb2.DataKey,
        document_id: str,
        stored: _Stored,
    ) -> common_pb2.Document:
        if not hmac.compare_digest(
            stored.seal, _seal(key.key, document_id, stored.revision, stored.body)
        ):
            await context.abort(grpc.StatusCode.DATA_LOSS, "the document's seal does not verify")
        return common_pb2.Document(
            id=document_id,
            body=stored.body,
            revision=stored.revision,
            key_id=stored.key_id,
            trail=self._trail(key),
        )

    async def _put(
        self,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
        key: vault_pb2.DataKey,
        shelf: _Shelf,
        document: common_pb2.Document,
    ) -> _Stored:
        if not 0 < len(document.id) <= MAX_ID or len(document.body.encode()) > MAX_BODY:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"a document needs an id of 1 to {MAX_ID} characters and at most {MAX_BODY} bytes",
            )
        previous = shelf.documents.get(document.id)
        if previous is None and len(shelf.documents) >= MAX_DOCUMENTS:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"at most {MAX_DOCUMENTS} documents per user"
            )
        revision = (previous.revision if previous else 0) + 1
        stored = _Stored(
            body=document.body,
            revision=revision,
            key_id=key.key_id,
            seal=_seal(key.key, document.id, revision, document.body),
        )
        shelf.documents[document.id] = stored
        shelf.changed(document.id)
        return stored

    async def GetDocument(
        self,
        request: common_pb2.GetDocumentRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> common_pb2.Document:
        await refuse_other_owner(request.owner, context)
        stored = self._shelf().documents.get(request.id)
        if stored is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "you have no document with this id")
        return await self._document(context, await self._key(), request.id, stored)

    async def WatchDocuments(
        self,
        request: common_pb2.WatchRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> AsyncIterator[common_pb2.Document]:
        await refuse_other_owner(request.owner, context)
        key = await self._key()
        shelf = self._shelf()
        watcher = _Watcher()
        shelf.watchers.add(watcher)  # before the snapshot: no change falls in between
        try:
            sent = 0
            for document_id in sorted(shelf.documents):
                if request.limit and sent >= request.limit:
                    return
                yield await self._document(context, key, document_id, shelf.documents[document_id])
                sent += 1
            while not request.limit or sent < request.limit:
                if watcher.dropped and watcher.queue.empty():
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED, "the watch fell too far behind"
                    )
                document_id = await watcher.queue.get()
                yield await self._document(context, key, document_id, shelf.documents[document_id])
                sent += 1
        finally:
            shelf.watchers.discard(watcher)

    async def UploadDocuments(
        self,
        request_iterator: AsyncIterator[common_pb2.Document],
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> common_pb2.UploadSummary:
        key = await self._key()
        shelf = self._shelf()
        stored = 0
        async for document in request_iterator:
            await self._put(context, key, shelf, document)
            stored += 1
        return common_pb2.UploadSummary(stored=stored, trail=self._trail(key))

    async def SyncDocuments(
        self,
        request_iterator: AsyncIterator[common_pb2.Document],
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> AsyncIterator[common_pb2.Document]:
        """Each document the client sends, stored if its revision is the store's (0: new);
        answered with the store's copy either way, so a stale client gets the newer one."""
        key = await self._key()
        shelf = self._shelf()
        async for document in request_iterator:
            current = shelf.documents.get(document.id)
            if current is None or document.revision == current.revision:
                current = await self._put(context, key, shelf, document)
            yield await self._document(context, key, document.id, current)


def _add(server: grpc.aio.Server, vault: grpc.aio.Channel | None) -> None:
    if vault is None:
        raise grpc_obo.ConfigurationError("the store needs a channel to the vault")
    store_pb2_grpc.add_DocumentStoreServicer_to_server(
        DocumentStore(vault_pb2_grpc.KeyVaultStub(vault)), server
    )


API = Api(
    name=NAME,
    default_listen="127.0.0.1:50052",
    policy=POLICY,
    services=(SERVICE,),
    add=_add,
    next_hop="VAULT",
)
