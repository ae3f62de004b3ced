"""The token endpoint's decisions, one module per grant type, dispatched by `Grants`.

    Grants                      the entry points `_app.py` calls (token endpoint, device
    │                           authorization endpoint, the sign-in pages' steps)
    ├── _HANDLERS               grant type -> its `GrantHandler` (who a request is about,
    │                           and its answer)
    │   ├── _password.py            ROPC
    │   ├── _client_credentials.py  app-only tokens
    │   ├── _refresh_token.py       refresh token rotation
    │   ├── _on_behalf_of.py        On-Behalf-Of (jwt-bearer)
    │   ├── _device_code.py         device code (also its endpoint and page steps)
    │   └── _authorization_code.py  authorization code (also its endpoint and page steps)
    ├── _shared.py              what every grant shares: state, tenancy, scopes and consent,
    │                           MFA, issuing the token response
    ├── _claims.py              the `claims` request parameter, read
    └── _request.py             `TokenRequest`, grant type names, request bounds

Client authentication is in `devauthority/_client_auth.py`, the codes' and refresh tokens'
state in `_authorize.py`, `_device.py`, `_refresh.py`. Pure logic over the registrations and
the key ring: a parsed form in, the JSON body of a token response out, or `OAuthError`
carrying Entra's error shape. The HTTP layer (`_app.py`) only parses, times, logs and
serialises.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grpc_obo.devauthority._authorize import Authorizations, Delivery, PendingSignIn
from grpc_obo.devauthority._client_auth import (
    CLIENT_ASSERTION_TYPE as CLIENT_ASSERTION_TYPE,
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
from grpc_obo.devauthority._faults import Faults, RequestInfo
from grpc_obo.devauthority._federation import Federation
from grpc_obo.devauthority._grants import (
    _authorization_code,
    _client_credentials,
    _device_code,
    _on_behalf_of,
    _password,
    _refresh_token,
)
from grpc_obo.devauthority._grants._request import (
    GRANT_AUTHORIZATION_CODE,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_DEVICE_CODE,
    GRANT_JWT_BEARER,
    GRANT_PASSWORD,
    GRANT_REFRESH_TOKEN,
    TokenRequest,
    check_bounds,
    grant_name,
)
from grpc_obo.devauthority._grants._shared import GrantContext, GrantHandler
from grpc_obo.devauthority._oauth import OAuthError as OAuthError  # re-exported for _app
from grpc_obo.devauthority._registrations import App, User
from grpc_obo.devauthority._tokens import TokenMinter
from grpc_obo.devauthority._world import World

__all__ = ["Grants", "OAuthError", "TokenRequest"]

_HANDLERS: dict[str, GrantHandler] = {
    GRANT_PASSWORD: _password.HANDLER,
    GRANT_CLIENT_CREDENTIALS: _client_credentials.HANDLER,
    GRANT_REFRESH_TOKEN: _refresh_token.HANDLER,
    GRANT_JWT_BEARER: _on_behalf_of.HANDLER,
    GRANT_DEVICE_CODE: _device_code.HANDLER,
    GRANT_AUTHORIZATION_CODE: _authorization_code.HANDLER,
}
"""Grant type -> its handler: the token endpoint answers exactly these."""


class Grants:
    """Answers token requests for one authority."""

    def __init__(
        self,
        *,
        world: World,
        minter: TokenMinter,
        faults: Faults,
        federation: Federation | None = None,
    ) -> None:
        self.context = GrantContext(
            world=world, minter=minter, faults=faults, federation=federation
        )
        self.world = world
        self.minter = minter
        self.faults = faults
        self.federation = federation
        """Checks client assertions from federated issuers (None: certificates only)."""

    @property
    def authorizations(self) -> Authorizations:
        """The authorization endpoint's pending sign-ins and issued codes."""
        return self.context.authorizations

    # -- the token endpoint -------------------------------------------------------------

    def peek(self, request: TokenRequest) -> RequestInfo:
        """Who a request is about, read before validation so faults and logs can use it.

        Nothing here is trusted: the grant handlers verify everything again.
        """
        grant = request.get("grant_type")
        client_id = request.get("client_id") or (request.basic_auth or (None, ""))[0]
        user_oid = username = None
        handler = _HANDLERS.get(grant or "")
        if handler is not None:
            user_oid, username = handler.about(self.context, request)
        if user_oid and not username:
            found = self.world.find_user(user_oid)
            username = found.username if found else None
        return RequestInfo(
            endpoint="token",
            grant=grant_name(grant, request.get("requested_token_use")),
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
        tenant = self.context.path_tenant(request.tenant)
        client, client_auth = self.context.authenticate_client(request, tenant)
        return _HANDLERS[grant].handle(self.context, request, tenant, client, client_auth)

    # -- the device code grant: start, sign in on the page (see _device_code.py) ----------

    def start_device_flow(self, request: TokenRequest, verification_uri: str) -> dict[str, Any]:
        return _device_code.start(self.context, request, verification_uri)

    def device_flow_client(self, user_code: str) -> App | None:
        return _device_code.client(self.context, user_code)

    def approve_device_flow(
        self, user_code: str, username: str, password: str
    ) -> tuple[User, str | None]:
        return _device_code.approve(self.context, user_code, username, password)

    def finish_device_mfa(self, user_code: str, ticket: str) -> User:
        return _device_code.finish_mfa(self.context, user_code, ticket)

    # -- the authorization code grant: the endpoint, the page (see _authorization_code.py) --

    def begin_authorization(self, tenant_segment: str, params: Mapping[str, str]) -> PendingSignIn:
        return _authorization_code.begin(self.context, tenant_segment, params)

    def authorization_sign_in(
        self, request_id: str, username: str, password: str
    ) -> tuple[PendingSignIn, User, str | None]:
        return _authorization_code.sign_in(self.context, request_id, username, password)

    def authorization_mfa(self, request_id: str, ticket: str) -> tuple[PendingSignIn, User]:
        return _authorization_code.mfa(self.context, request_id, ticket)

    def finish_authorization(
        self, pending: PendingSignIn, user: User, amr: tuple[str, ...]
    ) -> Delivery:
        return _authorization_code.finish(self.context, pending, user, amr)

    def authorization_client(self, request_id: str) -> App | None:
        return _authorization_code.client(self.context, request_id)
