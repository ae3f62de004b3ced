"""The resource owner password credentials grant (ROPC, `grant_type=password`): a username and
password for delegated tokens, refused when the user's conditional access (or a pending
challenge the app brings) wants more than one factor.
"""

from __future__ import annotations

from typing import Any

from grpc_obo.devauthority._grants._request import TokenRequest
from grpc_obo.devauthority._grants._shared import GrantContext, GrantHandler, mfa_required
from grpc_obo.devauthority._registrations import App


def _about(context: GrantContext, request: TokenRequest) -> tuple[str | None, str | None]:
    username = request.get("username")
    found = context.world.find_user(username) if username else None
    return (found.oid if found else None), username


def _redeem(
    context: GrantContext,
    request: TokenRequest,
    tenant: str | None,
    client: App,
    client_auth: str,
) -> dict[str, Any]:
    username = request.require("username")
    password = request.require("password")
    scopes = context.parse_scopes(request.get("scope"))
    context.user_in(context.world.find_user(username), tenant, username, client)
    user = context.signins.password(username, password)
    granted = context.delegated_grant(client, scopes)
    # A password is one factor: when the user's conditional access wants MFA for this
    # resource, or the app brings a pending challenge's claims, Entra refuses ROPC (the
    # user must sign in interactively: the device code or authorization code page).
    challenge = context.mfa_challenge(user, scopes.resource.client_id, request.get("claims"))
    if challenge is not None:
        raise mfa_required(challenge, scopes.resource.client_id, "invalid_grant")
    return context.user_tokens(
        request, user, client, client_auth, scopes, granted, ("pwd",), id_token=True
    )


HANDLER = GrantHandler(_about, _redeem)
