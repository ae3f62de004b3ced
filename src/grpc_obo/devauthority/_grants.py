"""The token endpoint's decisions: scopes and consent, and the grants (password, client
credentials, refresh token, On-Behalf-Of, device code, authorization code), one handler per
grant type in `_HANDLERS`. Client authentication is in `_client_auth.py`, the device codes'
state in `_device.py`.

Pure logic over the registrations and the key ring: it takes a parsed form and returns the JSON
body of a token response, or raises `OAuthError` carrying Entra's error shape. The HTTP layer
(`_app.py`) only parses, times, logs and serialises.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from grpc_obo.devauthority._authorize import (
    PROMPTS,
    Authorizations,
    Delivery,
    PendingSignIn,
    RedirectError,
    check_pkce,
    redirect_uri_registered,
)
from grpc_obo.devauthority._client_auth import (
    CLIENT_ASSERTION_TYPE as CLIENT_ASSERTION_TYPE,
)
from grpc_obo.devauthority._client_auth import (
    GUID,
    MAX_ASSERTION_BYTES,
    authenticate_client,
    is_number,
)
from grpc_obo.devauthority._device import (
    DEVICE_CODE_INTERVAL as DEVICE_CODE_INTERVAL,
)
from grpc_obo.devauthority._device import (
    DEVICE_CODE_LIFETIME as DEVICE_CODE_LIFETIME,
)
from grpc_obo.devauthority._device import (
    MAX_DEVICE_FLOWS as MAX_DEVICE_FLOWS,
)
from grpc_obo.devauthority._device import (
    MAX_DEVICE_FLOWS_PER_CLIENT as MAX_DEVICE_FLOWS_PER_CLIENT,
)
from grpc_obo.devauthority._device import UNKNOWN_CODE, DeviceFlows
from grpc_obo.devauthority._faults import ClaimsChallenge, Faults, RequestInfo
from grpc_obo.devauthority._federation import Federation
from grpc_obo.devauthority._graph import cae_claims
from grpc_obo.devauthority._oauth import OAuthError as OAuthError  # re-exported for _app
from grpc_obo.devauthority._oauth import missing
from grpc_obo.devauthority._refresh import RefreshTokens
from grpc_obo.devauthority._signin import SignIns, bad_credentials
from grpc_obo.devauthority._tokens import TokenMinter, client_info
from grpc_obo.devauthority._world import GRAPH_APP_ID, GRAPH_APP_ID_URI, App, User, World

GRANT_PASSWORD = "password"
GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_REFRESH_TOKEN = "refresh_token"
GRANT_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GRANT_DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_AUTHORIZATION_CODE = "authorization_code"
RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})
MAX_SCOPE_CHARS = 2048
"""Longest `scope` parameter taken (hundreds of scopes; anything longer is not a real client)."""
MAX_CLAIMS_CHARS = 4096
"""Longest `claims` parameter taken (a challenge plus capabilities is well under 1 KiB)."""


@dataclass(frozen=True)
class TokenRequest:
    """A token request after form parsing: single-valued fields only."""

    tenant: str
    form: Mapping[str, str]
    token_url: str
    basic_auth: tuple[str, str] | None = None

    def get(self, name: str) -> str | None:
        value = self.form.get(name)
        return value if value else None

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise missing(name)
        return value


@dataclass(frozen=True)
class _ScopeRequest:
    resource: App
    """The API the scopes belong to; Microsoft Graph for scopes without a resource prefix."""
    names: frozenset[str]
    reserved: frozenset[str]
    resource_prefix: str


@dataclass
class Grants:
    """Answers token requests for one authority."""

    world: World
    minter: TokenMinter
    faults: Faults
    federation: Federation | None = None
    """Checks client assertions from federated issuers (None: certificates only)."""
    refresh_tokens: RefreshTokens = field(init=False)
    authorizations: Authorizations = field(init=False)
    signins: SignIns = field(init=False)
    device_flows: DeviceFlows = field(init=False)

    def __post_init__(self) -> None:
        self.refresh_tokens = RefreshTokens(lambda: self.minter.clock())
        self.authorizations = Authorizations(lambda: self.minter.clock())
        self.signins = SignIns(self.world, lambda: self.minter.clock())
        self.device_flows = DeviceFlows(lambda: self.minter.clock())

    # -- entry points -------------------------------------------------------------------

    def peek(self, request: TokenRequest) -> RequestInfo:
        """Who a request is about, read before validation so faults and logs can use it.

        Nothing here is trusted: the grant handlers verify everything again.
        """
        grant = request.get("grant_type")
        client_id = request.get("client_id") or (request.basic_auth or (None, ""))[0]
        user_oid = username = None
        handler = _HANDLERS.get(grant or "")
        if handler is not None:
            user_oid, username = handler.about(self, request)
        if user_oid and not username:
            found = self.world.find_user(user_oid)
            username = found.username if found else None
        grant_name = _grant_name(grant, request.get("requested_token_use"))
        return RequestInfo(
            endpoint="token",
            grant=grant_name,
            client_id=client_id.lower() if client_id else None,
            user_oid=user_oid,
            username=username,
        )

    def handle(self, request: TokenRequest) -> dict[str, Any]:
        check_bounds(request)
        grant = request.require("grant_type")
        if grant not in _HANDLERS:
            raise OAuthError(
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            )
        tenant = self._path_tenant(request.tenant)
        client, client_auth = self._authenticate_client(request, tenant)
        return _HANDLERS[grant].handle(self, request, tenant, client, client_auth)

    # -- the device code grant: start, sign in on the page, redeem -----------------------------

    def start_device_flow(self, request: TokenRequest, verification_uri: str) -> dict[str, Any]:
        """The device authorization endpoint: a device code for the client, a user code for
        the person, who signs in at `verification_uri` and types it."""
        check_bounds(request)
        tenant = self._path_tenant(request.tenant)
        client, _ = self._authenticate_client(request, tenant)
        raw_scope = request.require("scope")
        self._parse_scopes(raw_scope)  # an unknown resource is refused now, as Entra does
        claims = request.get("claims")
        _capabilities(claims)
        device_code, user_code = self.device_flows.start(
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

    def device_flow_client(self, user_code: str) -> App | None:
        """The app a pending user code signs in to (the page names it, as Entra's does)."""
        try:
            flow = self.device_flows.pending(user_code)
        except OAuthError:
            return None
        return self.world.find_app(flow.client_id)

    def approve_device_flow(
        self, user_code: str, username: str, password: str
    ) -> tuple[User, str | None]:
        """The sign-in page: `username` proves `password` for the code's sign-in.

        Returns the user and None when the code is approved, or the user and an MFA ticket
        when the user's conditional access (or the claims the app sent) needs MFA: the page
        then asks for the MFA step (`finish_device_mfa`). Raises `OAuthError` (shown on the
        page, never naming which of code, username or password was wrong beyond an expired
        code).
        """
        flow = self.device_flows.pending(user_code)
        user = self.signins.password(username, password)
        if flow.tenant is not None and user.tenant_id != flow.tenant:
            raise bad_credentials()
        client = self.world.find_app(flow.client_id)
        if client is None:
            raise OAuthError("expired_token", 70019, UNKNOWN_CODE)
        self._tenancy(client, None, user)
        resource = self._parse_scopes(flow.scope).resource
        if self.mfa_challenge(user, resource.client_id, flow.claims) is not None:
            return user, self.signins.start_mfa(user, f"device:{flow.user_code}")
        self.device_flows.approve(flow, user.oid, ("pwd",))
        return user, None

    def finish_device_mfa(self, user_code: str, ticket: str) -> User:
        """The MFA step of the page: approves the code with `amr` showing MFA."""
        flow = self.device_flows.pending(user_code)
        user = self.signins.finish_mfa(ticket, f"device:{flow.user_code}")
        self.device_flows.approve(flow, user.oid, ("pwd", "mfa"))
        return user

    def _device_code(
        self, request: TokenRequest, tenant: str | None, client: App, client_auth: str
    ) -> dict[str, Any]:
        flow, oid = self.device_flows.redeem(request.require("device_code"), client.client_id)
        user = self._user_in(self.world.find_user(oid), flow.tenant, oid, client)
        scopes = self._parse_scopes(flow.scope)
        granted = self._delegated_grant(client, scopes)
        return self._user_tokens(
            request,
            user,
            client,
            client_auth,
            scopes,
            granted,
            flow.amr,
            id_token=True,
            acrs=_sign_in_acrs(request.get("claims") or flow.claims),
        )

    # -- the authorization code grant: the endpoint, the page, the code ---------------------

    def begin_authorization(self, tenant_segment: str, params: Mapping[str, str]) -> PendingSignIn:
        """The authorization endpoint: check the request and remember it for the page.

        `OAuthError` when the client or its redirect URI cannot be trusted (the page shows it:
        nothing is sent to an unregistered address); `RedirectError` for everything else (sent
        to the app with its `state`). `prompt=none` always needs interaction here: the page
        keeps no sign-in session.
        """
        tenant = self._path_tenant(tenant_segment)
        client_id = params.get("client_id") or ""
        client = self.world.find_app(client_id) if GUID.match(client_id.lower()) else None
        if client is None:
            raise OAuthError(
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id[:64]}' was not found in the directory "
                f"'{tenant or tenant_segment[:64]}'.",
            )
        self._tenancy(client, tenant)
        redirect_uri = params.get("redirect_uri") or ""
        if not redirect_uri_registered(redirect_uri, client.redirect_uris):
            raise OAuthError(
                "invalid_request",
                50011,
                f"The redirect URI '{redirect_uri[:200]}' specified in the request does not "
                "match the redirect URIs configured for the application "
                f"'{client.client_id}'.",
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
            self._parse_scopes(scope)
            _capabilities(params.get("claims"))
        except OAuthError as exc:
            raise redirect(exc.error, exc.code, exc.description) from None
        return self.authorizations.remember(
            tenant=tenant,
            tenant_segment=tenant_segment.lower(),
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scope=scope,
            state=state,
            nonce=params.get("nonce"),
            code_challenge=challenge,
            claims=params.get("claims"),
            login_hint=params.get("login_hint"),
            form_post=form_post,
        )

    def authorization_sign_in(
        self, request_id: str, username: str, password: str
    ) -> tuple[PendingSignIn, User, str | None]:
        """The page's sign-in: the user and None when done, or an MFA ticket when the user's
        conditional access (or the claims the app sent) needs the MFA step."""
        pending = self.authorizations.pending(request_id)
        user = self.signins.password(username, password)
        client = self.world.find_app(pending.client_id)
        if client is None or (pending.tenant is not None and user.tenant_id != pending.tenant):
            raise bad_credentials()
        self._tenancy(client, None, user)
        resource = self._parse_scopes(pending.scope).resource
        if self.mfa_challenge(user, resource.client_id, pending.claims) is not None:
            return pending, user, self.signins.start_mfa(user, f"authorize:{pending.id}")
        return pending, user, None

    def authorization_mfa(self, request_id: str, ticket: str) -> tuple[PendingSignIn, User]:
        """The page's MFA step, approved."""
        pending = self.authorizations.pending(request_id)
        return pending, self.signins.finish_mfa(ticket, f"authorize:{pending.id}")

    def finish_authorization(
        self, pending: PendingSignIn, user: User, amr: tuple[str, ...]
    ) -> Delivery:
        """What the browser brings to the redirect URI: a new code and the app's state."""
        code = self.authorizations.issue(pending, user.oid, amr)
        return Delivery(
            pending.redirect_uri, {"code": code, "state": pending.state}, pending.form_post
        )

    def authorization_client(self, request_id: str) -> App | None:
        try:
            return self.world.find_app(self.authorizations.pending(request_id).client_id)
        except OAuthError:
            return None

    def _authorization_code(
        self, request: TokenRequest, client: App, client_auth: str
    ) -> dict[str, Any]:
        issued = self.authorizations.redeem(
            request.require("code"),
            client.client_id,
            request.get("redirect_uri"),
            request.get("code_verifier"),
        )
        user = self._user_in(
            self.world.find_user(issued.user_oid), issued.tenant, issued.user_oid, client
        )
        # The scopes are those the user signed in for, whatever the token request repeats.
        scopes = self._parse_scopes(issued.scope)
        granted = self._delegated_grant(client, scopes)
        return self._user_tokens(
            request,
            user,
            client,
            client_auth,
            scopes,
            granted,
            issued.amr,
            id_token=True,
            nonce=issued.nonce,
            acrs=_sign_in_acrs(request.get("claims") or issued.claims),
        )

    # -- tenants and clients -------------------------------------------------------------

    def _path_tenant(self, segment: str) -> str | None:
        """The tenant a GUID path names, or None for `common` / `organizations`."""
        lowered = segment.lower()
        if lowered in ("common", "organizations"):
            return None
        if self.world.tenant(lowered) is None:
            raise OAuthError(
                "invalid_request",
                90002,
                f"Tenant '{segment[:64]}' not found. Check to make sure you have the correct "
                "tenant ID and are signing into the correct cloud.",
            )
        return lowered

    def _authenticate_client(self, request: TokenRequest, tenant: str | None) -> tuple[App, str]:
        """The calling app and its `azpacr` (see `_client_auth.py`)."""
        return authenticate_client(
            request,
            tenant,
            world=self.world,
            minter=self.minter,
            federation=self.federation,
            tenancy=self._tenancy,
        )

    # -- scopes and consent -------------------------------------------------------------

    def _parse_scopes(self, raw: str | None) -> _ScopeRequest:
        if raw is None:
            raise missing("scope")
        requested = [s for s in raw.split(" ") if s]
        reserved = frozenset(s for s in requested if s in RESERVED_SCOPES)
        resource: App | None = None
        prefix = ""
        graph = self.world.resource_app(GRAPH_APP_ID)
        names: set[str] = set()
        for scope in requested:
            if scope in RESERVED_SCOPES:
                continue
            if "/" in scope:
                scope_prefix, name = scope.rsplit("/", 1)
                app = self.world.resource_app(scope_prefix)
                if app is None:
                    raise OAuthError(
                        "invalid_resource",
                        500011,
                        f"The resource principal named {scope_prefix[:100]} was not found in "
                        "the tenant.",
                    )
            else:
                scope_prefix, name, app = "", scope, graph
            if app is None:  # a world that removed Graph
                raise OAuthError(
                    "invalid_resource",
                    500011,
                    f"The resource principal named {GRAPH_APP_ID_URI} was not found in the tenant.",
                )
            if names and (app is not resource):
                raise OAuthError(
                    "invalid_scope",
                    28000,
                    "Provided value for the input parameter scope is not valid because it "
                    "contains more than one resource.",
                )
            resource, prefix = app, scope_prefix
            names.add(name)
        if resource is None:
            # Entra answers an OpenID-only request with a Microsoft Graph token.
            if graph is None:
                raise missing("scope")
            resource, names = graph, {"User.Read"}
        return _ScopeRequest(resource, frozenset(names), reserved, prefix)

    def _delegated_grant(self, client: App, scopes: _ScopeRequest) -> frozenset[str]:
        """The delegated scopes `client` may get on the resource, or a consent error."""
        resource = scopes.resource
        consented = client.api_permissions.get(resource.client_id, frozenset())
        consented |= resource.consent_free_scopes
        consented |= resource.pre_authorized.get(client.client_id, frozenset())
        if scopes.names == {".default"}:
            granted = consented & resource.scopes
        else:
            unknown = scopes.names - resource.scopes
            if unknown:
                raise OAuthError(
                    "invalid_scope",
                    70011,
                    "The provided value for the input parameter 'scope' is not valid. The scope "
                    f"'{' '.join(sorted(unknown))[:200]}' does not exist on the resource.",
                )
            granted = scopes.names & consented
            if granted != scopes.names:
                granted = frozenset()
        if not granted:
            raise OAuthError(
                "invalid_grant",
                65001,
                f"The user or administrator has not consented to use the application with ID "
                f"'{client.client_id}' named '{client.name}'. Send an interactive authorization "
                "request for this user and resource.",
                suberror="consent_required",
            )
        return granted

    # -- grants -------------------------------------------------------------------------

    def _user_in(self, user: User | None, tenant: str | None, shown: str, client: App) -> User:
        if user is None or (tenant is not None and user.tenant_id != tenant):
            if user is not None and tenant == client.tenant_id:
                self._tenancy(client, None, user)  # a stranger to the app's own tenant
            raise OAuthError(
                "invalid_grant",
                50034,
                f"The user account {shown[:100]} does not exist in the "
                f"{tenant or 'organizations'} directory. To sign into this application, the "
                "account must be added to the directory.",
            )
        self._tenancy(client, None, user)
        return user

    def _tenancy(self, client: App, tenant: str | None, user: User | None = None) -> None:
        """The one tenancy check: a single-tenant app exists only in its own tenant (a path
        naming another is AADSTS700016) and signs in only that tenant's users (AADSTS50020).
        Multi-tenant apps are taken everywhere (their consent is modelled, not provisioning)."""
        if client.multi_tenant:
            return
        if tenant is not None and tenant != client.tenant_id:
            raise OAuthError(
                "unauthorized_client",
                700016,
                f"Application with identifier '{client.client_id}' was not found in the "
                f"directory '{tenant}'. This can happen if the application has not been "
                "installed by the administrator of the tenant or consented to by any user in "
                "the tenant. You may have sent your authentication request to the wrong tenant.",
            )
        if user is not None and user.tenant_id != client.tenant_id:
            home = self.world.tenant(client.tenant_id)
            raise OAuthError(
                "invalid_grant",
                50020,
                f"User account '{user.username[:100]}' from identity provider "
                f"'{self.minter.issuer(user.tenant_id, 1)}' does not exist in tenant "
                f"'{home.name if home else client.tenant_id}' and cannot access the application "
                f"'{client.client_id}'({client.name[:64]}) in that tenant. The account needs to "
                "be added as an external user in the tenant first.",
            )

    def _password(
        self, request: TokenRequest, tenant: str | None, client: App, client_auth: str
    ) -> dict[str, Any]:
        username = request.require("username")
        password = request.require("password")
        scopes = self._parse_scopes(request.get("scope"))
        self._user_in(self.world.find_user(username), tenant, username, client)
        user = self.signins.password(username, password)
        granted = self._delegated_grant(client, scopes)
        # A password is one factor: when the user's conditional access wants MFA for this
        # resource, or the app brings a pending challenge's claims, Entra refuses ROPC (the
        # user must sign in interactively: the device code or authorization code page).
        challenge = self.mfa_challenge(user, scopes.resource.client_id, request.get("claims"))
        if challenge is not None:
            raise _mfa_required(challenge, scopes.resource.client_id, "invalid_grant")
        return self._user_tokens(
            request, user, client, client_auth, scopes, granted, ("pwd",), id_token=True
        )

    def mfa_challenge(
        self, user: User, resource_client_id: str, claims: str | None
    ) -> ClaimsChallenge | None:
        """What a sign-in of `user` for this resource must answer with MFA: a conditional
        access policy covering the resource, or a pending challenge whose requirements the
        request's `claims` carry (whatever resource that challenge came from: the client signs
        in to the first API with the claims a downstream API's challenge sent up the chain)."""
        found = self.faults.challenge_for(
            RequestInfo(endpoint="token", user_oid=user.oid, username=user.username),
            resource_client_id,
        )
        if found is None and claims is not None:
            found = self._requested_challenge(user, claims)
        return found

    def _requested_challenge(self, user: User, claims_json: str) -> ClaimsChallenge | None:
        """The user's pending challenge whose requirements `claims_json` carries, if any."""
        requested = _access_token_claims(claims_json)
        if not requested:
            return None
        for challenge in self.faults.challenges_of(
            RequestInfo(endpoint="token", user_oid=user.oid, username=user.username)
        ):
            wanted = _access_token_claims(challenge.claims)
            if wanted and all(requested.get(name) == value for name, value in wanted.items()):
                return challenge
        return None

    def _refresh(
        self, request: TokenRequest, tenant: str | None, client: App, client_auth: str
    ) -> dict[str, Any]:
        presented = request.require("refresh_token")
        held = self.refresh_tokens.redeem(presented, client.client_id, self.world.find_user)
        user = self._user_in(self.world.find_user(held.user_oid), tenant, held.user_oid, client)
        raw_scope = request.get("scope")
        scopes = self._parse_scopes(raw_scope) if raw_scope else None
        if scopes is None:
            resource = self.world.resource_app(held.resource_client_id)
            if resource is None:
                raise OAuthError(
                    "invalid_resource",
                    500011,
                    f"The resource principal named {held.resource_client_id} was not found in "
                    "the tenant.",
                )
            scopes = _ScopeRequest(
                resource, held.scopes, frozenset({"offline_access"}), held.resource_prefix
            )
        elif "offline_access" not in scopes.reserved:
            # Rotation: a redeemed refresh token is gone, so its successor comes back even when
            # the request does not repeat offline_access (Entra does the same).
            scopes = _ScopeRequest(
                scopes.resource,
                scopes.names,
                scopes.reserved | {"offline_access"},
                scopes.resource_prefix,
            )
        granted = self._delegated_grant(client, scopes)
        if "mfa" not in held.amr:
            # A refresh token keeps the factors of its sign-in; it cannot add one.
            challenge = self.mfa_challenge(user, scopes.resource.client_id, request.get("claims"))
            if challenge is not None:
                raise _mfa_required(challenge, scopes.resource.client_id, "interaction_required")
        return self._user_tokens(
            request, user, client, client_auth, scopes, granted, held.amr, id_token=True
        )

    def _client_credentials(
        self, request: TokenRequest, tenant: str | None, client: App, client_auth: str
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
        scopes = self._parse_scopes(raw)
        resource = scopes.resource
        roles = client.app_role_assignments.get(resource.client_id, frozenset())
        issued = self.minter.access_token(
            client=client,
            resource=resource,
            tenant_id=tenant,
            roles=roles,
            client_auth=client_auth,
            capabilities=_capabilities(request.get("claims")),
        )
        return _token_body(issued.token, issued.expires_at, self.minter.clock())

    def _on_behalf_of(
        self, request: TokenRequest, tenant: str | None, client: App, client_auth: str
    ) -> dict[str, Any]:
        if request.get("requested_token_use") != "on_behalf_of":
            raise OAuthError(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: "
                "'requested_token_use' with the value 'on_behalf_of'.",
            )
        if client.public_client:
            raise OAuthError(
                "invalid_client",
                7000218,
                "The On-Behalf-Of flow needs a confidential client: the request body must "
                "contain 'client_assertion' or 'client_secret'.",
                status=401,
            )
        assertion = request.require("assertion")
        scopes = self._parse_scopes(request.get("scope"))
        requested_claims = request.get("claims")
        _capabilities(requested_claims)  # malformed claims are refused before any decision
        claims = self._read_assertion(assertion, client)
        oid, tid = claims.get("oid"), claims.get("tid")
        if not isinstance(claims.get("scp"), str) or claims.get("idtyp") == "app":
            raise OAuthError(
                "invalid_grant",
                50013,
                "Assertion failed validation: an On-Behalf-Of assertion must be a delegated "
                "(user) access token, not an app-only token.",
            )
        user = self.world.find_user(oid) if isinstance(oid, str) else None
        if user is None or user.tenant_id != tid:
            raise OAuthError(
                "invalid_grant",
                50034,
                f"The user account {oid if isinstance(oid, str) else '(none)'} does not exist "
                f"in the {tid if isinstance(tid, str) else 'given'} directory.",
            )
        user = self._user_in(user, tenant, user.oid, client)
        revoked = user.tokens_valid_from
        if revoked and not (is_number(claims.get("iat")) and claims["iat"] >= revoked):
            # Entra refuses a grant issued before the user's sessions were revoked with
            # AADSTS50173 (invalid_grant) and the claims a new sign-in must carry.
            raise OAuthError(
                "invalid_grant",
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is "
                "needed. The user might have changed or reset their password. The grant was "
                f"issued on '{_iso(claims.get('iat'))}' and the TokensValidFrom date (before "
                f"which tokens are not valid) for this user is '{_iso(revoked)}'.",
                claims=cae_claims(revoked),
            )
        granted = self._delegated_grant(client, scopes)
        amr = tuple(a for a in claims.get("amr", ()) if isinstance(a, str)) or ("pwd",)
        resource_id = scopes.resource.client_id
        challenge = self.faults.challenge_for(
            RequestInfo(endpoint="token", user_oid=user.oid, username=user.username), resource_id
        )
        if challenge is None and requested_claims is not None:
            # The middle tier asks for a token meeting a challenge (say, one a downstream API
            # relayed): Entra issues it only if the user's sign-in already did.
            challenge = self._requested_challenge(user, requested_claims)
        acrs = _string_claims(claims.get("acrs"))
        wanted_acrs = _requested_acrs(requested_claims)
        missing_acrs = sorted(wanted_acrs - set(acrs))
        if missing_acrs:
            # An authentication context (step-up) is met by the user's sign-in, never by the
            # middle tier: the assertion must carry it already.
            wanted: dict[str, Any] = {"essential": True}
            if len(missing_acrs) == 1:
                wanted["value"] = missing_acrs[0]
            else:
                wanted["values"] = missing_acrs
            raise OAuthError(
                "interaction_required",
                50076,
                "The user's sign-in does not satisfy the authentication context "
                f"'{','.join(missing_acrs)}' required to access '{resource_id}'. Sign in "
                "again with the claims.",
                suberror="basic_action",
                claims=json.dumps({"access_token": {"acrs": wanted}}, separators=(",", ":")),
            )
        if challenge is not None and "mfa" not in amr:
            raise _mfa_required(challenge, resource_id, "interaction_required")
        return self._user_tokens(
            request, user, client, client_auth, scopes, granted, amr, id_token=False, acrs=acrs
        )

    def _read_assertion(self, assertion: str, client: App) -> dict[str, Any]:
        if len(assertion) > MAX_ASSERTION_BYTES:
            raise OAuthError("invalid_grant", 50027, "JWT token is invalid or malformed.")
        try:
            claims = self.minter.read_own(assertion)
        except jwt.ExpiredSignatureError:
            raise OAuthError(
                "invalid_grant",
                500133,
                "Assertion is not within its valid time range. Ensure that the access token "
                "is not expired before using it for user assertion, or request a new token.",
            ) from None
        except jwt.ImmatureSignatureError:
            raise OAuthError(
                "invalid_grant", 500133, "Assertion is not within its valid time range."
            ) from None
        except jwt.InvalidSignatureError:
            raise OAuthError(
                "invalid_grant",
                50013,
                "Assertion failed signature validation. [Reason - The key was not found.]",
            ) from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise OAuthError("invalid_grant", 50027, "JWT token is invalid or malformed.") from None
        tid = claims.get("tid")
        expected_issuers = (
            {self.minter.issuer(tid, 2), self.minter.issuer(tid, 1)}
            if isinstance(tid, str)
            else set()
        )
        if claims.get("iss") not in expected_issuers:
            raise OAuthError(
                "invalid_grant", 50013, "Assertion failed validation: the issuer is not valid."
            )
        aud = claims.get("aud")
        if not isinstance(aud, str) or aud not in client.identifiers():
            raise OAuthError(
                "invalid_grant",
                50013,
                "Assertion audience does not match the Client app presenting the assertion. "
                f"The audience in the assertion was '{str(aud)[:100]}' and the expected audience "
                f"is '{client.client_id}' or one of the Application Id URIs of this "
                "application.",
            )
        return claims

    def _user_tokens(
        self,
        request: TokenRequest,
        user: User,
        client: App,
        client_auth: str,
        scopes: _ScopeRequest,
        granted: frozenset[str],
        amr: tuple[str, ...],
        *,
        id_token: bool,
        nonce: str | None = None,
        acrs: tuple[str, ...] | None = None,
    ) -> dict[str, Any]:
        """`acrs`: the authentication contexts the token carries; by default those a sign-in's
        `claims` asks for (it stands for the interactive step-up), On-Behalf-Of passes the
        assertion's on."""
        if acrs is None:
            acrs = _sign_in_acrs(request.get("claims"))
        issued = self.minter.access_token(
            client=client,
            resource=scopes.resource,
            tenant_id=user.tenant_id,
            user=user,
            scopes=granted,
            client_auth=client_auth,
            capabilities=_capabilities(request.get("claims")),
            amr=amr,
            extra={"acrs": list(acrs)} if acrs else None,
        )
        body = _token_body(issued.token, issued.expires_at, self.minter.clock())
        prefix = f"{scopes.resource_prefix}/" if scopes.resource_prefix else ""
        body["scope"] = " ".join(sorted(f"{prefix}{s}" for s in granted) + sorted(scopes.reserved))
        if "offline_access" in scopes.reserved:
            body["refresh_token"] = self.refresh_tokens.issue(
                user,
                client_id=client.client_id,
                resource_client_id=scopes.resource.client_id,
                resource_prefix=scopes.resource_prefix,
                scopes=granted,
                amr=amr,
            )
        if id_token and "openid" in scopes.reserved:
            body["id_token"] = self.minter.id_token(
                user=user, client=client, tenant_id=user.tenant_id, nonce=nonce
            )
        if request.get("client_info") == "1":
            body["client_info"] = client_info(user, user.tenant_id)
        return body


def _mfa_required(challenge: ClaimsChallenge, resource_id: str, error: str) -> OAuthError:
    """Entra's AADSTS50076 with the challenge's claims (`invalid_grant` for ROPC,
    `interaction_required` for On-Behalf-Of and refresh)."""
    return OAuthError(
        error,
        50076,
        "Due to a configuration change made by your administrator, or because you moved to a "
        "new location, you must use multi-factor authentication to access "
        f"'{resource_id}'.",
        suberror="basic_action",
        claims=challenge.claims,
    )


def check_bounds(request: TokenRequest) -> None:
    """Refuse a `scope` or `claims` parameter longer than any real client sends."""
    if len(request.form.get("scope") or "") > MAX_SCOPE_CHARS:
        raise OAuthError(
            "invalid_scope", 70011, f"The 'scope' parameter is longer than {MAX_SCOPE_CHARS}."
        )
    if len(request.form.get("claims") or "") > MAX_CLAIMS_CHARS:
        raise OAuthError(
            "invalid_request", 90014, f"The 'claims' parameter is longer than {MAX_CLAIMS_CHARS}."
        )


def _grant_name(grant: str | None, requested_token_use: str | None) -> str | None:
    """Short names for the log: `obo` for the On-Behalf-Of flavour of jwt-bearer,
    `device_code` for the device code grant."""
    if grant == GRANT_JWT_BEARER:
        return "obo" if requested_token_use == "on_behalf_of" else "jwt_bearer"
    if grant == GRANT_DEVICE_CODE:
        return "device_code"
    return grant


def _token_body(token: str, expires_at: int, now: float) -> dict[str, Any]:
    expires_in = max(0, int(expires_at - now))
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": token,
    }
    if expires_in >= 7200:
        # Entra's hint for proactive refresh on long-lived tokens (MSAL reads it).
        body["refresh_in"] = expires_in // 2
    return body


def _capabilities(claims_json: str | None) -> list[str]:
    """Client capabilities from the `claims` request parameter (`xms_cc`, e.g. `cp1`)."""
    if not claims_json:
        return []
    try:
        parsed = _load_json(claims_json)
    except ValueError:
        raise OAuthError(
            "invalid_request", 90014, "The 'claims' parameter is not valid JSON."
        ) from None
    if not isinstance(parsed, dict):
        raise OAuthError("invalid_request", 90014, "The 'claims' parameter must be an object.")
    access = parsed.get("access_token", {})
    if not isinstance(access, dict):
        raise OAuthError(
            "invalid_request", 90014, "The 'claims' parameter's 'access_token' must be an object."
        )
    wanted = access.get("xms_cc", {})
    if not isinstance(wanted, dict):
        raise OAuthError(
            "invalid_request", 90014, "The 'claims' parameter's 'xms_cc' must be an object."
        )
    values = wanted.get("values")
    if not isinstance(values, list):
        return []
    return [v for v in values if isinstance(v, str) and v.isalnum() and len(v) <= 16]


def _access_token_claims(claims_json: str) -> dict[str, Any]:
    """The requirements a `claims` request puts on the access token (capabilities aside)."""
    try:
        parsed = _load_json(claims_json)
    except ValueError:
        return {}
    access = parsed.get("access_token") if isinstance(parsed, dict) else None
    if not isinstance(access, dict):
        return {}
    return {name: value for name, value in access.items() if name != "xms_cc"}


def _sign_in_acrs(claims_json: str | None) -> tuple[str, ...]:
    """The authentication contexts a sign-in carrying `claims_json` meets (it stands for the
    interactive step-up those contexts ask for)."""
    return tuple(sorted(_requested_acrs(claims_json)))


def _requested_acrs(claims_json: str | None) -> set[str]:
    """The authentication contexts (`c1`...) a `claims` request asks for (`value`/`values`)."""
    if not claims_json:
        return set()
    acrs = _access_token_claims(claims_json).get("acrs")
    if not isinstance(acrs, dict):
        return set()
    values = acrs.get("values", [acrs.get("value")])
    return set(_string_claims(values if isinstance(values, list) else [values]))


def _string_claims(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str) and re.fullmatch(r"c[1-9][0-9]?", v))


def _load_json(text: str) -> Any:
    """`json.loads` that reports hostile nesting as bad input, not as an internal error."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _iso(value: object) -> str:
    if not is_number(value):
        return "unknown"
    return datetime.datetime.fromtimestamp(value, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- one handler per grant type -------------------------------------------------------------

Handle = Callable[["Grants", TokenRequest, "str | None", App, str], dict[str, Any]]


@dataclass(frozen=True)
class GrantHandler:
    """One grant type: who a request is about (unverified, for faults and the log), and its
    answer once the client is authenticated (tenant from the path, client, its `azpacr`)."""

    about: Callable[[Grants, TokenRequest], tuple[str | None, str | None]]
    handle: Handle


def _about_password(grants: Grants, request: TokenRequest) -> tuple[str | None, str | None]:
    username = request.get("username")
    found = grants.world.find_user(username) if username else None
    return (found.oid if found else None), username


def _about_assertion(grants: Grants, request: TokenRequest) -> tuple[str | None, str | None]:
    try:
        claims = jwt.decode(request.get("assertion") or "", options={"verify_signature": False})
    except (jwt.InvalidTokenError, ValueError, TypeError):
        return None, None
    oid = claims.get("oid")
    return (oid if isinstance(oid, str) else None), None


def _about_nobody(grants: Grants, request: TokenRequest) -> tuple[str | None, str | None]:
    return None, None


_HANDLERS: dict[str, GrantHandler] = {
    GRANT_PASSWORD: GrantHandler(_about_password, Grants._password),
    GRANT_CLIENT_CREDENTIALS: GrantHandler(_about_nobody, Grants._client_credentials),
    GRANT_REFRESH_TOKEN: GrantHandler(
        lambda g, r: (g.refresh_tokens.owner(r.get("refresh_token") or ""), None),
        Grants._refresh,
    ),
    GRANT_JWT_BEARER: GrantHandler(_about_assertion, Grants._on_behalf_of),
    GRANT_DEVICE_CODE: GrantHandler(
        lambda g, r: (g.device_flows.owner(r.get("device_code") or ""), None),
        Grants._device_code,
    ),
    GRANT_AUTHORIZATION_CODE: GrantHandler(
        lambda g, r: (g.authorizations.owner(r.get("code") or ""), None),
        lambda g, r, _tenant, c, a: g._authorization_code(r, c, a),
    ),
}
"""Grant type -> its handler: the token endpoint answers exactly these."""
