"""The device code grant (RFC 8628 as Entra answers it): the device authorization endpoint
(`start`), the sign-in page's steps (`client`, `approve`, `finish_mfa`) and the token request
that redeems an approved code. The codes' own state is in `devauthority/_device.py`.
"""

from __future__ import annotations

from typing import Any

from grpc_obo.devauthority._device import DEVICE_CODE_INTERVAL, DEVICE_CODE_LIFETIME, UNKNOWN_CODE
from grpc_obo.devauthority._grants._claims import capabilities, sign_in_acrs
from grpc_obo.devauthority._grants._request import TokenRequest, check_bounds
from grpc_obo.devauthority._grants._shared import GrantContext, GrantHandler
from grpc_obo.devauthority._oauth import OAuthError
from grpc_obo.devauthority._registrations import App, User
from grpc_obo.devauthority._signin import bad_credentials


def start(context: GrantContext, request: TokenRequest, verification_uri: str) -> dict[str, Any]:
    """The device authorization endpoint: a device code for the client, a user code for
    the person, who signs in at `verification_uri` and types it."""
    check_bounds(request)
    tenant = context.path_tenant(request.tenant)
    client, _ = context.authenticate_client(request, tenant)
    raw_scope = request.require("scope")
    context.parse_scopes(raw_scope)  # an unknown resource is refused now, as Entra does
    claims = request.get("claims")
    capabilities(claims)
    device_code, user_code = context.device_flows.start(
        client_id=client.client_id, tenant=tenant, scope=raw_scope, claims=claims
    )
    return {
        "user_code": user_code,
        "device_code": device_code,
        "verification_uri": verification_uri,
        "expires_in": DEVICE_CODE_LIFETIME,
        "interval": DEVICE_CODE_INTERVAL,
        "message": (
            f"To sign in, use a web browser to open the page {verification_uri} and enter "
            f"the code {user_code} to authenticate."
        ),
    }


def client(context: GrantContext, user_code: str) -> App | None:
    """The app a pending user code signs in to (the page names it, as Entra's does)."""
    try:
        flow = context.device_flows.pending(user_code)
    except OAuthError:
        return None
    return context.world.find_app(flow.client_id)


def approve(
    context: GrantContext, user_code: str, username: str, password: str
) -> tuple[User, str | None]:
    """The sign-in page: `username` proves `password` for the code's sign-in.

    Returns the user and None when the code is approved, or the user and an MFA ticket
    when the user's conditional access (or the claims the app sent) needs MFA: the page
    then asks for the MFA step (`finish_mfa`). Raises `OAuthError` (shown on the page, never
    naming which of code, username or password was wrong beyond an expired code).
    """
    flow = context.device_flows.pending(user_code)
    user = context.signins.password(username, password)
    if flow.tenant is not None and user.tenant_id != flow.tenant:
        raise bad_credentials()
    app = context.world.find_app(flow.client_id)
    if app is None:
        raise OAuthError("expired_token", 70019, UNKNOWN_CODE)
    context.tenancy(app, None, user)
    resource = context.parse_scopes(flow.scope).resource
    if context.mfa_challenge(user, resource.client_id, flow.claims) is not None:
        return user, context.signins.start_mfa(user, f"device:{flow.user_code}")
    context.device_flows.approve(flow, user.oid, ("pwd",))
    return user, None


def finish_mfa(context: GrantContext, user_code: str, ticket: str) -> User:
    """The MFA step of the page: approves the code with `amr` showing MFA."""
    flow = context.device_flows.pending(user_code)
    user = context.signins.finish_mfa(ticket, f"device:{flow.user_code}")
    context.device_flows.approve(flow, user.oid, ("pwd", "mfa"))
    return user


def _about(context: GrantContext, request: TokenRequest) -> tuple[str | None, str | None]:
    return context.device_flows.owner(request.get("device_code") or ""), None


def _redeem(
    context: GrantContext,
    request: TokenRequest,
    tenant: str | None,
    client: App,
    client_auth: str,
) -> dict[str, Any]:
    flow, oid = context.device_flows.redeem(request.require("device_code"), client.client_id)
    user = context.user_in(context.world.find_user(oid), flow.tenant, oid, client)
    scopes = context.parse_scopes(flow.scope)
    granted = context.delegated_grant(client, scopes)
    return context.user_tokens(
        request,
        user,
        client,
        client_auth,
        scopes,
        granted,
        flow.amr,
        id_token=True,
        acrs=sign_in_acrs(request.get("claims") or flow.claims),
    )


HANDLER = GrantHandler(_about, _redeem)
