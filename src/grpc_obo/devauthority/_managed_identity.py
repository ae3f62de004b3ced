"""A dev managed-identity endpoint: what App Service and Container Apps give a process in
IDENTITY_ENDPOINT and IDENTITY_HEADER, served by the dev authority at `/managed-identity`.

It speaks the 2019-08-01 protocol MSAL Python's `ManagedIdentityClient` (and azure-identity)
use there: `GET IDENTITY_ENDPOINT?api-version=2019-08-01&resource=...&client_id=...` with the
header `X-IDENTITY-HEADER: $IDENTITY_HEADER`, answered with `access_token`, `expires_on` (epoch
seconds, as a string), `resource`, `token_type`, `client_id`. A missing or wrong header is
refused with 401 as the real endpoint does (the header guards against request forgery), an
unknown identity or version with 400, both in its `{"statusCode", "message"}` shape.

The token is a user-assigned managed identity's app token from the authority's own tenant issuer
(`{authority}/<tenant>/v2.0`, `sub` = `oid` = the identity's principal id): for the resource
`api://AzureADTokenExchange` it is what a middle tier presents as its client assertion to an app
with a federated credential for that issuer and subject (`ManagedIdentities.add(federate=...)`).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from grpc_obo.devauthority._registrations import TOKEN_EXCHANGE_AUDIENCE, FederatedCredential
from grpc_obo.devauthority._tokens import TokenMinter
from grpc_obo.devauthority._world import World

__all__ = ["ManagedIdentities", "ManagedIdentity"]

API_VERSION = "2019-08-01"
PATH = "/managed-identity"


@dataclass(frozen=True)
class ManagedIdentity:
    """A user-assigned managed identity: its client id, principal (object) id and tenant."""

    name: str
    client_id: str
    principal_id: str
    tenant_id: str

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/dev/providers/"
            f"Microsoft.ManagedIdentity/userAssignedIdentities/{self.name}"
        )


class ManagedIdentities:
    """The authority's user-assigned managed identities and their token endpoint."""

    def __init__(self, *, world: World, minter: TokenMinter) -> None:
        self.world = world
        self.minter = minter
        self.header = secrets.token_urlsafe(24)
        """IDENTITY_HEADER: the platform's per-process secret (never logged)."""
        self.served = 0
        """Token requests answered or refused (for tests)."""
        self._identities: list[ManagedIdentity] = []
        self._lock = threading.Lock()

    def add(
        self,
        name: str,
        *,
        client_id: str | None = None,
        principal_id: str | None = None,
        tenant: str | None = None,
        federate: str | None = None,
    ) -> ManagedIdentity:
        """Create a user-assigned identity; with `federate` (an app's name or client id), also
        give that app a federated credential for it (issuer: the tenant's v2 issuer, subject:
        the principal id), as `az identity federated-credential` / the portal do for a FIC."""
        home = self.world.find_tenant(tenant) if tenant else self.world.home_tenant
        if home is None:
            raise KeyError(f"no tenant named {tenant!r}")
        identity = ManagedIdentity(
            name=name,
            client_id=(client_id or str(uuid.uuid4())).lower(),
            principal_id=(principal_id or str(uuid.uuid4())).lower(),
            tenant_id=home.id,
        )
        with self._lock:
            if any(name == i.name or identity.client_id == i.client_id for i in self._identities):
                raise ValueError(f"a managed identity named {name!r} or with that id exists")
            self._identities.append(identity)
        if federate is not None:
            self.federate(identity, federate)
        return identity

    def federate(self, identity: ManagedIdentity, app: str) -> FederatedCredential:
        """Let `identity`'s tokens authenticate `app` (a federated identity credential)."""
        return self.world.add_federated_credential(
            app,
            issuer=f"{{authority_host}}/{identity.tenant_id}/v2.0",
            subject=identity.principal_id,
            name=f"mi-{identity.name}",
        )

    def env(self, base_url: str) -> dict[str, str]:
        """What App Service puts in a process's environment (MSAL reads exactly these)."""
        return {"IDENTITY_ENDPOINT": f"{base_url}{PATH}", "IDENTITY_HEADER": self.header}

    def find(self, *, client_id: str | None, object_id: str | None) -> ManagedIdentity | None:
        with self._lock:
            for identity in self._identities:
                if client_id and identity.client_id == client_id.lower():
                    return identity
                if object_id and identity.principal_id == object_id.lower():
                    return identity
        return None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(PATH, self._token)

    async def _token(self, request: web.Request) -> web.Response:
        self.served += 1
        presented = request.headers.get("X-IDENTITY-HEADER", "")
        if not hmac.compare_digest(presented.encode(), self.header.encode()):
            return _refuse(401, "The X-IDENTITY-HEADER header is missing or invalid.")
        query = request.query
        if query.get("api-version") != API_VERSION:
            return _refuse(400, f"api-version must be {API_VERSION}.")
        resource = query.get("resource", "")
        if resource != TOKEN_EXCHANGE_AUDIENCE and self.world.resource_app(resource) is None:
            return _refuse(400, f"The resource '{resource[:100]}' is not known.")
        if not (query.get("client_id") or query.get("object_id")):
            return _refuse(400, "No system-assigned identity here: name a user-assigned one.")
        identity = self.find(client_id=query.get("client_id"), object_id=query.get("object_id"))
        if identity is None:
            return _refuse(400, "No user-assigned identity with that id is assigned.")
        return web.json_response(self._issue(identity, resource))

    def _issue(self, identity: ManagedIdentity, resource: str) -> dict[str, Any]:
        now = int(self.minter.clock())
        expires = now + self.minter.lifetime
        claims = {
            "aud": resource,
            "iss": self.minter.issuer(identity.tenant_id, 2),
            "iat": now,
            "nbf": now,
            "exp": expires,
            "sub": identity.principal_id,
            "oid": identity.principal_id,
            "tid": identity.tenant_id,
            "azp": identity.client_id,
            "appid": identity.client_id,
            "azpacr": "2",
            "idtyp": "app",
            "ver": "2.0",
            "xms_mirid": identity.resource_id,
            "uti": uuid.uuid4().hex,
        }
        return {
            "access_token": self.minter.sign(claims),
            "expires_on": str(expires),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.client_id,
        }


def _refuse(status: int, message: str) -> web.Response:
    return web.json_response({"statusCode": status, "message": message}, status=status)
