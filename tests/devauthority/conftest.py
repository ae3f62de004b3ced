"""Fixtures for the dev authority's tests: one threaded authority, real MSAL, raw HTTPS helpers.

The authority serves from its own thread and loop for the whole session (keys and certificates
cost time); every test leaves it clean: faults and the request log are cleared afterwards. MSAL
apps are built fresh per test because MSAL keeps an HTTP cache and throttling state per app.
"""

from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jwt
import msal
import pytest
import requests

from grpc_obo.devauthority import DevAuthority

TIMEOUT = 10.0
"""Seconds for every HTTP call: a hang must fail the test, not stall the suite."""

# MSAL deprecates ROPC for public clients; signing users in by password is what tests need.
ROPC_DEPRECATION = "ignore:This API has been deprecated for public client flows:DeprecationWarning"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.filterwarnings(ROPC_DEPRECATION))


@pytest.fixture(scope="session")
def authority() -> Iterator[DevAuthority]:
    with DevAuthority().running_in_thread() as running:
        yield running


@pytest.fixture(autouse=True)
def _clean_authority(authority: DevAuthority) -> Iterator[None]:
    # A revocation (revoke_sessions, a password change) moves a user's tokens_valid_from, and
    # tokens issued in that second are stamped with the next one: restored, so no later test
    # sees a revocation it did not make.
    valid_from = {user.username: user.tokens_valid_from for user in authority.world.users}
    yield
    authority.faults.clear()
    authority.requests.clear()
    for user in authority.world.users:
        if user.username in valid_from:
            user.tokens_valid_from = valid_from[user.username]


class Http:
    """Raw HTTPS to the authority (no MSAL caches or throttling in the way)."""

    def __init__(self, authority: DevAuthority) -> None:
        self.authority = authority
        self.session = requests.Session()
        # Environment CA bundles would outrank `verify` (see DESIGN.md): ignore the environment.
        self.session.trust_env = False
        self.session.verify = str(authority.ca_file)

    def get(self, path_or_url: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self._url(path_or_url), timeout=TIMEOUT, **kwargs)

    def post(self, path_or_url: str, **kwargs: Any) -> requests.Response:
        return self.session.post(self._url(path_or_url), timeout=TIMEOUT, **kwargs)

    def token(
        self,
        form: Mapping[str, str] | None = None,
        *,
        tenant: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """POST a form to the token endpoint of `tenant` (default: the home tenant)."""
        url = f"{self.authority.authority_for(tenant)}/oauth2/v2.0/token"
        return self.post(url, data=dict(form or {}), **kwargs)

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith("https://"):
            return path_or_url
        return f"{self.authority.base_url}{path_or_url}"

    def jwks(self) -> dict[str, Any]:
        response = self.get(self.authority.jwks_url)
        response.raise_for_status()
        keys: dict[str, Any] = response.json()
        return keys

    def verify(self, token: str, *, audience: str, issuer: str | None = None) -> dict[str, Any]:
        """Check the signature against the JWKS fetched now over HTTPS, like a resource would."""
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "RS256"
        key = jwt.PyJWKSet.from_dict(self.jwks())[header["kid"]]
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            audience=audience,
            issuer=issuer or self.authority.issuer(2),
            options={"require": ["exp", "iat", "nbf", "iss", "aud", "tid", "oid", "sub"]},
        )
        return claims

    def close(self) -> None:
        self.session.close()


@pytest.fixture
def http(authority: DevAuthority) -> Iterator[Http]:
    client = Http(authority)
    try:
        yield client
    finally:
        client.close()


class Msal:
    """Builds fresh, unmodified MSAL apps against the authority and closes their HTTP sessions."""

    def __init__(self, authority: DevAuthority) -> None:
        self.authority = authority
        self._sessions: list[requests.Session] = []

    def _common(self, authority_url: str | None) -> dict[str, Any]:
        session = self.authority.msal_http_client()
        self._sessions.append(session)
        return {
            "authority": authority_url or self.authority.authority_url,
            "instance_discovery": False,
            "http_client": session,
            "timeout": TIMEOUT,
        }

    def public(
        self,
        name: str = "client",
        *,
        authority_url: str | None = None,
        client_capabilities: list[str] | None = None,
    ) -> msal.PublicClientApplication:
        return msal.PublicClientApplication(
            self.authority.world.app(name).client_id,
            client_capabilities=client_capabilities,
            **self._common(authority_url),
        )

    def confidential(
        self,
        name: str = "original",
        *,
        credential: Any = None,
        authority_url: str | None = None,
        client_capabilities: list[str] | None = None,
    ) -> msal.ConfidentialClientApplication:
        app = self.authority.world.app(name)
        return msal.ConfidentialClientApplication(
            app.client_id,
            client_credential=credential if credential is not None else app.secrets[0],
            client_capabilities=client_capabilities,
            **self._common(authority_url),
        )

    def sign_in(
        self,
        user: str = "alice",
        *,
        scopes: list[str] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """ROPC sign-in through the public client; returns MSAL's result (asserted successful)."""
        found = self.authority.world.user(user)
        result: dict[str, Any] = self.public().acquire_token_by_username_password(
            found.username,
            found.password,
            scopes=scopes or [scope(self.authority, "original")],
            **kwargs,
        )
        assert "access_token" in result, result
        return result

    def sign_in_interactively(
        self,
        user: str = "alice",
        *,
        scopes: list[str] | None = None,
        claims_challenge: str | None = None,
        app: msal.PublicClientApplication | None = None,
    ) -> dict[str, Any]:
        """A device code sign-in through MSAL, the page filled in over HTTP as a browser posts
        it (MFA step approved when asked): the interactive way, which satisfies MFA."""
        app = app or self.public()
        flow = app.initiate_device_flow(
            scopes=scopes or [scope(self.authority, "original")],
            claims_challenge=claims_challenge,
        )
        assert "user_code" in flow, flow
        page = SignInPage(self.authority)
        try:
            page.open(flow["verification_uri"])
            page.submit(code=flow["user_code"], **page.credentials(user))
            if page.asks_for_mfa:
                page.submit()
            assert "You have signed in" in page.text, page.text
        finally:
            page.close()
        result: dict[str, Any] = app.acquire_token_by_device_flow(flow)
        assert "access_token" in result, result
        return result

    def close(self) -> None:
        for session in self._sessions:
            session.close()


class SignInPage:
    """The authority's sign-in page driven over HTTP as a browser would: GET a page, post its
    form (hidden fields included) with what the person types, follow redirects."""

    def __init__(self, authority: DevAuthority) -> None:
        self.authority = authority
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = str(authority.ca_file)
        self.response: requests.Response | None = None

    @property
    def text(self) -> str:
        assert self.response is not None
        return self.response.text

    @property
    def asks_for_mfa(self) -> bool:
        return 'id="approve"' in self.text

    def credentials(self, user: str) -> dict[str, str]:
        found = self.authority.world.user(user)
        return {"username": found.username, "password": found.password}

    def open(self, url: str, **kwargs: Any) -> requests.Response:
        self.response = self.session.get(url, timeout=TIMEOUT, **kwargs)
        return self.response

    def submit(self, **typed: str) -> requests.Response:
        """Post the page's form: its action, its hidden fields, and what the person typed."""
        action = re.search(r'<form method="post" action="([^"]*)"', self.text)
        assert action is not None, self.text
        fields = dict(
            re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', self.text)
        )
        fields = {html.unescape(k): html.unescape(v) for k, v in fields.items()}
        fields.update(typed)
        url = urllib.parse.urljoin(
            self.response.url if self.response is not None else "", html.unescape(action.group(1))
        )
        self.response = self.session.post(url, data=fields, timeout=TIMEOUT, allow_redirects=False)
        return self.response

    def form(self) -> tuple[str, dict[str, str]]:
        """The page's form: its action and its hidden fields (what a browser would post)."""
        action = re.search(r'<form method="post" action="([^"]*)"', self.text)
        assert action is not None, self.text
        fields = re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', self.text)
        return html.unescape(action.group(1)), {
            html.unescape(k): html.unescape(v) for k, v in fields
        }

    def close(self) -> None:
        self.session.close()


@pytest.fixture
def msal_apps(authority: DevAuthority) -> Iterator[Msal]:
    factory = Msal(authority)
    try:
        yield factory
    finally:
        factory.close()


def scope(authority: DevAuthority, api: str, name: str | None = None) -> str:
    """`api://<client id>/<scope>`; the default scope is the one the demo world consents."""
    defaults = {"original": "access_as_user", "downstream": "Data.Read", "pricing": "Prices.Read"}
    return f"{authority.world.app(api).app_id_uri}/{name or defaults[api]}"


def assert_entra_error(
    response: requests.Response,
    *,
    status: int,
    error: str,
    code: int,
    suberror: str | None = None,
) -> dict[str, Any]:
    """The response is an Entra-shaped JSON error with exactly this status, error and code."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert body["error_codes"] == [code], body
    assert body["error_description"].startswith(f"AADSTS{code}: "), body
    for key in ("timestamp", "trace_id", "correlation_id"):
        assert isinstance(body[key], str) and body[key], key
    assert "Traceback" not in response.text
    if suberror is not None:
        assert body["suberror"] == suberror, body
    return body


def ropc_form(authority: DevAuthority, user: str = "alice", **extra: str) -> dict[str, str]:
    """A raw password-grant form from the public client for a user of the demo world."""
    found = authority.world.user(user)
    return {
        "grant_type": "password",
        "client_id": authority.world.app("client").client_id,
        "username": found.username,
        "password": found.password,
        "scope": f"{scope(authority, 'original')} openid profile offline_access",
        **extra,
    }


def obo_form(
    authority: DevAuthority, assertion: str, client: str = "original", **extra: str
) -> dict[str, str]:
    """A raw On-Behalf-Of form: `client` (by its first secret) exchanges `assertion`."""
    app = authority.world.app(client)
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "requested_token_use": "on_behalf_of",
        "client_id": app.client_id,
        "assertion": assertion,
        "scope": scope(authority, "downstream"),
    }
    if app.secrets:
        form["client_secret"] = app.secrets[0]
    form.update(extra)
    return form
