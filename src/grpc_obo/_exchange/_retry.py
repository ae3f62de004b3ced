"""Pure decisions about one token request's outcome: success, retry (and when), or which error.

No I/O: the exchanger feeds in MSAL's result (or the exception it raised), the HTTP status and
`Retry-After` the HTTP client saw, and acts on the answer.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from grpc_obo._errors import (
    AuthorityUnavailableError,
    ClaimsChallengeError,
    ConfigurationError,
    ConsentRequiredError,
    InvalidGrantError,
    TokenExchangeError,
)
from grpc_obo._errors._checks import a_number, a_whole_number

__all__ = ["Outcome", "RetryPolicy", "classify"]

_TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Backoff with full jitter, bounded by attempts and by total time."""

    max_attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 5.0
    budget: float = 15.0
    """Seconds from the first attempt after which no retry starts (callers' deadlines cut in
    earlier: they stop waiting while the shared exchange may go on to fill the cache)."""

    def __post_init__(self) -> None:
        a_whole_number("max_attempts", self.max_attempts)
        base_delay = a_number("base_delay", self.base_delay)
        if a_number("max_delay", self.max_delay) < base_delay:
            raise ConfigurationError(
                "max_delay must be at least base_delay (0 <= base_delay <= max_delay)",
                setting="max_delay",
            )
        a_number("budget", self.budget, above=True)

    def delay(
        self,
        attempt: int,
        retry_after: float | None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 0)."""
        backoff = min(self.max_delay, self.base_delay * (2.0**attempt)) * rand()
        if retry_after is None:
            return backoff
        # Retry-After is the authority's floor; jitter on top (up to base_delay) keeps the
        # replicas and users throttled together from all coming back at the same instant.
        return retry_after + min(backoff, self.base_delay)


@dataclass(frozen=True)
class Outcome:
    """Success (`result`, no `retry`), a retry (`result` is the error body, if any), or `error`."""

    result: Mapping[str, Any] | None = None
    retry: bool = False
    retry_after: float | None = None
    error: TokenExchangeError | None = None


def _fields(result: Mapping[str, Any]) -> dict[str, Any]:
    codes = result.get("error_codes")
    claims = result.get("claims")
    return {
        "error": str(result.get("error") or "") or None,
        "suberror": str(result.get("suberror") or "") or None,
        "error_codes": [c for c in codes if isinstance(c, int)] if isinstance(codes, list) else [],
        "correlation_id": str(result.get("correlation_id") or "") or None,
        "claims": claims if isinstance(claims, str) and claims else None,
    }


def _chain(raised: BaseException) -> list[BaseException]:
    """`raised` and every exception it wraps (requests nests the ssl error three deep:
    SSLError(MaxRetryError(urllib3 SSLError(ssl.SSLCertVerificationError))))."""
    found: list[BaseException] = []
    stack: list[object] = [raised]
    while stack:
        error = stack.pop()
        if isinstance(error, BaseException) and all(error is not f for f in found):
            found.append(error)
            stack += [error.__cause__, error.__context__, getattr(error, "reason", None)]
            stack += list(error.args)
    return found


# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH_CODES = frozenset({62, 64})


def _certificate_hint(failure: ssl.SSLCertVerificationError, ca_file: str | None) -> str:
    # NOTE: set by the ssl module's C code only; absent on an instance built elsewhere.
    problem = str(getattr(failure, "verify_message", None) or "certificate verify failed")
    if getattr(failure, "verify_code", None) in _NAME_MISMATCH_CODES:
        return (
            f"{problem}: the certificate does not name the host in authority_host "
            "(AZURE_AUTHORITY_HOST); use a name the certificate holds"
        )
    trusted = (
        f"exactly ca_file {ca_file!r} (GRPC_OBO_CA_FILE)"
        if ca_file is not None
        else "requests' default CAs (certifi, or REQUESTS_CA_BUNDLE), no ca_file being set"
    )
    return (
        f"{problem}: this client trusts {trusted}; set ca_file / GRPC_OBO_CA_FILE to the CA "
        "that signed the authority's certificate"
    )


def classify(
    result: Mapping[str, Any] | None,
    *,
    raised: BaseException | None = None,
    status: int | None = None,
    retry_after: float | None = None,
    error_body: Mapping[str, Any] | None = None,
    ca_file: str | None = None,
) -> Outcome:
    """What to do with one attempt's outcome.

    `error_body`: the `error`/`error_codes` of the refused response, when MSAL raised instead
    of returning them; `ca_file`: the CA the client trusts, named when a certificate fails.
    """
    transient_status = status is not None and (status == 429 or status >= 500)
    if raised is not None:
        # A certificate or host name that does not verify is configuration, not an outage:
        # retrying cannot fix it, and the message must say which setting to look at.
        failure = next(
            (e for e in _chain(raised) if isinstance(e, ssl.SSLCertVerificationError)), None
        )
        if failure is not None:
            return Outcome(
                error=TokenExchangeError(
                    "the authority's TLS certificate was not accepted",
                    hint=_certificate_hint(failure, ca_file),
                )
            )
        # A 5xx with a body MSAL cannot parse surfaces as an exception: the status decides.
        if transient_status or isinstance(
            raised, (requests.ConnectionError, requests.Timeout, OSError)
        ):
            return Outcome(retry=True, retry_after=retry_after if transient_status else None)
        # MSAL raises ValueError and friends for things retrying cannot fix (bad config).
        return Outcome(
            error=TokenExchangeError(
                f"the token request could not be made ({type(raised).__name__})",
                **(_fields(error_body) if error_body else {}),
            )
        )
    if result is None:
        return Outcome(retry=True)
    if "access_token" in result:
        return Outcome(result=result)
    fields = _fields(result)
    error = fields["error"]
    if transient_status or error in _TRANSIENT_ERRORS:
        # The error body rides along so that giving up can report the authority's fields.
        return Outcome(result=result, retry=True, retry_after=retry_after)
    if fields["claims"] is not None or error == "interaction_required":
        if fields["claims"] is None:
            return Outcome(
                error=InvalidGrantError(
                    "the user must sign in again (interaction required)", **fields
                )
            )
        return Outcome(
            error=ClaimsChallengeError(
                "the user must satisfy a claims challenge (for example MFA) and retry", **fields
            )
        )
    if fields["suberror"] == "consent_required" or 65001 in fields["error_codes"]:
        return Outcome(
            error=ConsentRequiredError(
                "the user or an administrator has not consented to the downstream API",
                **fields,
            )
        )
    if error == "invalid_grant":
        return Outcome(
            error=InvalidGrantError(
                "the user's token cannot be exchanged (expired, revoked or not consented)",
                **fields,
            )
        )
    return Outcome(
        error=TokenExchangeError(
            f"the authority refused the token request ({error or 'no error code'})", **fields
        )
    )


def unavailable(detail: str, last: Outcome | None) -> AuthorityUnavailableError:
    fields = _fields(last.result) if last is not None and last.result else {}
    return AuthorityUnavailableError(f"the authority is unavailable: {detail}", **fields)
