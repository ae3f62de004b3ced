"""What every grant shares: the authority's state (`GrantContext`: registrations, key ring,
faults, the codes and refresh tokens in flight) and the decisions they all make the same way:
the tenant a path names, client authentication (delegated to `_client_auth.py`), tenancy,
scopes and consent, the MFA a sign-in must show, and issuing the token response.

A grant module (`_password.py`, `_on_behalf_of.py`, ...) is a `GrantHandler` over this
context; none decides any of the above on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from grpc_obo.devauthority._authorize import Authorizations
from grpc_obo.devauthority._client_auth import authenticate_client
from grpc_obo.devauthority._device import DeviceFlows
from grpc_obo.devauthority._faults import ClaimsChallenge, Faults, RequestInfo
from grpc_obo.devauthority._federation import Federation
from grpc_obo.devauthority._grants._claims import (
    access_token_claims,
    capabilities,
    sign_in_acrs,
)
from grpc_obo.devauthority._grants._request import TokenRequest
from grpc_obo.devauthority._oauth import OAuthError, missing
from grpc_obo.devauthority._refresh import RefreshTokens
from grpc_obo.devauthority._registrations import GRAPH_APP_ID, GRAPH_APP_ID_URI, App, User
from grpc_obo.devauthority._signin import SignIns
from grpc_obo.devauthority._tokens import TokenMinter, client_info
from grpc_obo.devauthority._world import World

RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})


@dataclass(frozen=True)
class ScopeRequest:
    resource: App
    """The API the scopes belong to; Microsoft Graph for scopes without a resource prefix."""
    names: frozenset[str]
    reserved: frozenset[str]
    resource_prefix: str


@dataclass
class GrantContext:
    """One authority's state and the decisions its grants share."""

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

    # -- tenants and clients -------------------------------------------------------------

    def path_tenant(self, segment: str) -> str | None:
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

    def authenticate_client(self, request: TokenRequest, tenant: str | None) -> tuple[App, str]:
        """The calling app and its `azpacr` (see `_client_auth.py`)."""
        return authenticate_client(
            request,
            tenant,
            world=self.world,
            minter=self.minter,
            federation=self.federation,
            tenancy=self.tenancy,
        )

    def user_in(self, user: User | None, tenant: str | None, shown: str, client: App) -> User:
        """`user`, when it exists in `tenant` and may use `client`; else Entra's refusal."""
        if user is None or (tenant is not None and user.tenant_id != tenant):
            if user is not None and tenant == client.tenant_id:
                self.tenancy(client, None, user)  # a stranger to the app's own tenant
            raise OAuthError(
                "invalid_grant",
                50034,
                f"The user account {shown[:100]} does not exist in the "
                f"{tenant or 'organizations'} directory. To sign into this application, the "
                "account must be added to the directory.",
            )
        self.tenancy(client, None, user)
        return user

    def tenancy(self, client: App, tenant: str | None, user: User | None = None) -> None:
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

    # -- scopes and consent -------------------------------------------------------------

    def parse_scopes(self, raw: str | None) -> ScopeRequest:
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
        return ScopeRequest(resource, frozenset(names), reserved, prefix)

    def delegated_grant(self, client: App, scopes: ScopeRequest) -> frozenset[str]:
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

    # -- MFA ----------------------------------------------------------------------------

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
            found = self.requested_challenge(user, claims)
        return found

    def requested_challenge(self, user: User, claims_json: str) -> ClaimsChallenge | None:
        """The user's pending challenge whose requirements `claims_json` carries, if any."""
        requested = access_token_claims(claims_json)
        if not requested:
            return None
        for challenge in self.faults.challenges_of(
            RequestInfo(endpoint="token", user_oid=user.oid, username=user.username)
        ):
            wanted = access_token_claims(challenge.claims)
            if wanted and all(requested.get(name) == value for name, value in wanted.items()):
                return challenge
        return None

    # -- issuing ------------------------------------------------------------------------

    def user_tokens(
        self,
        request: TokenRequest,
        user: User,
        client: App,
        client_auth: str,
        scopes: ScopeRequest,
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
            acrs = sign_in_acrs(request.get("claims"))
        issued = self.minter.access_token(
            client=client,
            resource=scopes.resource,
            tenant_id=user.tenant_id,
            user=user,
            scopes=granted,
            client_auth=client_auth,
            capabilities=capabilities(request.get("claims")),
            amr=amr,
            extra={"acrs": list(acrs)} if acrs else None,
        )
        body = token_body(issued.token, issued.expires_at, self.minter.clock())
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


def mfa_required(challenge: ClaimsChallenge, resource_id: str, error: str) -> OAuthError:
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


def token_body(token: str, expires_at: int, now: float) -> dict[str, Any]:
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


# -- one handler per grant type -------------------------------------------------------------

Redeem = Callable[[GrantContext, TokenRequest, "str | None", App, str], dict[str, Any]]


@dataclass(frozen=True)
class GrantHandler:
    """One grant type: who a request is about (unverified, for faults and the log), and its
    answer once the client is authenticated (tenant from the path, client, its `azpacr`)."""

    about: Callable[[GrantContext, TokenRequest], tuple[str | None, str | None]]
    handle: Redeem


def about_nobody(context: GrantContext, request: TokenRequest) -> tuple[str | None, str | None]:
    return None, None
