"""A local Entra-compatible authority for development and tests (never imported by the runtime).

It speaks HTTPS on 127.0.0.1 with a CA it makes, serves Entra-shaped discovery, JWKS and token
endpoints for a tenant GUID, and implements the password (ROPC), client-credentials,
refresh-token and On-Behalf-Of grants with real checks, key rollover, fault injection and a
request log; a Graph-like API (`DevAuthority.graph_url`, `GET /me`) with CAE after
`World.revoke_sessions`. See `DevAuthority`; `DevAuthority.issue_server_certificate` signs
TLS certificates for your own servers with the same CA (a `ServerCertificate`).
"""

from grpc_obo.devauthority._authority import DevAuthority
from grpc_obo.devauthority._faults import (
    ClaimsChallenge,
    FaultRule,
    Faults,
    LoggedRequest,
    RequestLog,
)
from grpc_obo.devauthority._graph import GRAPH_RESOURCE
from grpc_obo.devauthority._keys import KeyRing
from grpc_obo.devauthority._tls import ServerCertificate, client_ssl_context, msal_http_client
from grpc_obo.devauthority._world import (
    CONTOSO,
    FABRIKAM,
    GRAPH_APP_ID,
    App,
    ClientCertificate,
    Tenant,
    User,
    World,
    default_world,
)
from grpc_obo.devauthority._worldfile import WorldFileError, load_world, world_from_dict

__all__ = [
    "CONTOSO",
    "FABRIKAM",
    "GRAPH_APP_ID",
    "GRAPH_RESOURCE",
    "App",
    "ClaimsChallenge",
    "ClientCertificate",
    "DevAuthority",
    "FaultRule",
    "Faults",
    "KeyRing",
    "LoggedRequest",
    "RequestLog",
    "ServerCertificate",
    "Tenant",
    "User",
    "World",
    "WorldFileError",
    "client_ssl_context",
    "default_world",
    "load_world",
    "msal_http_client",
    "world_from_dict",
]
