"""The refresh token grant: a rotated refresh token for new delegated tokens, keeping the
factors of its sign-in (it cannot add MFA) and, without a `scope`, the resource and scopes it
was issued for. The refresh tokens' own state is in `devauthority/_refresh.py`.
"""

from __future__ import annotations

from typing import Any

from grpc_obo.devauthority._grants._request import TokenRequest
from grpc_obo.devauthority._grants._shared import (
    GrantContext,
    GrantHandler,
    ScopeRequest,
    mfa_required,
)
from grpc_obo.devauthority._oauth import OAuthError
from grpc_obo.devauthority._registrations import App


def _about(context: GrantContext, request: TokenRequest) -> tuple[str | None, str | None]:
    return context.refresh_tokens.owner(request.get("refresh_token") or ""), None


def _redeem(
    context: GrantContext,
    request: TokenRequest,
    tenant: str | None,
    client: App,
    client_auth: str,
) -> dict[str, Any]:
    presented = request.require("refresh_token")
    held = context.refresh_tokens.redeem(presented, client.client_id, context.world.find_user)
    user = context.user_in(context.world.find_user(held.user_oid), tenant, held.user_oid, client)
    raw_scope = request.get("scope")
    scopes = context.parse_scopes(raw_scope) if raw_scope else None
    if scopes is None:
        resource = context.world.resource_app(held.resource_client_id)
        if resource is None:
            raise OAuthError(
                "invalid_resource",
                500011,
                f"The resource principal named {held.resource_client_id} was not found in "
                "the tenant.",
            )
        scopes = ScopeRequest(
            resource, held.scopes, frozenset({"offline_access"}), held.resource_prefix
        )
    elif "offline_access" not in scopes.reserved:
        # Rotation: a redeemed refresh token is gone, so its successor comes back even when
        # the request does not repeat offline_access (Entra does the same).
        scopes = ScopeRequest(
            scopes.resource,
            scopes.names,
            scopes.reserved | {"offline_access"},
            scopes.resource_prefix,
        )
    granted = context.delegated_grant(client, scopes)
    if "mfa" not in held.amr:
        # A refresh token keeps the factors of its sign-in; it cannot add one.
        challenge = context.mfa_challenge(user, scopes.resource.client_id, request.get("claims"))
        if challenge is not None:
            raise mfa_required(challenge, scopes.resource.client_id, "interaction_required")
    return context.user_tokens(
        request, user, client, client_auth, scopes, granted, held.amr, id_token=True
    )


HANDLER = GrantHandler(_about, _redeem)
