"""Where the middle tier's client credential comes from, decided again for every token request.

    CredentialChain.resolve()           (in an MSAL worker thread, before each token request)
      └── the first source that works, in the order given:
            federated token file   re-read when the file changes; never used past its `exp`
            managed identity       MSAL's ManagedIdentityClient, token for api://AzureADTokenExchange
            certificate (file)     re-read when the file changes (a rotated PEM or PFX)
            secret, callback
          └── Resolved(version, credential): MSAL's `client_credential`; a new `version` (another
              source, a rotated certificate) makes the runner build a new MSAL app

Assertion sources hand MSAL a callable that returns the assertion `resolve()` just made sure of;
assertions are cached until shortly before their `exp` (as Microsoft.Identity.Web does for
signed assertions). A source that stops working falls back to the next with one WARNING; a
source that works again is taken back with one INFO. A source the authority refuses
(invalid_client) is skipped for `REFUSED_FOR` seconds when a later one exists, and the refused
request is asked again with the next (`refused()`), as Microsoft.Identity.Web does. Nothing
here logs or raises with a secret, key or assertion in it: reasons are fixed sentences naming
files and source kinds.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msal

from grpc_obo._errors import ConfigurationError, TokenExchangeError
from grpc_obo._exchange._http import AuthorityHttpClient, NoHttpCache

__all__ = ["CredentialChain", "Resolved", "SourceUnavailable"]

_log = logging.getLogger("grpc_obo.exchange")

TOKEN_EXCHANGE_RESOURCE = "api://AzureADTokenExchange"
"""The audience of assertions for a federated identity credential (Entra's default)."""
REFRESH_MARGIN = 300.0
"""An assertion is replaced this many seconds before its `exp` (MSAL's own margin for tokens)."""
_SKEW = 30.0  # an assertion closer than this to its exp is not sent at all
REFUSED_FOR = 300.0
"""Seconds a source the authority refused (invalid_client) is skipped when a later one exists."""
_MAX_ASSERTION = 64 * 1024


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

    def _fresh(self) -> bool:
        if self._assertion is None:
            return False
        return self._expires is None or self._clock() < self._expires - REFRESH_MARGIN

    def _keep(self, assertion: str, expires: float | None) -> None:
        if expires is not None and expires - _SKEW <= self._clock():
            raise SourceUnavailable(f"{self.label}: the assertion has expired")
        self._assertion, self._expires = assertion, expires

    def current(self) -> str:
        """MSAL's `client_assertion` callable: the assertion `resolve()` made sure of."""
        with self._lock:
            if self._assertion is None:
                raise SourceUnavailable(f"{self.label}: no assertion yet")
            return self._assertion

    def _resolved(self) -> Resolved:
        return Resolved(("assertion", id(self)), {"client_assertion": self.current})


class FederatedTokenFile(_AssertionSource):
    """AZURE_FEDERATED_TOKEN_FILE: a projected service-account token the kubelet rotates."""

    def __init__(self, path: str, clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self.path = path
        self.label = f"federated token file {path!r}"
        self._stamp: tuple[int, int, int] | None = None

    def resolve(self) -> Resolved:
        with self._lock:
            try:
                info = os.stat(self.path)
            except OSError:
                raise SourceUnavailable(f"{self.label} cannot be read") from None
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
            if stamp != self._stamp or not self._fresh():
                try:
                    text = Path(self.path).read_text(encoding="utf-8").strip()
                except (OSError, UnicodeDecodeError):
                    raise SourceUnavailable(f"{self.label} cannot be read") from None
                expires = _expiry(text)
                if expires is None:
                    raise SourceUnavailable(f"{self.label} does not hold a JWT with an exp")
                self._keep(text, expires)
                self._stamp = stamp
        return self._resolved()


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
        with self._lock:
            if not self._fresh():
                try:
                    result = self._client.acquire_token_for_client(resource=TOKEN_EXCHANGE_RESOURCE)
                except Exception as exc:  # MSAL raises transport errors as they come
                    raise SourceUnavailable(
                        f"{self.label}: the endpoint did not answer ({type(exc).__name__})"
                    ) from None
                token = result.get("access_token") if isinstance(result, dict) else None
                if not isinstance(token, str):
                    error = result.get("error") if isinstance(result, dict) else None
                    raise SourceUnavailable(f"{self.label}: refused ({error or 'no token'})")
                expires_in = result.get("expires_in")
                expires = (
                    self._clock() + float(expires_in)
                    if isinstance(expires_in, (int, float))
                    else _expiry(token)
                )
                self._keep(token, expires)
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


class CredentialChain:
    """The sources in order; `resolve()` answers with the first that works."""

    def __init__(self, sources: Sequence[Source]) -> None:
        if not sources:
            raise ConfigurationError("at least one credential source is needed")
        self.sources = tuple(sources)
        self._lock = threading.Lock()
        self._active: int | None = None
        self._index_of: dict[Hashable, int] = {}
        self._refused: dict[int, tuple[float, str]] = {}
        """Source index -> (skipped until, monotonic; why)."""
        first = self.sources[0]
        self.static: Resolved | None = first.resolve() if isinstance(first, Fixed) else None
        if self.static is not None:
            self._index_of[self.static.version] = 0
        """The credential when it can never change (a secret or certificate value first: it
        never fails, so nothing after it is ever tried): no per-request work."""

    def resolve(self) -> Resolved:
        reasons: list[str] = []
        now = time.monotonic()
        for index, source in enumerate(self.sources):
            refused = self._refused.get(index)
            if refused is not None and refused[0] > now:
                reasons.append(refused[1])
                continue
            try:
                resolved = source.resolve()
            except SourceUnavailable as exc:
                reasons.append(str(exc))
                continue
            with self._lock:
                self._index_of[resolved.version] = index
            self._note(index, reasons)
            return resolved
        raise TokenExchangeError(
            "no client credential source is available: " + "; ".join(reasons),
            error="credential_unavailable",
        )

    def index_of(self, version: Hashable) -> int:
        """Which source (its position in the list) resolved the credential of `version`."""
        with self._lock:
            return self._index_of.get(version, 0)

    def refused(self, version: Hashable, error_codes: Sequence[int]) -> bool:
        """The authority refused the credential of `version` as the client's (invalid_client:
        a secret or certificate it does not know, an assertion no federated credential
        matches). When a later source exists, skip this one for `REFUSED_FOR` seconds and say
        True: the caller asks again, and the next `resolve()` falls back (one WARNING), as
        Microsoft.Identity.Web moves on to its next credential."""
        codes = ",".join(f"AADSTS{code}" for code in error_codes) or "invalid_client"
        with self._lock:
            index = self._index_of.get(version)
            if index is None or index + 1 >= len(self.sources):
                return False
            why = f"{self.sources[index].label} was refused by the authority ({codes})"
            self._refused[index] = (time.monotonic() + REFUSED_FOR, why)
            self.static = None  # a refused value: every request decides again
            if self._active == index:
                self._active = None  # the fallback that follows is logged
        return True

    def _note(self, index: int, reasons: list[str]) -> None:
        with self._lock:
            before, self._active = self._active, index
        if before == index:
            return
        chosen = self.sources[index].label
        if index > 0:
            _log.warning("client credential: %s; falling back to %s", "; ".join(reasons), chosen)
        elif before is not None:
            _log.info("client credential: %s works again", chosen)

    @property
    def active(self) -> str | None:
        """The label of the source used last (for logs and tests)."""
        return None if self._active is None else self.sources[self._active].label

    def close(self) -> None:
        for source in self.sources:
            close = getattr(source, "close", None)
            if close is not None:
                close()
