"""The client credentials grant: an app-only token for a confidential client, its roles those
assigned to it on the resource; only on a tenant's own authority and only for `/.default`.
"""

from __future__ import annotations

from typing import Any

from grpc_obo.devauthority._grants._claims import capabilities
from grpc_obo.devauthority._grants._request import TokenRequest
from grpc_obo.devauthority._grants._shared import (
    GrantContext,
    GrantHandler,
    about_nobody,
    token_body,
)
from grpc_obo.devauthority._oauth import OAuthError
from grpc_obo.devauthority._registrations import App


def _redeem(
    context: GrantContext,
    request: TokenRequest,
    tenant: str | None,
    client: App,
    client_auth: str,
) -> dict[str, Any]:
    if client.public_client:
        raise OAuthError(
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or "
            "'client_secret'.",
            status=401,
        )
    if tenant is None:
        raise OAuthError(
            "invalid_request",
            1002013,
            "The client credentials flow needs a tenant-specific authority, not 'common' "
            "or 'organizations'.",
        )
    raw = request.require("scope")
    parts = [s for s in raw.split(" ") if s]
    if len(parts) != 1 or not parts[0].endswith("/.default"):
        raise OAuthError(
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have a "
            "scope value with /.default suffixed to the resource identifier "
            "(application ID URI).",
        )
    scopes = context.parse_scopes(raw)
    resource = scopes.resource
    roles = client.app_role_assignments.get(resource.client_id, frozenset())
    issued = context.minter.access_token(
        client=client,
        resource=resource,
        tenant_id=tenant,
        roles=roles,
        client_auth=client_auth,
        capabilities=capabilities(request.get("claims")),
    )
    return token_body(issued.token, issued.expires_at, context.minter.clock())


HANDLER = GrantHandler(about_nobody, _redeem)
