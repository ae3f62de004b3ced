"""The one place that decides what of a failure or a URL may leave the process in telemetry.

Exception *class* names (grpc_obo's own; anything else is `_OTHER`), bounded reasons, Entra's
error name, numeric codes and correlation id, and that a claims challenge was there: never a
message, an `error_description`, a claims value or a token.
"""

from __future__ import annotations

from typing import Any

from grpc_obo._telemetry._names import (
    ATTR_CLAIMS,
    ATTR_CORRELATION,
    ATTR_ENTRA_CODES,
    ATTR_ENTRA_ERROR,
    ATTR_ERROR,
    ATTR_REASON,
)

# Identity error classes and reasons come from grpc_obo's own, bounded tree; anything else is
# reported as this (a validator of the user's raising its own exception, say).
_OTHER = "_OTHER"
_GUIDISH = frozenset("0123456789abcdefABCDEF-")


def _failure_attributes(error: BaseException) -> dict[str, Any]:
    """The one redaction point for failures: class, bounded reason, Entra codes, never text.

    Exception messages are not exported (grpc_obo's are fixed sentences, but a validator or
    an HTTP library of someone else's may put anything in theirs), nor Entra's
    `error_description`, nor a claims challenge's value: only that there was one.
    """
    module = type(error).__module__
    name = type(error).__name__ if module.startswith("grpc_obo") else _OTHER
    reason = getattr(error, "reason", None)
    bounded = isinstance(reason, str) and reason.replace("_", "").isalnum() and len(reason) <= 40
    if name.startswith("_"):  # a private class (a key fetch failure): its bounded reason
        name = reason if bounded and isinstance(reason, str) else _OTHER
    if isinstance(error, TimeoutError):
        name = "timeout"
    attributes: dict[str, Any] = {ATTR_ERROR: name}
    if bounded:
        attributes[ATTR_REASON] = reason
    entra_error = getattr(error, "error", None)
    if isinstance(entra_error, str) and entra_error.replace("_", "").isalnum():
        attributes[ATTR_ENTRA_ERROR] = entra_error[:64]
    codes = getattr(error, "error_codes", None)
    if codes:
        numbers = [int(c) for c in codes if isinstance(c, int) and not isinstance(c, bool)]
        if numbers:
            attributes[ATTR_ENTRA_CODES] = numbers[:8]
    correlation = getattr(error, "correlation_id", None)
    if isinstance(correlation, str) and set(correlation) <= _GUIDISH and len(correlation) <= 36:
        attributes[ATTR_CORRELATION] = correlation
    if getattr(error, "claims", None):
        attributes[ATTR_CLAIMS] = True
    return attributes


def _is_fault(error: BaseException) -> bool:
    """Whether a failure is the service's problem (an error status), not the caller's.

    The error class decides (`GrpcOboError.service_fault`, read by attribute: this module imports
    nothing of grpc_obo); anything else raised is a fault.
    """
    return getattr(type(error), "service_fault", True) is not False


def _guid_or_other(value: str) -> str:
    # oid/tid/azp are GUIDs in every Entra token; anything else is not exported as is.
    return value if len(value) <= 36 and set(value) <= _GUIDISH else _OTHER


def _public_url(url: str) -> str:
    # Discovery and JWKS URLs carry no credentials; a query string or user info never belongs.
    base = url.split("?", 1)[0].split("#", 1)[0]
    scheme, sep, rest = base.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"
