"""The client app's sign-in: MSAL against the dev authority.

A first sign-in uses the username and password flow (ROPC) to keep the demo non-interactive.
Answering a claims challenge (MFA) cannot be done with a password, against Entra ID or the dev
authority: the app signs the user in interactively with MSAL's device code flow, and this module
plays the person at the authority's sign-in page by posting its forms over HTTP exactly as a
browser would (code, username and password, then the MFA step's approval). A real app shows the
page to its user instead (`acquire_token_interactive`, or the device code message).
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import msal
import requests

from examples.settings import Settings
from grpc_obo.devauthority import msal_http_client


class SignInError(RuntimeError):
    """The authority refused the sign-in (its error code, never a password or token)."""


def sign_in(settings: Settings, user: str, *, claims: str | None = None) -> str:
    """An access token for the Workspace (`access_as_user`), for `user` of the demo world;
    with `claims` (a claims challenge) the sign-in is interactive and answers it with MFA."""
    found = settings.user(user)
    host = urlsplit(settings.authority_host)
    http = msal_http_client(settings.ca_file, host=host.hostname, port=host.port)
    scopes = [settings.scope("original", "access_as_user")]
    try:
        app = msal.PublicClientApplication(
            settings.app("client")["client_id"],
            authority=f"{settings.authority_host}/{found['tenant_id']}",
            instance_discovery=False,  # not a Microsoft host
            http_client=http,
        )
        if claims is None:
            result = app.acquire_token_by_username_password(
                found["username"], found["password"], scopes=scopes
            )
        else:
            flow = app.initiate_device_flow(scopes=scopes, claims_challenge=claims)
            if "user_code" not in flow:
                raise SignInError(f"device code refused for {user}: {flow.get('error')}")
            _fill_in_the_page(http, flow, found["username"], found["password"])
            result = app.acquire_token_by_device_flow(flow)
    finally:
        http.close()
    if "access_token" not in result:
        raise SignInError(f"sign-in failed for {user}: {result.get('error')}")
    return str(result["access_token"])


def _fill_in_the_page(
    http: requests.Session, flow: dict[str, Any], username: str, password: str
) -> None:
    """What the person does in a browser: open the page, type code, username and password,
    then approve the MFA step when the page asks for it."""
    page = http.get(flow["verification_uri"], timeout=10)
    typed = {"code": flow["user_code"], "username": username, "password": password}
    for _step in range(3):  # the credentials form, then at most the MFA step
        form = _Form.of(page.text)
        if form is None:
            break
        page = http.post(urljoin(page.url, form.action), data={**form.fields, **typed}, timeout=10)
        typed = {}
        if page.status_code != 200:
            raise SignInError(f"the sign-in page refused the sign-in (HTTP {page.status_code})")
    if "You have signed in" not in page.text:
        raise SignInError("the sign-in page did not finish the sign-in")


class _Form(HTMLParser):
    """The first form of a page: its action and its prefilled (hidden) fields."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    @classmethod
    def of(cls, page: str) -> _Form | None:
        parser = cls()
        parser.feed(page)
        return parser if parser.action is not None else None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = found.get("action") or ""
        elif tag == "input" and found.get("type") == "hidden" and found.get("name"):
            self.fields[str(found["name"])] = found.get("value") or ""
