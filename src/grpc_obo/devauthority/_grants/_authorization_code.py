"""The authorization code grant: the authorization endpoint (`begin`), the sign-in page's steps
(`sign_in`, `mfa`, `finish`, `client`) and the token request that redeems the code (PKCE and
the redirect URI checked by `devauthority/_authorize.py`, which holds the codes' state).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grpc_obo.devauthority._authorize import (
    PROMPTS,
    Delivery,
    PendingSignIn,
    RedirectError,
    check_pkce,
    redirect_uri_registered,
)
from grpc_obo.devauthority._client_auth import GUID
from grpc_obo.devauthority._grants._claims import capabilities, sign_in_acrs
from grpc_obo.devauthority._grants._request import TokenRequest, check_bounds
from grpc_obo.devauthority._grants._shared import GrantContext, GrantHandler
from grpc_obo.devauthority._oauth import OAuthError, missing
from grpc_obo.devauthority._registrations import App, User
from grpc_obo.devauthority._signin import bad_credentials


def begin(context: GrantContext, tenant_segment: str, params: Mapping[str, str]) -> PendingSignIn:
    """The authorization endpoint: check the request and remember it for the page.

    `OAuthError` when the client or its redirect URI cannot be trusted (the page shows it:
    nothing is sent to an unregistered address); `RedirectError` for everything else (sent
    to the app with its `state`). `prompt=none` always needs interaction here: the page
    keeps no sign-in session.
    """
    tenant = context.path_tenant(tenant_segment)
    client_id = params.get("client_id") or ""
    app = context.world.find_app(client_id) if GUID.match(client_id.lower()) else None
    if app is None:
        raise OAuthError(
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id[:64]}' was not found in the directory "
            f"'{tenant or tenant_segment[:64]}'.",
        )
    context.tenancy(app, tenant)
    redirect_uri = params.get("redirect_uri") or ""
    if not redirect_uri_registered(redirect_uri, app.redirect_uris):
        raise OAuthError(
            "invalid_request",
            50011,
            f"The redirect URI '{redirect_uri[:200]}' specified in the request does not "
            "match the redirect URIs configured for the application "
            f"'{app.client_id}'.",
        )
    state = params.get("state")
    form_post = params.get("response_mode") == "form_post"

    def redirect(error: str, code: int, description: str) -> RedirectError:
        return RedirectError(redirect_uri, error, code, description, state, form_post=form_post)

    if params.get("response_type") != "code":
        raise redirect(
            "unsupported_response_type",
            700054,
            "The dev authority's authorization endpoint answers response_type=code only.",
        )
    if params.get("response_mode") not in (None, "query", "form_post"):
        raise redirect("invalid_request", 900144, "response_mode must be query or form_post.")
    prompt = params.get("prompt")
    if prompt is not None and prompt not in PROMPTS:
        raise redirect("invalid_request", 90023, f"Invalid prompt value '{prompt[:20]}'.")
    if prompt == "none":
        raise redirect(
            "login_required",
            50058,
            "A silent sign-in request was sent but no user is signed in.",
        )
    challenge = check_pkce(
        params.get("code_challenge_method"), params.get("code_challenge"), redirect
    )
    try:
        check_bounds(TokenRequest(tenant_segment, params, ""))
        scope = params.get("scope") or ""
        if not scope:
            raise missing("scope")
        context.parse_scopes(scope)
        capabilities(params.get("claims"))
    except OAuthError as exc:
        raise redirect(exc.error, exc.code, exc.description) from None
    return context.authorizations.remember(
        tenant=tenant,
        tenant_segment=tenant_segment.lower(),
        client_id=app.client_id,
        redirect_uri=redirect_uri,
        scope=scope,
        state=state,
        nonce=params.get("nonce"),
        code_challenge=challenge,
        claims=params.get("claims"),
        login_hint=params.get("login_hint"),
        form_post=form_post,
    )


def sign_in(
    context: GrantContext, request_id: str, username: str, password: str
) -> tuple[PendingSignIn, User, str | None]:
    """The page's sign-in: the user and None when done, or an MFA ticket when the user's
    conditional access (or the claims the app sent) needs the MFA step."""
    pending = context.authorizations.pending(request_id)
    user = context.signins.password(username, password)
    app = context.world.find_app(pending.client_id)
    if app is None or (pending.tenant is not None and user.tenant_id != pending.tenant):
        raise bad_credentials()
    context.tenancy(app, None, user)
    resource = context.parse_scopes(pending.scope).resource
    if context.mfa_challenge(user, resource.client_id, pending.claims) is not None:
        return pending, user, context.signins.start_mfa(user, f"authorize:{pending.id}")
    return pending, user, None


def mfa(context: GrantContext, request_id: str, ticket: str) -> tuple[PendingSignIn, User]:
    """The page's MFA step, approved."""
    pending = context.authorizations.pending(request_id)
    return pending, context.signins.finish_mfa(ticket, f"authorize:{pending.id}")


def finish(
    context: GrantContext, pending: PendingSignIn, user: User, amr: tuple[str, ...]
) -> Delivery:
    """What the browser brings to the redirect URI: a new code and the app's state."""
    code = context.authorizations.issue(pending, user.oid, amr)
    return Delivery(pending.redirect_uri, {"code": code, "state": pending.state}, pending.form_post)


def client(context: GrantContext, request_id: str) -> App | None:
    """The app a pending sign-in is for (the page names it)."""
    try:
        return context.world.find_app(context.authorizations.pending(request_id).client_id)
    except OAuthError:
        return None


def _about(context: GrantContext, request: TokenRequest) -> tuple[str | None, str | None]:
    return context.authorizations.owner(request.get("code") or ""), None


def _redeem(
    context: GrantContext,
    request: TokenRequest,
    tenant: str | None,
    client: App,
    client_auth: str,
) -> dict[str, Any]:
    issued = context.authorizations.redeem(
        request.require("code"),
        client.client_id,
        request.get("redirect_uri"),
        request.get("code_verifier"),
    )
    user = context.user_in(
        context.world.find_user(issued.user_oid), issued.tenant, issued.user_oid, client
    )
    # The scopes are those the user signed in for, whatever the token request repeats.
    scopes = context.parse_scopes(issued.scope)
    granted = context.delegated_grant(client, scopes)
    return context.user_tokens(
        request,
        user,
        client,
        client_auth,
        scopes,
        granted,
        issued.amr,
        id_token=True,
        nonce=issued.nonce,
        acrs=sign_in_acrs(request.get("claims") or issued.claims),
    )


HANDLER = GrantHandler(_about, _redeem)
