"""The authorization code flow with PKCE: what the authorization endpoint remembers and checks.

`Authorizations` holds the pending sign-ins (one per visit of the authorization endpoint, until
the person finishes the page) and the issued codes, and owns the checks that belong to the flow:
registered redirect URIs, PKCE (S256 only; `plain` is refused like Entra), and codes that are
single-use, short-lived and bound to their client, redirect URI and code verifier. The token
decisions (client, tenancy, scopes, consent, MFA) stay with `Grants`, which calls in here.

Only digests of codes are held; a code, verifier or ticket never reaches a log or an error text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from grpc_obo.devauthority._oauth import OAuthError

AUTHORIZATION_CODE_LIFETIME = 600
"""Seconds an authorization code can be redeemed (Entra: about 10 minutes)."""
SIGN_IN_LIFETIME = 900
"""Seconds the sign-in page of one authorization request stays usable."""
MAX_PENDING = 1000
"""Pending sign-ins and unredeemed codes held at most (the oldest go first)."""
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of a SHA-256 digest, unpadded
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 §4.1
PROMPTS = frozenset({"login", "select_account", "consent", "none"})


@dataclass(frozen=True)
class PendingSignIn:
    """One authorization request waiting for its person on the page."""

    id: str
    tenant: str | None
    tenant_segment: str
    client_id: str
    redirect_uri: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str
    claims: str | None
    login_hint: str | None
    form_post: bool
    expires_at: float


@dataclass(frozen=True)
class IssuedCode:
    """What an authorization code stands for."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    user_oid: str
    tenant: str | None
    scope: str
    claims: str | None
    nonce: str | None
    amr: tuple[str, ...]
    expires_at: float


@dataclass(frozen=True)
class Delivery:
    """What goes back to the app at its redirect URI: in the query (a 302), or, with
    `response_mode=form_post`, as a form the browser posts there."""

    redirect_uri: str
    params: Mapping[str, str | None]
    form_post: bool

    @property
    def location(self) -> str:
        return with_query(self.redirect_uri, self.params)


class RedirectError(Exception):
    """An error answered to the app at its (validated) redirect URI, as OAuth says."""

    def __init__(
        self,
        redirect_uri: str,
        error: str,
        code: int,
        description: str,
        state: str | None,
        *,
        form_post: bool = False,
    ) -> None:
        super().__init__(f"AADSTS{code}: {description}")
        self.delivery = Delivery(
            redirect_uri,
            {"error": error, "error_description": f"AADSTS{code}: {description}", "state": state},
            form_post,
        )
        self.error = error
        self.code = code


def with_query(uri: str, params: Mapping[str, str | None]) -> str:
    """`uri` with `params` (those not None) added to its query."""
    parts = urllib.parse.urlsplit(uri)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params.items() if v is not None]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def redirect_uri_registered(uri: str, registered: tuple[str, ...]) -> bool:
    """Exact match, except that the port of a loopback `http` redirect URI is ignored (Entra
    does this for native apps, which listen on any free port)."""
    if uri in registered:
        return True
    try:
        asked = urllib.parse.urlsplit(uri)
        asked.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        return False
    if (
        asked.scheme != "http"
        or asked.hostname not in ("localhost", "127.0.0.1")
        or asked.username is not None
        or asked.fragment
    ):
        return False
    for candidate in registered:
        known = urllib.parse.urlsplit(candidate)
        if (
            known.scheme == "http"
            and known.hostname == asked.hostname
            and (known.path or "/") == (asked.path or "/")
            and known.query == asked.query
        ):
            return True
    return False


def check_pkce(
    method: str | None, challenge: str | None, redirect: Callable[[str, int, str], RedirectError]
) -> str:
    """The S256 code challenge of an authorization request, or the error for the app."""
    if not challenge:
        raise redirect(
            "invalid_request",
            9002325,
            "Proof Key for Code Exchange is required: send code_challenge and "
            "code_challenge_method=S256.",
        )
    if method != "S256":
        raise redirect(
            "invalid_request",
            50148,
            f"The code_challenge_method '{str(method)[:16]}' is not supported: only S256 is.",
        )
    if not _CHALLENGE.match(challenge):
        raise redirect(
            "invalid_request", 50148, "The code_challenge is not a valid S256 challenge."
        )
    return challenge


class Authorizations:
    """Pending sign-ins and issued codes of one authority (thread-safe)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, PendingSignIn] = {}
        self._codes: dict[str, IssuedCode] = {}
        self._spent: dict[str, float] = {}

    def remember(self, **fields: object) -> PendingSignIn:
        now = self._clock()
        pending = PendingSignIn(
            id=secrets.token_urlsafe(24),
            expires_at=now + SIGN_IN_LIFETIME,
            **fields,  # type: ignore[arg-type]
        )
        with self._lock:
            self._prune(now)
            self._pending[pending.id] = pending
        return pending

    def pending(self, request_id: str) -> PendingSignIn:
        with self._lock:
            found = self._pending.get(request_id)
        if found is None or found.expires_at <= self._clock():
            raise OAuthError(
                "invalid_request",
                50089,
                "This sign-in page expired or was already used. Go back to the application and "
                "sign in again.",
            )
        return found

    def issue(self, pending: PendingSignIn, user_oid: str, amr: tuple[str, ...]) -> str:
        """A new code for the finished sign-in (which is then gone)."""
        code = "0.dev.ac." + secrets.token_urlsafe(48)
        now = self._clock()
        with self._lock:
            if self._pending.pop(pending.id, None) is None:
                raise self._used_page()
            self._prune(now)
            self._codes[_digest(code)] = IssuedCode(
                client_id=pending.client_id,
                redirect_uri=pending.redirect_uri,
                code_challenge=pending.code_challenge,
                user_oid=user_oid,
                tenant=pending.tenant,
                scope=pending.scope,
                claims=pending.claims,
                nonce=pending.nonce,
                amr=amr,
                expires_at=now + AUTHORIZATION_CODE_LIFETIME,
            )
        return code

    def owner(self, code: str) -> str | None:
        """The user oid a code was issued for (for the request log), without redeeming it."""
        with self._lock:
            issued = self._codes.get(_digest(code))
        return issued.user_oid if issued else None

    def redeem(
        self, code: str, client_id: str, redirect_uri: str | None, verifier: str | None
    ) -> IssuedCode:
        """Consume `code` for `client_id` and check it is theirs, for this redirect URI and
        verifier; another client presenting it does not burn it."""
        key = _digest(code)
        now = self._clock()
        with self._lock:
            issued = self._codes.get(key)
            if issued is not None and issued.client_id == client_id:
                del self._codes[key]
                self._spent[key] = issued.expires_at
            spent = issued is None and key in self._spent
        if spent:
            raise OAuthError(
                "invalid_grant",
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid "
                "code or use an existing refresh token.",
            )
        if issued is None or issued.client_id != client_id:
            raise OAuthError(
                "invalid_grant",
                70000,
                "The provided authorization code is invalid or was not issued to this client.",
            )
        if issued.expires_at <= now:
            raise OAuthError(
                "invalid_grant",
                70008,
                "The provided authorization code or refresh token has expired due to "
                "inactivity. Send a new interactive authorization request for this user and "
                "resource.",
            )
        if redirect_uri != issued.redirect_uri:
            raise OAuthError(
                "invalid_grant",
                50011,
                "The redirect URI in the token request does not match the one the "
                "authorization code was issued for.",
            )
        if verifier is None:
            raise OAuthError(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'code_verifier'.",
            )
        expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        if not _VERIFIER.match(verifier) or not hmac.compare_digest(
            expected.rstrip(b"=").decode(), issued.code_challenge
        ):
            raise OAuthError(
                "invalid_grant",
                50148,
                "The code_verifier does not match the code_challenge supplied in the "
                "authorization request for PKCE.",
            )
        return issued

    def _prune(self, now: float) -> None:
        """Forget what expired, and the oldest beyond the caps (the caller holds the lock)."""
        for table in (self._pending, self._codes):
            for key in [k for k, v in table.items() if v.expires_at <= now]:
                del table[key]
            while len(table) >= MAX_PENDING:
                del table[next(iter(table))]
        for key in [k for k, until in self._spent.items() if until <= now]:
            del self._spent[key]
        while len(self._spent) >= MAX_PENDING:
            del self._spent[next(iter(self._spent))]

    @staticmethod
    def _used_page() -> OAuthError:
        return OAuthError(
            "invalid_request", 50089, "This sign-in page was already used. Sign in again."
        )


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
