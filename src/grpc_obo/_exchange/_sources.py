"""`CredentialChain`: which credential source to use, decided again for every token request.

    CredentialChain.resolve()           (in an MSAL worker thread, before each token request)
      └── the first source that works, in the order given:
            federated token file   looked at near its `exp` and every minute, re-read when it
                                   changed; never used past its `exp`
            managed identity       MSAL's ManagedIdentityClient (its cache), token for
                                   api://AzureADTokenExchange
            certificate (file)     re-read when the file changes (a rotated PEM or PFX)
            secret, callback
          └── Resolved(version, credential): MSAL's `client_credential`; a new `version` (another
              source, a rotated certificate) makes the runner build a new MSAL app

Assertion sources hand MSAL a callable that returns the assertion `resolve()` just made sure of;
assertions are cached until shortly before their `exp` (as Microsoft.Identity.Web does for
signed assertions; the managed identity's by MSAL's own cache). A source that stops working
falls back to the next with one WARNING; a source that works again is taken back with one INFO.
A source the authority refuses (invalid_client) is asked first whether it has something newer
(a token file that changed: the request is asked again with it); else it is skipped for
`REFUSED_FOR` seconds when a later one works, and the refused request is asked again with the
next (`refused()`), as Microsoft.Identity.Web does; when no later one works, the refused one is
tried again. A token file is looked at when its assertion nears its exp and at most every
minute otherwise (`FederatedTokenFile`). Nothing here logs or raises with a secret, key or
assertion in it: reasons are fixed sentences naming files and source kinds.

The sources themselves, one class per kind, are in `_source_kinds.py`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence

from grpc_obo._errors import ConfigurationError, TokenExchangeError
from grpc_obo._exchange._source_kinds import Fixed, Resolved, Source, SourceUnavailable

__all__ = ["REFUSED_FOR", "CredentialChain", "Resolved", "SourceUnavailable"]

_log = logging.getLogger("grpc_obo.exchange")

REFUSED_FOR = 300.0
"""Seconds a source the authority refused (invalid_client) is skipped when a later one exists."""


class CredentialChain:
    """The sources in order; `resolve()` answers with the first that works."""

    def __init__(
        self, sources: Sequence[Source], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not sources:
            raise ConfigurationError("at least one credential source is needed")
        self.sources = tuple(sources)
        self._clock = clock
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
        skipped: list[int] = []
        now = self._clock()
        for index, source in enumerate(self.sources):
            refused = self._refused.get(index)
            if refused is not None and refused[0] > now:
                reasons.append(refused[1])
                skipped.append(index)
                continue
            try:
                resolved = source.resolve()
            except SourceUnavailable as exc:
                reasons.append(str(exc))
                continue
            return self._chosen(index, resolved, reasons)
        # Skipping a refused source helps only while a later one works: with none working, ask
        # the authority again with the refused one rather than fail without asking.
        for index in skipped:
            try:
                resolved = self.sources[index].resolve()
            except SourceUnavailable as exc:
                reasons.append(str(exc))
                continue
            return self._chosen(index, resolved, reasons, last_resort=True)
        raise TokenExchangeError(
            "no client credential source is available: " + "; ".join(reasons),
            error="credential_unavailable",
        )

    def _chosen(
        self, index: int, resolved: Resolved, reasons: list[str], *, last_resort: bool = False
    ) -> Resolved:
        with self._lock:
            self._index_of[resolved.version] = index
        self._note(index, reasons, last_resort=last_resort)
        return resolved

    def index_of(self, version: Hashable) -> int:
        """Which source (its position in the list) resolved the credential of `version`."""
        with self._lock:
            return self._index_of.get(version, 0)

    def refused(self, version: Hashable, error_codes: Sequence[int]) -> bool:
        """The authority refused the credential of `version` as the client's (invalid_client:
        a secret or certificate it does not know, an assertion no federated credential
        matches). True means: ask again. The source itself first (a token file that changed
        since is read at once); else, when a later source exists, this one is skipped for
        `REFUSED_FOR` seconds and the next `resolve()` falls back (one WARNING), as
        Microsoft.Identity.Web moves on to its next credential. A source refused again while
        skipped was the last resort: the error stands."""
        codes = ",".join(f"AADSTS{code}" for code in error_codes) or "invalid_client"
        with self._lock:
            index = self._index_of.get(version)
        if index is None:
            return False
        if self.sources[index].refused(version):
            return True
        with self._lock:
            now = self._clock()
            skipped = self._refused.get(index)
            if index + 1 >= len(self.sources) or (skipped is not None and skipped[0] > now):
                return False
            why = f"{self.sources[index].label} was refused by the authority ({codes})"
            self._refused[index] = (now + REFUSED_FOR, why)
            self.static = None  # a refused value: every request decides again
            if self._active == index:
                self._active = None  # the fallback that follows is logged
        return True

    def _note(self, index: int, reasons: list[str], *, last_resort: bool = False) -> None:
        with self._lock:
            before, self._active = self._active, index
        if before == index:
            return
        chosen = self.sources[index].label
        if last_resort:
            _log.warning(
                "client credential: %s; no other source works, trying %s again",
                "; ".join(reasons),
                chosen,
            )
        elif index > 0:
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
