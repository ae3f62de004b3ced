"""The dev authority's HTTP surface: Entra-shaped routes on aiohttp, faults, errors and the log.

Every answer is JSON except the sign-in pages (`_pages.py`: `/devicelogin` for device codes
and the authorization endpoint's page). Requests are read by `_http.py`. Bad input of any kind
(wrong content type, malformed or oversized form, duplicated parameters, unknown routes,
unexpected exceptions) gets an Entra-shaped error body with the right status: never a stack
trace, never a hang.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from grpc_obo.devauthority._faults import Endpoint, Faults, LoggedRequest, RequestInfo, RequestLog
from grpc_obo.devauthority._grants import Grants, OAuthError, TokenRequest
from grpc_obo.devauthority._graph import GraphApi
from grpc_obo.devauthority._http import MAX_BODY_BYTES, NO_STORE, basic_auth, read_form
from grpc_obo.devauthority._keys import KeyRing
from grpc_obo.devauthority._pages import SignInPages
from grpc_obo.devauthority._world import World

logger = logging.getLogger("grpc_obo.devauthority")

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
        SignInPages(
            world=self.world, grants=self.grants, apply_faults=self._apply_faults
        ).add_routes(app)
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
        form = await read_form(request)
        token_request = TokenRequest(
            tenant=tenant,
            form=form,
            token_url=f"{self._base_url()}/{tenant}/oauth2/v2.0/token",
            basic_auth=basic_auth(request),
        )
        info = self.grants.peek(token_request)
        _state.get().scopes = tuple((form.get("scope") or "").split())[:20]
        await self._apply_faults(request, info)
        if self.grants.federation is not None:  # keys of a federated issuer, fetched async
            await self.grants.federation.prefetch(info.client_id, form.get("client_assertion"))
        # MSAL is synchronous and RSA signing is CPU work: neither is slow enough at dev
        # scale to justify a thread hop, and staying on the loop keeps faults deterministic.
        return web.json_response(self.grants.handle(token_request), headers=NO_STORE)

    async def devicecode(self, request: web.Request) -> web.Response:
        """The device authorization endpoint (MSAL's `initiate_device_flow`)."""
        tenant = request.match_info["tenant"]
        form = await read_form(request)
        token_request = TokenRequest(
            tenant=tenant,
            form=form,
            token_url=f"{self._base_url()}/{tenant}/oauth2/v2.0/token",
            basic_auth=basic_auth(request),
        )
        client_id = (form.get("client_id") or "").lower() or None
        _state.get().scopes = tuple((form.get("scope") or "").split())[:20]
        await self._apply_faults(request, RequestInfo(endpoint="devicecode", client_id=client_id))
        body = self.grants.start_device_flow(token_request, f"{self._base_url()}/devicelogin")
        return web.json_response(body, headers=NO_STORE)


_CLAIMS_SUPPORTED = [
    *("sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name"),
    *("msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username"),
    *("name", "tid", "ver", "at_hash", "c_hash", "email"),
]
_CACHE_HEADERS = {"Cache-Control": "max-age=86400, private"}


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
