"""The error every dev-authority decision raises: Entra's error shape (`error`, AADSTS code,
description, HTTP status, suberror, claims). Its own module so that the grant modules can share
it without importing each other."""

from __future__ import annotations


class OAuthError(Exception):
    """An error answer in Entra's shape. `description` never contains a secret or token."""

    def __init__(
        self,
        error: str,
        code: int,
        description: str,
        *,
        status: int = 400,
        suberror: str | None = None,
        claims: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"AADSTS{code}: {description}")
        self.error = error
        self.code = code
        self.description = description
        self.status = status
        self.suberror = suberror
        self.claims = claims
        self.retry_after = retry_after
        """Seconds for a `Retry-After` header (throttling answers)."""


def missing(name: str) -> OAuthError:
    """Entra's answer to a request without a required parameter."""
    return OAuthError(
        "invalid_request",
        900144,
        f"The request body must contain the following parameter: '{name}'.",
    )
