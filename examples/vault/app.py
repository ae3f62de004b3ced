"""The KeyVault: the last hop. It releases a user's data key to that user's token only.

It needs a delegated token with `Keys.Read`; the key it returns is derived from the token's
`tid` + `oid`, so the DocumentStore can only obtain the key of the user it is acting for, with
a token it got On-Behalf-Of that user. The master key lives in this process only (a real vault
keeps it in an HSM): keys change when the vault restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import grpc

import grpc_obo
from examples.caller import owner, seen
from examples.gen.workspace.v1 import vault_pb2, vault_pb2_grpc
from examples.serving import Api

NAME = "vault"
SERVICE = vault_pb2.DESCRIPTOR.services_by_name["KeyVault"]
POLICY = grpc_obo.Policy(
    methods={f"/{SERVICE.full_name}/GetDataKey": grpc_obo.MethodPolicy(scopes={"Keys.Read"})},
    strict=True,
)


class KeyVault(vault_pb2_grpc.KeyVaultServicer):
    def __init__(self, master_key: bytes | None = None) -> None:
        self._master = master_key or secrets.token_bytes(32)

    async def GetDataKey(
        self,
        request: vault_pb2.DataKeyRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> vault_pb2.DataKey:
        key = hmac.new(self._master, owner().encode(), hashlib.sha256).digest()
        return vault_pb2.DataKey(
            key_id=hashlib.sha256(key).hexdigest()[:12], key=key, seen=seen(NAME)
        )


def _add(server: grpc.aio.Server, _: grpc.aio.Channel | None) -> None:
    vault_pb2_grpc.add_KeyVaultServicer_to_server(KeyVault(), server)


API = Api(
    name=NAME,
    default_listen="127.0.0.1:50053",
    policy=POLICY,
    services=(SERVICE,),
    add=_add,
)
