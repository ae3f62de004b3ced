"""Pure decisions about one token request's outcome: success, retry (and when), or which error.

No I/O: the exchanger feeds in MSAL's result (or the exception it raised), the HTTP status and
`Retry-After` the HTTP client saw, and acts on the answer.
"""

from __future__ import annotations

import random
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
        if self.max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < self.base_delay or self.budget <= 0:
            raise ConfigurationError("delays must satisfy 0 <= base_delay <= max_delay, budget > 0")

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


def classify(
    result: Mapping[str, Any] | None,
    *,
    raised: BaseException | None = None,
    status: int | None = None,
    retry_after: float | None = None,
) -> Outcome:
    """What to do with one attempt's outcome."""
    transient_status = status is not None and (status == 429 or status >= 500)
    if raised is not None:
        # A 5xx with a body MSAL cannot parse surfaces as an exception: the status decides.
        if transient_status or isinstance(
            raised, (requests.ConnectionError, requests.Timeout, OSError)
        ):
            return Outcome(retry=True, retry_after=retry_after if transient_status else None)
        # MSAL raises ValueError and friends for things retrying cannot fix (bad config).
        return Outcome(
            error=TokenExchangeError(
                f"the token request could not be made ({type(raised).__name__})"
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
