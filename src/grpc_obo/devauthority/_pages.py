"""The dev authority's sign-in pages: the device code page (`/devicelogin`) and the
authorization endpoint's page, with their MFA step, and the small HTML they are made of.

Every reflected value is escaped; no script (but the one, allowed by hash, that posts a
`form_post` answer on), no framing, forms posted only here or to the app's registered redirect
URI. The decisions are the grants' (`_grants/_device_code.py`, `_grants/_authorization_code.py`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import urllib.parse
from collections.abc import Awaitable, Callable

from aiohttp import web

from grpc_obo.devauthority._authorize import Delivery, PendingSignIn, RedirectError
from grpc_obo.devauthority._faults import RequestInfo
from grpc_obo.devauthority._grants import Grants, OAuthError
from grpc_obo.devauthority._http import NO_STORE, read_form, single_valued
from grpc_obo.devauthority._world import World

ApplyFaults = Callable[[web.Request, RequestInfo], Awaitable[None]]


class SignInPages:
    """The sign-in pages' routes over one authority's grants (faults applied as everywhere)."""

    def __init__(self, *, world: World, grants: Grants, apply_faults: ApplyFaults) -> None:
        self.world = world
        self.grants = grants
        self._apply_faults = apply_faults

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/devicelogin", self.devicelogin_page)
        app.router.add_post("/devicelogin", self.devicelogin)
        app.router.add_get("/{tenant}/oauth2/v2.0/authorize", self.authorize_page)
        app.router.add_post("/{tenant}/oauth2/v2.0/authorize", self.authorize)

    async def devicelogin_page(self, request: web.Request) -> web.Response:
        """The sign-in page a device code's user opens (Entra: microsoft.com/devicelogin)."""
        await self._apply_faults(request, RequestInfo(endpoint="devicelogin"))
        code = request.query.get("code", "")[:16]
        client = self.grants.device_flow_client(code) if code else None
        return _page(
            _SIGN_IN_FORM.format(
                code=html.escape(code), app=_app_line(client.name if client else None)
            )
        )

    async def devicelogin(self, request: web.Request) -> web.Response:
        form = await read_form(request)
        username = form.get("username", "")
        found = self.world.find_user(username)
        info = RequestInfo(
            endpoint="devicelogin",
            user_oid=found.oid if found else None,
            username=found.username if found else None,
        )
        await self._apply_faults(request, info)
        code = form.get("code", "")[:16]
        client = self.grants.device_flow_client(code)
        try:
            if "mfa_ticket" in form:
                user = self.grants.finish_device_mfa(code, form["mfa_ticket"])
                ticket = None
            else:
                user, ticket = self.grants.approve_device_flow(
                    code, username, form.get("password", "")
                )
        except OAuthError as exc:
            again = _SIGN_IN_FORM.format(
                code=html.escape(code), app=_app_line(client.name if client else None)
            )
            return _page(
                f"<p class=error>AADSTS{exc.code}: {html.escape(exc.description)}</p>{again}",
                status=400,
            )
        if ticket is not None:
            return _page(
                _MFA_FORM.format(
                    action="/devicelogin",
                    user=html.escape(user.username),
                    hidden=_hidden(code=code, mfa_ticket=ticket),
                    app=_app_line(client.name if client else None),
                )
            )
        return _page(
            f"{_app_line(client.name if client else None)}"
            f"<h2>You have signed in as {html.escape(user.username)}</h2>"
            "<p>You can close this window and return to the application.</p>"
        )

    # -- the authorization endpoint's page --------------------------------------------

    async def authorize_page(self, request: web.Request) -> web.StreamResponse:
        """The authorization endpoint (MSAL's `auth_uri`): checks the request, then shows the
        sign-in page; errors the app can be told go to its redirect URI."""
        await self._apply_faults(request, RequestInfo(endpoint="authorize"))
        params = single_valued(request.query)
        try:
            pending = self.grants.begin_authorization(request.match_info["tenant"], params)
        except RedirectError as exc:
            return _deliver(exc.delivery)
        except OAuthError as exc:
            return _page(
                f"<p class=error>AADSTS{exc.code}: {html.escape(exc.description)}</p>",
                status=exc.status,
            )
        client = self.world.find_app(pending.client_id)
        return self._authorize_form(pending, client.name if client else None)

    def _authorize_form(
        self, pending: PendingSignIn, app: str | None, *, error: str = "", status: int = 200
    ) -> web.Response:
        form = _AUTHORIZE_FORM.format(
            app=_app_line(app),
            action=html.escape(f"/{pending.tenant_segment}/oauth2/v2.0/authorize"),
            hidden=_hidden(request=pending.id),
            login_hint=html.escape((pending.login_hint or "")[:256]),
        )
        return _page(error + form, status=status, redirect_to=pending.redirect_uri)

    async def authorize(self, request: web.Request) -> web.StreamResponse:
        """The page's forms: the credentials, then the MFA step when one is needed; finally
        the browser is sent to the app's redirect URI with the code."""
        form = await read_form(request)
        username = form.get("username", "")
        found = self.world.find_user(username)
        await self._apply_faults(
            request,
            RequestInfo(
                endpoint="authorize",
                user_oid=found.oid if found else None,
                username=found.username if found else None,
            ),
        )
        request_id = form.get("request", "")[:64]
        try:
            if "mfa_ticket" in form:
                pending, user = self.grants.authorization_mfa(request_id, form["mfa_ticket"])
                return _deliver(self.grants.finish_authorization(pending, user, ("pwd", "mfa")))
            pending, user, ticket = self.grants.authorization_sign_in(
                request_id, username, form.get("password", "")
            )
            client = self.world.find_app(pending.client_id)
            if ticket is None:
                return _deliver(self.grants.finish_authorization(pending, user, ("pwd",)))
        except OAuthError as exc:
            error = f"<p class=error>AADSTS{exc.code}: {html.escape(exc.description)}</p>"
            try:
                pending = self.grants.authorizations.pending(request_id)
            except OAuthError:
                return _page(error, status=400)
            client = self.world.find_app(pending.client_id)
            return self._authorize_form(
                pending, client.name if client else None, error=error, status=400
            )
        return _page(
            _MFA_FORM.format(
                action=html.escape(f"/{pending.tenant_segment}/oauth2/v2.0/authorize"),
                user=html.escape(user.username),
                hidden=_hidden(request=pending.id, mfa_ticket=ticket),
                app=_app_line(client.name if client else None),
            ),
            redirect_to=pending.redirect_uri,
        )


def _deliver(delivery: Delivery) -> web.Response:
    """Send the browser to the app: a 302 with the query, or (form_post) a page whose form
    posts the fields there; its one script, allowed by hash, submits it as Entra's does."""
    if not delivery.form_post:
        return web.Response(status=302, headers={"Location": delivery.location, **NO_STORE})
    fields = {k: v for k, v in delivery.params.items() if v is not None}
    body = _FORM_POST.format(action=html.escape(delivery.redirect_uri), hidden=_hidden(**fields))
    return _page(body, redirect_to=delivery.redirect_uri, script=_SUBMIT_SCRIPT)


def _page(
    body: str, *, status: int = 200, redirect_to: str | None = None, script: str | None = None
) -> web.Response:
    """A sign-in page: no scripts, no framing, forms posted only here (and, for the
    authorization page, redirected on to the app's registered redirect URI's origin, which
    browsers check against form-action too)."""
    targets = "'self'"
    if redirect_to is not None:
        parts = urllib.parse.urlsplit(redirect_to)
        targets += f" {parts.scheme}://{parts.netloc}"
    scripts = "'none'"
    if script is not None:
        body += f"<script>{script}</script>"
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        scripts = f"'sha256-{digest}'"
    return web.Response(
        text=_PAGE.format(body=body),
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={
            **NO_STORE,
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            f"script-src {scripts}; form-action {targets}; frame-ancestors 'none'",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        },
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in: grpc_obo dev authority</title>
<style>body{{font-family:sans-serif;max-width:28em;margin:3em auto}}
label{{display:block;margin:.8em 0 .2em}}input{{width:100%;padding:.4em}}
button{{margin-top:1em;padding:.5em 2em}}.error{{color:#a00}}</style></head>
<body><h1>grpc_obo dev authority</h1>
<p><small>A local stand-in for Entra ID's device code sign-in. Not Microsoft.</small></p>
{body}</body></html>
"""

_FORM_POST = """<p>Returning to the application...</p>
<form method="post" action="{action}">{hidden}
<button type="submit" id="continue">Continue</button></form>
"""
_SUBMIT_SCRIPT = "document.forms[0].submit();"

_AUTHORIZE_FORM = """{app}<form method="post" action="{action}">{hidden}
<label for="username">Username</label>
<input id="username" name="username" value="{login_hint}" autocomplete="username">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password">
<button type="submit" id="sign-in">Sign in</button></form>
"""

_SIGN_IN_FORM = """{app}<form method="post" action="/devicelogin">
<label for="code">Code</label><input id="code" name="code" value="{code}" autocomplete="off">
<label for="username">Username</label><input id="username" name="username" autocomplete="username">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password">
<button type="submit">Sign in</button></form>
"""

_MFA_FORM = """{app}<h2>Approve sign-in request</h2>
<p>Your organization requires multi-factor authentication for {user}. Approve the request
(this page stands for your authenticator app).</p>
<form method="post" action="{action}">{hidden}
<button type="submit" id="approve">Approve</button></form>
"""


def _app_line(name: str | None) -> str:
    """Which app asks for the sign-in, as Entra's page says it (escaped)."""
    return f"<p class=app>Signing in to <b>{html.escape(name)}</b></p>" if name else ""


def _hidden(**fields: str) -> str:
    return "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in fields.items()
    )
