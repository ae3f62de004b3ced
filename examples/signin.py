"""The client app's sign-in: MSAL against the dev authority (ROPC, for the demo and tests only).

A real client app signs users in interactively (auth code + PKCE, device code); the username and
password flow keeps the demo non-interactive. `claims` is a claims challenge the user must answer
(here: by doing MFA), passed back to the authority exactly as an API relayed it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import msal

from examples.settings import Settings
from grpc_obo.devauthority import msal_http_client


class SignInError(RuntimeError):
    """The authority refused the sign-in (its error code, never a password or token)."""


def sign_in(settings: Settings, user: str, *, claims: str | None = None) -> str:
    """An access token for the Workspace (`access_as_user`), for `user` of the demo world."""
    found = settings.user(user)
    host = urlsplit(settings.authority_host)
    http = msal_http_client(settings.ca_file, host=host.hostname, port=host.port)
    try:
        app = msal.PublicClientApplication(
            settings.app("client")["client_id"],
            authority=f"{settings.authority_host}/{found['tenant_id']}",
            instance_discovery=False,  # not a Microsoft host
            http_client=http,
        )
        result = app.acquire_token_by_username_password(
            found["username"],
            found["password"],
            scopes=[settings.scope("original", "access_as_user")],
            claims_challenge=claims,
        )
    finally:
        http.close()
    if "access_token" not in result:
        raise SignInError(f"sign-in failed for {user}: {result.get('error')}")
    return str(result["access_token"])
