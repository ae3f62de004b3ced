"""The bearer token of a request: `Authorization: Bearer <token>` read strictly, for any transport.

gRPC hands over metadata pairs, an HTTP front door a header value; both end here, before the
validator sees anything. Errors are the RFC 6750 ones (`MissingTokenError` when there is no
authentication at all, `MalformedTokenError` otherwise); no message holds the token.
"""

from __future__ import annotations

from collections.abc import Iterable

from grpc_obo._errors import MalformedTokenError, MissingTokenError

__all__ = ["bearer_token", "bearer_token_from_header"]


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """The token of the one `authorization` entry in `metadata` (keys in lower case)."""
    value: str | bytes | None = None
    for key, item in metadata:
        # gRPC delivers metadata keys in lower case (HTTP/2 refuses upper-case header names).
        if key == "authorization":
            if value is not None:
                raise MalformedTokenError(
                    "more than one authorization value", reason="multiple_authorization"
                )
            value = item
    if value is None:
        raise MissingTokenError("no bearer token in the authorization metadata")
    return bearer_token_from_header(value)


def bearer_token_from_header(value: str | bytes) -> str:
    """The token of one `Authorization` header value."""
    if not isinstance(value, str):
        raise MalformedTokenError("the authorization value is not text", reason="malformed_header")
    scheme, _, rest = value.partition(" ")
    if scheme != "Bearer" and scheme.lower() != "bearer":  # the usual spelling costs no copy
        # RFC 6750 §3.1: another scheme counts as "no authentication": no error code.
        raise MissingTokenError(
            "the authorization scheme is not Bearer", reason="unsupported_scheme"
        )
    token = rest.lstrip(" ")  # RFC 7235: one or more spaces after the scheme
    if not token:
        raise MalformedTokenError("the bearer token is empty", reason="empty_token")
    # NOTE: gRPC metadata values are printable ASCII, so a space is the only whitespace a gRPC
    # client can send. Both checks are C scans (tens of nanoseconds over a 1-2 KB token, where
    # `str.isprintable` costs microseconds); the validator checks the token's alphabet strictly.
    if not token.isascii() or " " in token:
        raise MalformedTokenError(
            "the bearer token is not one ASCII word", reason="malformed_header"
        )
    return token
