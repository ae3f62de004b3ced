"""A local Entra-compatible authority for development and tests (never imported by the runtime).

It speaks HTTPS on 127.0.0.1 with a CA it makes, serves Entra-shaped discovery, JWKS, token,
device-code and authorization endpoints for a tenant GUID, and implements the password (ROPC),
client-credentials, refresh-token, On-Behalf-Of, device code and authorization code (PKCE)
grants with real checks (tenancy, consent, MFA on its sign-in pages), key rollover, fault
injection and a request log; docs/reference/configuration.md says which Entra behaviours it
models. Secretless clients too: federated identity credentials
(`World.add_federated_credential`), a workload-identity issuer per cluster
(`authority.workloads`: projected, rotated token files) and an App Service-style managed
identity endpoint (`authority.managed_identities`). A Graph-like API
(`DevAuthority.graph_url`, `GET /me`) with CAE after `World.revoke_sessions`. See
`DevAuthority`; `DevAuthority.issue_server_certificate` signs TLS certificates for your own
servers with the same CA (a `ServerCertificate`).
"""

from grpc_obo.devauthority._authority import DevAuthority
from grpc_obo.devauthority._default_world import CONTOSO, FABRIKAM, default_world
from grpc_obo.devauthority._faults import (
    ClaimsChallenge,
    FaultRule,
    Faults,
    LoggedRequest,
    RequestLog,
)
from grpc_obo.devauthority._keys import KeyRing
from grpc_obo.devauthority._managed_identity import ManagedIdentity
from grpc_obo.devauthority._private import StateDirError
from grpc_obo.devauthority._registrations import (
    GRAPH_APP_ID,
    GRAPH_APP_ID_URI,
    TOKEN_EXCHANGE_AUDIENCE,
    App,
    ClientCertificate,
    FederatedCredential,
    Tenant,
    User,
)
from grpc_obo.devauthority._tls import ServerCertificate, client_ssl_context, msal_http_client
from grpc_obo.devauthority._workload import ProjectedToken, WorkloadIssuer
from grpc_obo.devauthority._world import World
from grpc_obo.devauthority._worldfile import WorldFileError, load_world, world_from_dict

__all__ = [
    "CONTOSO",
    "FABRIKAM",
    "GRAPH_APP_ID",
    "GRAPH_APP_ID_URI",
    "TOKEN_EXCHANGE_AUDIENCE",
    "App",
    "ClaimsChallenge",
    "ClientCertificate",
    "DevAuthority",
    "FaultRule",
    "Faults",
    "FederatedCredential",
    "KeyRing",
    "LoggedRequest",
    "ManagedIdentity",
    "ProjectedToken",
    "RequestLog",
    "ServerCertificate",
    "StateDirError",
    "Tenant",
    "User",
    "WorkloadIssuer",
    "World",
    "WorldFileError",
    "client_ssl_context",
    "default_world",
    "load_world",
    "msal_http_client",
    "world_from_dict",
]
