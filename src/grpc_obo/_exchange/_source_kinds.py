"""The credential sources, one class per kind, each deciding when to look again:

    FederatedTokenFile        AZURE_FEDERATED_TOKEN_FILE: looked at near its assertion's exp and
                              every minute otherwise, re-read when it changed; never sent past
                              its `exp`
    ManagedIdentityAssertion  MSAL's ManagedIdentityClient (its cache), a token for
                              api://AzureADTokenExchange as the assertion
    AssertionCallback         the application's callable (a JWT is kept until near its exp)
    CertificateFile           re-read when the file changes (a rotated PEM or PFX)
    Fixed                     a secret or certificate given as a value

Each `resolve()` answers `Resolved(version, credential)` (MSAL's `client_credential`) or raises
`SourceUnavailable` with a fixed sentence naming files and kinds, never a value; `refused()`
says whether a refused credential has a newer one to replace it at once. `CredentialChain`
(`_sources.py`) puts them in order.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msal

from grpc_obo._errors import ConfigurationError
from grpc_obo._exchange._http import AuthorityHttpClient, NoHttpCache

__all__ = [
    "AssertionCallback",
    "AssertionVersion",
    "CertificateFile",
    "FederatedTokenFile",
    "Fixed",
    "ManagedIdentityAssertion",
    "Resolved",
    "Source",
    "SourceUnavailable",
]

_log = logging.getLogger("grpc_obo.exchange")

TOKEN_EXCHANGE_RESOURCE = "api://AzureADTokenExchange"
"""The audience of assertions for a federated identity credential (Entra's default)."""
REFRESH_MARGIN = 300.0
"""An assertion is replaced this many seconds before its `exp` (MSAL's own margin for tokens)."""
_SKEW = 30.0  # an assertion closer than this to its exp is not sent at all
RECHECK_EVERY = 60.0
"""While its assertion is fresh, a token file is looked at (one stat) at most this often."""
_MAX_ASSERTION = 64 * 1024
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # an OAuth error code, as Entra sends it


class SourceUnavailable(Exception):
    """A credential source cannot give a credential now. `str()` is safe to log."""


@dataclass(frozen=True)
class Resolved:
    version: Hashable
    """Equal versions mean the same MSAL app can be kept."""
    credential: Any = field(default=None, repr=False)
    """MSAL's `client_credential`: a secret or a private key, never in a repr."""


class Source(Protocol):
    label: str
    """What the source is, for logs: a kind and a file name, never a value."""

    def resolve(self) -> Resolved: ...

    def refused(self, version: Hashable) -> bool:
        """The authority refused the credential of `version` (what `resolve()` gave that
        request): True when the source has another one to offer at once (a token file that
        changed since), so the request is asked again with it."""
        ...


@dataclass(frozen=True)
class AssertionVersion:
    """An assertion source's version: equal for every assertion of the source (so the MSAL
    app built for it is kept), while `generation` says which assertion a request was made
    with (so a refusal of an assertion already replaced is asked again, never twice)."""

    source: int
    generation: int = field(compare=False)


def _expiry(assertion: str) -> float | None:
    """The `exp` of a JWT assertion, unverified: it is ours to send, not to trust, so its
    payload is read as JSON (the exchange room does not take PyJWT for that)."""
    parts = assertion.split(".")
    if len(parts) != 3 or len(assertion) > _MAX_ASSERTION:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


class _AssertionSource:
    """Shared part of the assertion sources: the cached assertion and MSAL's callable for it."""

    label = "assertion"

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._assertion: str | None = None
        self._expires: float | None = None
        self._generation = 0

    def _fresh(self) -> bool:
        if self._assertion is None:
            return False
        return self._expires is None or self._clock() < self._expires - REFRESH_MARGIN

    def _keep(self, assertion: str, expires: float | None) -> None:
        if expires is not None and expires - _SKEW <= self._clock():
            raise SourceUnavailable(f"{self.label}: the assertion has expired")
        if assertion != self._assertion:
            self._generation += 1
        self._assertion, self._expires = assertion, expires

    def current(self) -> str:
        """MSAL's `client_assertion` callable: the assertion `resolve()` made sure of."""
        with self._lock:
            if self._assertion is None:
                raise SourceUnavailable(f"{self.label}: no assertion yet")
            return self._assertion

    def _resolved(self) -> Resolved:
        version = AssertionVersion(id(self), self._generation)
        return Resolved(version, {"client_assertion": self.current})

    def refused(self, version: Hashable) -> bool:
        return False


class FederatedTokenFile(_AssertionSource):
    """AZURE_FEDERATED_TOKEN_FILE: a projected service-account token the kubelet rotates.

    Looked at (one stat; read only when it changed) when its assertion is within
    REFRESH_MARGIN of its exp, which is when the kubelet's rotation (at 80% of the token's
    life) is due, and otherwise at most every RECHECK_EVERY seconds, so that a file replaced
    early (another identity, a revoked token) is taken within a minute, as azure-identity's
    WorkloadIdentityCredential re-reads its file at most every 10 minutes. A refused
    assertion makes the file be looked at again at once (`refused`).
    """

    def __init__(self, path: str, clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self.path = path
        self.label = f"federated token file {path!r}"
        self._stamp: tuple[int, int, int] | None = None
        self._look_at = 0.0
        """When (on `clock`) a fresh assertion's file is looked at again."""

    def resolve(self) -> Resolved:
        with self._lock:
            now = self._clock()
            if not (self._fresh() and now < self._look_at):
                self._look(now)
        return self._resolved()

    def refused(self, version: Hashable) -> bool:
        # NOTE: called on the event loop (by the exchanger, after an invalid_client): one stat,
        # and a read of a token of a few KB if it changed, on a local (projected) volume; only
        # after a refusal, never on the way of a request that succeeds.
        used = version.generation if isinstance(version, AssertionVersion) else None
        with self._lock:
            if used != self._generation:
                return True  # already replaced (a refusal racing this one read the file)
            try:
                self._look(self._clock())
            except SourceUnavailable:
                return False
            finally:
                self._look_at = 0.0  # unchanged or not, the next request looks again
            return self._generation != used

    def _look(self, now: float) -> None:
        try:
            info = os.stat(self.path)
        except OSError:
            raise SourceUnavailable(f"{self.label} cannot be read") from None
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if stamp != self._stamp:
            try:
                text = Path(self.path).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                raise SourceUnavailable(f"{self.label} cannot be read") from None
            expires = _expiry(text)
            if expires is None:
                raise SourceUnavailable(f"{self.label} does not hold a JWT with an exp")
            self._keep(text, expires)
            self._stamp = stamp
        elif self._expires is not None and self._expires - _SKEW <= now:
            raise SourceUnavailable(f"{self.label}: the assertion has expired")
        self._look_at = now + RECHECK_EVERY


class ManagedIdentityAssertion(_AssertionSource):
    """A managed identity's token for api://AzureADTokenExchange, from MSAL's
    `ManagedIdentityClient` (as Microsoft.Identity.Web's SignedAssertionFromManagedIdentity)."""

    def __init__(
        self,
        client_id: str | None,
        *,
        ca_file: str | None,
        timeout: float,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(clock)
        self.label = (
            f"managed identity {client_id!r}" if client_id else "system-assigned managed identity"
        )
        identity: Any = (
            msal.UserAssignedManagedIdentity(client_id=client_id)
            if client_id
            else msal.SystemAssignedManagedIdentity()
        )
        # NOTE: our HTTP client, not a bare requests.Session: with trust_env on, REQUESTS_CA_BUNDLE
        # would override the CA we were given (the endpoint is http on App Service, https here).
        self._http = AuthorityHttpClient(ca_file=ca_file, timeout=timeout)
        self._client = msal.ManagedIdentityClient(
            identity, http_client=self._http, http_cache=NoHttpCache()
        )

    def resolve(self) -> Resolved:
        # NOTE: asked on every request: MSAL's ManagedIdentityClient keeps the token in its own
        # cache and answers from it until 5 minutes before its expiry (msal 1.39,
        # managed_identity.py), so no expiry tracking of ours repeats it.
        with self._lock:
            try:
                result = self._client.acquire_token_for_client(resource=TOKEN_EXCHANGE_RESOURCE)
            except Exception as exc:  # MSAL raises transport errors as they come
                raise SourceUnavailable(
                    f"{self.label}: the endpoint did not answer ({type(exc).__name__})"
                ) from None
            token = result.get("access_token") if isinstance(result, dict) else None
            if not isinstance(token, str):
                error = result.get("error") if isinstance(result, dict) else None
                # Only an OAuth error code is quoted: the endpoint's answer reaches a log line.
                if not (isinstance(error, str) and _ERROR_CODE.fullmatch(error)):
                    error = "no token"
                raise SourceUnavailable(f"{self.label}: refused ({error})")
            expires_in = result.get("expires_in")
            expires = (
                self._clock() + float(expires_in)
                if isinstance(expires_in, (int, float))
                else _expiry(token)
            )
            self._keep(token, expires)  # never sent within seconds of its expiry
        return self._resolved()

    def close(self) -> None:
        self._http.close()


class AssertionCallback(_AssertionSource):
    """The application's own callable returning a signed assertion (cached until its exp
    when it is a JWT; called again for every request when it is not)."""

    def __init__(self, callback: Callable[[], str], clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self.label = "assertion callback"
        self._callback = callback

    def resolve(self) -> Resolved:
        with self._lock:
            if not self._fresh() or self._expires is None:
                try:
                    value = self._callback()
                except Exception as exc:  # the application's code: any failure is "unavailable"
                    raise SourceUnavailable(f"{self.label} failed ({type(exc).__name__})") from None
                if not isinstance(value, str) or not value:
                    raise SourceUnavailable(f"{self.label} returned no assertion")
                self._keep(value, _expiry(value))
        return self._resolved()


class Fixed:
    """A secret or certificate given as a value: always the same MSAL credential."""

    def __init__(self, label: str, credential: Any, version: Hashable) -> None:
        self.label = label
        # Two secrets in one list are two sources: the version tells them apart.
        self._resolved = Resolved((version, id(self)), credential)

    def resolve(self) -> Resolved:
        return self._resolved

    def refused(self, version: Hashable) -> bool:
        return False


class CertificateFile:
    """AZURE_CLIENT_CERTIFICATE_PATH, re-read when the file changes (Key Vault sync,
    cert-manager): the next token request signs with the new certificate. A file caught
    half-written (or otherwise unreadable) keeps the last certificate that loaded."""

    def __init__(self, path: str, load: Callable[[], tuple[Any, str]]) -> None:
        self.path = path
        self.label = f"certificate file {path!r}"
        self._load = load
        """Returns MSAL's credential and the certificate's thumbprint; raises ConfigurationError."""
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._current: Resolved | None = None
        self._warned: tuple[int, int, int] | None = None

    def resolve(self) -> Resolved:
        with self._lock:
            try:
                info = os.stat(self.path)
            except OSError:
                if self._current is not None:
                    return self._current
                raise SourceUnavailable(f"{self.label} cannot be read") from None
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
            if stamp != self._stamp:
                try:
                    credential, thumbprint = self._load()
                except ConfigurationError:
                    if self._current is None:
                        raise SourceUnavailable(f"{self.label} does not load") from None
                    if self._warned != stamp:
                        self._warned = stamp
                        _log.warning(
                            "%s changed but does not load; still using the previous certificate",
                            self.label,
                        )
                    return self._current
                if self._current is not None:
                    _log.info("%s changed: using the certificate %s", self.label, thumbprint)
                self._current = Resolved(("certificate", thumbprint), credential)
                self._stamp = stamp
                return self._current
            if self._current is None:  # the file is as it was when it last failed to load
                raise SourceUnavailable(f"{self.label} does not load")
            return self._current

    def refused(self, version: Hashable) -> bool:
        return False  # every request looks at the file already
