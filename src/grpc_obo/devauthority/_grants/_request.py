"""A token request as the grants read it: the grant types the token endpoint names, the parsed
form (`TokenRequest`), the bounds every request is held to before any decision, and the short
grant names the request log shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from grpc_obo.devauthority._oauth import OAuthError, missing

GRANT_PASSWORD = "password"
GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_REFRESH_TOKEN = "refresh_token"
GRANT_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GRANT_DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_AUTHORIZATION_CODE = "authorization_code"
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


def grant_name(grant: str | None, requested_token_use: str | None) -> str | None:
    """Short names for the log: `obo` for the On-Behalf-Of flavour of jwt-bearer,
    `device_code` for the device code grant."""
    if grant == GRANT_JWT_BEARER:
        return "obo" if requested_token_use == "on_behalf_of" else "jwt_bearer"
    if grant == GRANT_DEVICE_CODE:
        return "device_code"
    return grant
