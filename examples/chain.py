"""The whole example chain in one process: KeyVault, DocumentStore, then the Workspace.

    client app ──▶ Workspace ──(On-Behalf-Of)──▶ DocumentStore ──(On-Behalf-Of)──▶ KeyVault

The same servers `python -m examples.<api>` runs, built from a `Settings` document instead of
the environment. With `certificates` (one per API, from `DevAuthority.issue_server_certificate`)
every hop is TLS and a client app connects with `RunningChain.channel()`; without, plaintext on
loopback, which in-process tests may choose. `make demo` runs separate processes, always TLS
unless told otherwise (`examples.processes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc

import grpc_obo
from examples import serving
from examples.config import Downstream
from examples.downstream.app import API as STORE
from examples.original.app import API as WORKSPACE
from examples.settings import Settings
from examples.vault.app import API as VAULT
from examples.world import STORE_SCOPES, VAULT_SCOPES
from grpc_obo.devauthority import ServerCertificate

SERVICES = ("workspace", "store", "vault")


@dataclass
class RunningChain:
    workspace: str
    """The Workspace's address (what a client app calls)."""
    store: str
    vault: str
    workspace_obo: grpc_obo.OnBehalfOf
    store_obo: grpc_obo.OnBehalfOf
    _running: list[serving.Running] = field(repr=False)
    _validators: list[grpc_obo.TokenValidator] = field(repr=False)
    credentials: grpc.ChannelCredentials | None = field(default=None, repr=False)
    """What a client app connects with (trust in the CA of the APIs' certificates); None when
    the chain runs plaintext."""

    def channel(self, address: str | None = None) -> grpc.aio.Channel:
        """A client app's channel to the Workspace (or to `address`), TLS when the chain is."""
        target = address or self.workspace
        if self.credentials is None:
            return grpc.aio.insecure_channel(target)
        return grpc.aio.secure_channel(target, self.credentials)

    async def stop_service(self, name: str) -> None:
        """Take one API down ("workspace", "store" or "vault"), as an outage would."""
        index = {"workspace": 0, "store": 1, "vault": 2}[name]
        await self._running[index].stop(grace=0.5)

    async def stop(self) -> None:
        for running in self._running:
            await running.stop(grace=0.5)
        for validator in self._validators:
            await validator.close()


def _server_credentials(issued: ServerCertificate | None) -> grpc.ServerCredentials | None:
    if issued is None:
        return None
    pair = (issued.key_file.read_bytes(), issued.cert_file.read_bytes())
    return grpc.ssl_server_credentials([pair])


def _channel_credentials(issued: ServerCertificate | None) -> grpc.ChannelCredentials | None:
    return None if issued is None else grpc.ssl_channel_credentials(issued.ca_file.read_bytes())


async def start_chain(
    settings: Settings,
    *,
    cache: grpc_obo.TokenCache | None = None,
    retry: grpc_obo.RetryPolicy | None = None,
    certificates: Mapping[str, ServerCertificate] | None = None,
) -> RunningChain:
    """Start the vault, the store, then the Workspace on free loopback ports.

    `certificates` maps "workspace", "store" and "vault" to the certificate each serves (each
    hop trusts the CA of the next one's); without it, every hop is plaintext on loopback.
    """
    if certificates is not None and set(certificates) != set(SERVICES):
        raise ValueError(f"certificates: give one for each of {', '.join(SERVICES)}")
    tls = dict(certificates or {})
    validators = {
        name: grpc_obo.TokenValidator(settings.validator_options(name))
        for name in ("vault", "downstream", "original")
    }
    store_obo = grpc_obo.OnBehalfOf(settings.confidential_client("downstream"), retry=retry)
    workspace_obo = grpc_obo.OnBehalfOf(
        settings.confidential_client("original"), cache=cache, retry=retry
    )
    started: list[serving.Running] = []
    try:
        vault = await serving.start(
            VAULT,
            validator=validators["vault"],
            listen="127.0.0.1:0",
            server_credentials=_server_credentials(tls.get("vault")),
        )
        started.append(vault)
        store = await serving.start(
            STORE,
            validator=validators["downstream"],
            listen="127.0.0.1:0",
            server_credentials=_server_credentials(tls.get("store")),
            obo=store_obo,
            downstream=Downstream(
                vault.address,
                tuple(settings.scope("vault", s) for s in VAULT_SCOPES),
                _channel_credentials(tls.get("vault")),
            ),
        )
        started.append(store)
        workspace = await serving.start(
            WORKSPACE,
            validator=validators["original"],
            listen="127.0.0.1:0",
            server_credentials=_server_credentials(tls.get("workspace")),
            obo=workspace_obo,
            downstream=Downstream(
                store.address,
                tuple(settings.scope("downstream", s) for s in STORE_SCOPES),
                _channel_credentials(tls.get("store")),
            ),
        )
        started.append(workspace)
    except BaseException:
        for running in reversed(started):
            await running.stop(grace=0)
        owned = len(started) - 1  # the store's Running closes store_obo, the workspace's its own
        for obo in [store_obo, workspace_obo][max(owned, 0) :]:
            await obo.close()
        for validator in validators.values():
            await validator.close()
        raise
    return RunningChain(
        workspace=workspace.address,
        store=store.address,
        vault=vault.address,
        workspace_obo=workspace_obo,
        store_obo=store_obo,
        _running=[workspace, store, vault],
        _validators=list(validators.values()),
        credentials=_channel_credentials(tls.get("workspace")),
    )
