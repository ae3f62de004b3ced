"""The dev authority's HTTP surface: Entra-shaped routes on aiohttp, faults, errors and the log.

Every answer is JSON except the sign-in pages (`/devicelogin` for device codes and the
authorization endpoint's page: small HTML, every reflected value escaped, no script, no
framing). Bad input of any kind (wrong content type, malformed or oversized form,
duplicated parameters, unknown routes, unexpected exceptions) gets an Entra-shaped error body
with the right status: never a stack trace, never a hang.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import datetime
import hashlib
import html
import logging
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from grpc_obo.devauthority._authorize import Delivery, PendingSignIn, RedirectError
from grpc_obo.devauthority._faults import Endpoint, Faults, LoggedRequest, RequestInfo, RequestLog
from grpc_obo.devauthority._grants import Grants, OAuthError, TokenRequest
from grpc_obo.devauthority._graph import GraphApi
from grpc_obo.devauthority._keys import KeyRing
from grpc_obo.devauthority._world import World

logger = logging.getLogger("grpc_obo.devauthority")

MAX_BODY_BYTES = 64 * 1024
MAX_FORM_FIELDS = 64

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class _RequestState:
    """What the middleware logs about the request being answered."""

    info: RequestInfo
    scopes: tuple[str, ...] = ()
    fault: str | None = None
    retry_after: float | None = None


# aiohttp runs each request in its own task, so a contextvar is per-request state that needs no
# request-storage keys (whose typed form only exists in recent aiohttp versions).
_state: contextvars.ContextVar[_RequestState] = contextvars.ContextVar("grpc_obo_request")


class _DropConnection(Exception):
    """Raised by a fault rule to close the connection without an answer."""


class AuthorityApp:
    """Builds the aiohttp application for one authority (state lives in the collaborators)."""

    def __init__(
        self,
        *,
        base_url: Callable[[], str],
        world: World,
        keys: KeyRing,
        grants: Grants,
        faults: Faults,
        log: RequestLog,
    ) -> None:
        self._base_url = base_url
        self.world = world
        self.keys = keys
        self.grants = grants
        self.faults = faults
        self.log = log

    def build(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._middleware])
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self.discovery_v2)
        app.router.add_get("/{tenant}/.well-known/openid-configuration", self.discovery_v1)
        app.router.add_get("/{tenant}/discovery/v2.0/keys", self.jwks)
        app.router.add_get("/{tenant}/discovery/keys", self.jwks)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self.token)
        app.router.add_get("/common/userrealm/{username}", self.userrealm)
        app.router.add_post("/{tenant}/oauth2/v2.0/devicecode", self.devicecode)
        app.router.add_get("/devicelogin", self.devicelogin_page)
        app.router.add_post("/devicelogin", self.devicelogin)
        app.router.add_get("/{tenant}/oauth2/v2.0/authorize", self.authorize_page)
        app.router.add_post("/{tenant}/oauth2/v2.0/authorize", self.authorize)
        GraphApi(world=self.world, minter=self.grants.minter, base_url=self._base_url).add_routes(
            app
        )
        return app

    # -- middleware: latency, unexpected errors, the log ---------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        state = _RequestState(RequestInfo(endpoint=_endpoint_of(request.path)))
        _state.set(state)
        if self.faults.latency > 0:
            await asyncio.sleep(self.faults.latency)
        error: OAuthError | None = None
        fault: str | None = None
        try:
            response = await handler(request)
        except OAuthError as exc:
            error = exc
            response = self._error_response(request, exc)
        except _DropConnection:
            fault = "drop"
            if request.transport is not None:
                request.transport.abort()
            response = web.Response(status=599)
        except web.HTTPRequestEntityTooLarge:
            error = OAuthError(
                "invalid_request", 90100, "The request body is too large.", status=413
            )
            response = self._error_response(request, error)
        except web.HTTPException as exc:
            error = OAuthError(
                "invalid_request",
                90010 if exc.status == 405 else 90002,
                f"The endpoint {request.method} {request.path[:100]} is not supported by the "
                "dev authority."
                if exc.status in (404, 405)
                else "The request is not valid.",
                status=exc.status,
            )
            response = self._error_response(request, error)
        except Exception as exc:
            # NOTE: only the type is logged: a message could quote request input.
            logger.error(
                "dev authority: unexpected %s answering %s", type(exc).__name__, request.path
            )
            error = OAuthError("server_error", 90033, "An internal error occurred.", status=500)
            response = self._error_response(request, error)
        self._record(request, state, response.status, error, fault or state.fault)
        return response

    def _record(
        self,
        request: web.Request,
        state: _RequestState,
        status: int,
        error: OAuthError | None,
        fault: str | None,
    ) -> None:
        info, scopes = state.info, state.scopes
        entry = LoggedRequest(
            at=RequestLog.now(),
            method=request.method,
            path=request.path[:200],
            endpoint=info.endpoint,
            status=status,
            grant=info.grant,
            client_id=info.client_id,
            user_oid=info.user_oid,
            username=info.username,
            scopes=scopes,
            error=error.error if error else None,
            error_code=error.code if error else None,
            fault=fault,
        )
        self.log.add(entry)
        logger.info(
            "%s %s grant=%s client=%s user=%s -> %s%s%s",
            entry.method,
            entry.path,
            entry.grant,
            entry.client_id,
            entry.user_oid,
            status,
            f" {entry.error} AADSTS{entry.error_code}" if error else "",
            f" fault={fault}" if fault else "",
        )

    def _error_response(self, request: web.Request, error: OAuthError) -> web.Response:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        trace_id = str(uuid.uuid4())
        correlation_id = _correlation_id(request)
        body: dict[str, Any] = {
            "error": error.error,
            "error_description": (
                f"AADSTS{error.code}: {error.description} Trace ID: {trace_id} "
                f"Correlation ID: {correlation_id} Timestamp: {now}"
            ),
            "error_codes": [error.code],
            "timestamp": now,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{self._base_url()}/error?code={error.code}",
        }
        if error.suberror:
            body["suberror"] = error.suberror
        if error.claims:
            body["claims"] = error.claims
        headers = {"client-request-id": correlation_id}
        retry_after = _state.get().retry_after
        if retry_after is None:
            retry_after = error.retry_after
        if retry_after is not None:
            headers["Retry-After"] = str(max(0, round(retry_after)))
        return web.json_response(body, status=error.status, headers=headers)

    async def _apply_faults(self, request: web.Request, info: RequestInfo) -> None:
        state = _state.get()
        state.info = info
        rule = self.faults.take(info)
        if rule is None:
            return
        if rule.kind == "drop":
            raise _DropConnection
        state.fault = f"status {rule.status}"
        state.retry_after = rule.retry_after
        if rule.status == 429:
            raise OAuthError(
                "temporarily_unavailable",
                50196,
                "The server is throttling requests from this client. Retry later.",
                status=429,
            )
        raise OAuthError(
            "temporarily_unavailable" if rule.status == 503 else "server_error",
            90033,
            "A transient error has occurred. Please try again.",
            status=rule.status,
        )

    # -- routes -------------------------------------------------------------------------

    def _tenant_segment(self, request: web.Request) -> str:
        segment = request.match_info["tenant"].lower()
        if segment in ("common", "organizations") or self.world.tenant(segment):
            return segment
        raise OAuthError(
            "invalid_tenant",
            90002,
            f"Tenant '{segment[:64]}' not found. Check to make sure you have the correct tenant "
            "ID and are signing into the correct cloud.",
        )

    async def discovery_v2(self, request: web.Request) -> web.Response:
        await self._apply_faults(request, RequestInfo(endpoint="discovery"))
        tenant = self._tenant_segment(request)
        base = self._base_url()
        tid = "{tenantid}" if tenant in ("common", "organizations") else tenant
        return web.json_response(
            {
                "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{base}/{tid}/v2.0",
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": f"{base}/oidc/userinfo",
                "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
                "claims_supported": _CLAIMS_SUPPORTED,
                "kerberos_endpoint": f"{base}/{tenant}/kerberos",
                "tenant_region_scope": "EU",
                "cloud_instance_name": "dev.grpc-obo.local",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
                "rbac_url": "https://pas.windows.net",
            },
            headers=_CACHE_HEADERS,
        )

    async def discovery_v1(self, request: web.Request) -> web.Response:
        await self._apply_faults(request, RequestInfo(endpoint="discovery"))
        tenant = self._tenant_segment(request)
        base = self._base_url()
        tid = "{tenantid}" if tenant in ("common", "organizations") else tenant
        return web.json_response(
            {
                "token_endpoint": f"{base}/{tenant}/oauth2/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{base}/{tenant}/discovery/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "token id_token"],
                "scopes_supported": ["openid"],
                "issuer": f"{base}/{tid}/",
                "authorization_endpoint": f"{base}/{tenant}/oauth2/authorize",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "end_session_endpoint": f"{base}/{tenant}/oauth2/logout",
                "cloud_instance_name": "dev.grpc-obo.local",
            },
            headers=_CACHE_HEADERS,
        )

    async def jwks(self, request: web.Request) -> web.Response:
        await self._apply_faults(request, RequestInfo(endpoint="jwks"))
        if self.faults.jwks_down:
            _state.get().fault = "jwks_down"
            raise OAuthError(
                "temporarily_unavailable",
                90033,
                "The key discovery endpoint is unavailable.",
                status=503,
            )
        self._tenant_segment(request)
        v1 = not request.path.endswith("/v2.0/keys")
        template = (
            f"{self._base_url()}/{{tenantid}}/" if v1 else (f"{self._base_url()}/{{tenantid}}/v2.0")
        )
        return web.json_response(self.keys.jwks(template), headers=_CACHE_HEADERS)

    async def userrealm(self, request: web.Request) -> web.Response:
        username = request.match_info["username"]
        user = self.world.find_user(username)
        await self._apply_faults(
            request,
            RequestInfo(
                endpoint="userrealm",
                user_oid=user.oid if user else None,
                username=user.username if user else None,
            ),
        )
        # "Managed" tells MSAL to do a plain ROPC request rather than WS-Trust federation.
        return web.json_response(
            {
                "ver": "1.0",
                "account_type": "Managed" if user else "Unknown",
                "domain_name": username.split("@", 1)[-1][:100],
                "cloud_instance_name": "dev.grpc-obo.local",
                "cloud_audience_urn": "urn:federation:MicrosoftOnline",
            }
        )

    async def token(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        form = await _read_form(request)
        token_request = TokenRequest(
            tenant=tenant,
            form=form,
            token_url=f"{self._base_url()}/{tenant}/oauth2/v2.0/token",
            basic_auth=_basic_auth(request),
        )
        info = self.grants.peek(token_request)
        _state.get().scopes = tuple((form.get("scope") or "").split())[:20]
        await self._apply_faults(request, info)
        if self.grants.federation is not None:  # keys of a federated issuer, fetched async
            await self.grants.federation.prefetch(info.client_id, form.get("client_assertion"))
        # MSAL is synchronous and RSA signing is CPU work: neither is slow enough at dev
        # scale to justify a thread hop, and staying on the loop keeps faults deterministic.
        return web.json_response(self.grants.handle(token_request), headers=_NO_STORE)

    async def devicecode(self, request: web.Request) -> web.Response:
        """The device authorization endpoint (MSAL's `initiate_device_flow`)."""
        tenant = request.match_info["tenant"]
        form = await _read_form(request)
        token_request = TokenRequest(
            tenant=tenant,
            form=form,
            token_url=f"{self._base_url()}/{tenant}/oauth2/v2.0/token",
            basic_auth=_basic_auth(request),
        )
        client_id = (form.get("client_id") or "").lower() or None
        _state.get().scopes = tuple((form.get("scope") or "").split())[:20]
        await self._apply_faults(request, RequestInfo(endpoint="devicecode", client_id=client_id))
        body = self.grants.start_device_flow(token_request, f"{self._base_url()}/devicelogin")
        return web.json_response(body, headers=_NO_STORE)

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
        form = await _read_form(request)
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

    # -- the authorization endpoint and its sign-in page ----------------------------------

    async def authorize_page(self, request: web.Request) -> web.StreamResponse:
        """The authorization endpoint (MSAL's `auth_uri`): checks the request, then shows the
        sign-in page; errors the app can be told go to its redirect URI."""
        await self._apply_faults(request, RequestInfo(endpoint="authorize"))
        params = _single_valued(request.query)
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
        form = await _read_form(request)
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


def _single_valued(query: Any) -> dict[str, str]:
    """Query parameters, each at most once (a repeated one is refused as at /token)."""
    params: dict[str, str] = {}
    for name, value in query.items():
        if name in params:
            raise OAuthError(
                "invalid_request",
                9000411,
                f"The request is not properly formatted. The parameter '{name[:40]}' is "
                "duplicated.",
            )
        params[name] = value
    return params


def _deliver(delivery: Delivery) -> web.Response:
    """Send the browser to the app: a 302 with the query, or (form_post) a page whose form
    posts the fields there; its one script, allowed by hash, submits it as Entra's does."""
    if not delivery.form_post:
        return web.Response(status=302, headers={"Location": delivery.location, **_NO_STORE})
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
            **_NO_STORE,
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


_CLAIMS_SUPPORTED = [
    *("sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name"),
    *("msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username"),
    *("name", "tid", "ver", "at_hash", "c_hash", "email"),
]
_CACHE_HEADERS = {"Cache-Control": "max-age=86400, private"}
_NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}


def _endpoint_of(path: str) -> Endpoint:
    if path.endswith("/token"):
        return "token"
    if "/.well-known/" in path:
        return "discovery"
    if "/discovery/" in path and path.endswith("/keys"):
        return "jwks"
    if "/userrealm/" in path:
        return "userrealm"
    if path.endswith("/devicecode"):
        return "devicecode"
    if path == "/devicelogin":
        return "devicelogin"
    if path.endswith("/oauth2/v2.0/authorize"):
        return "authorize"
    return "other"


def _correlation_id(request: web.Request) -> str:
    given = request.headers.get("client-request-id", "")
    try:
        return str(uuid.UUID(given))
    except ValueError:
        return str(uuid.uuid4())


async def _read_form(request: web.Request) -> dict[str, str]:
    if request.content_type != "application/x-www-form-urlencoded":
        raise OAuthError(
            "invalid_request",
            900144,
            "The request body must be application/x-www-form-urlencoded.",
        )
    raw = await request.read()
    try:
        pairs = urllib.parse.parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=bool(raw),
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise OAuthError(
            "invalid_request", 90014, "The request body is not a well-formed form."
        ) from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError(
                "invalid_request",
                9000411,
                f"The request is not properly formatted. The parameter '{name[:40]}' is "
                "duplicated.",
            )
        form[name] = value
    return form


def _basic_auth(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise OAuthError(
            "invalid_client", 7000218, "Only Basic client authentication is accepted.", status=401
        )
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError(
            "invalid_client", 7000218, "The Basic authorization header is malformed.", status=401
        ) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError(
            "invalid_client", 7000218, "The Basic authorization header is malformed.", status=401
        )
    # RFC 6749 §2.3.1: both parts are form-urlencoded before joining.
    return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)
