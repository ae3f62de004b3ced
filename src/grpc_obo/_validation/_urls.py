"""Which URLs signing keys may be fetched from, and the form of an authority's base URL.

Its own module so that the options (which check the URLs at construction) and the key source
(which checks every URL it follows) share one rule without importing each other.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from grpc_obo._common import is_loopback, with_scheme
from grpc_obo._errors import ConfigurationError

__all__ = ["base_url", "check_fetch_url"]


def check_fetch_url(url: str, *, allow_loopback_http: bool) -> str | None:
    """Why `url` may not be fetched for keys, or None when it may (https, or loopback http)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return "not a valid URL"
    if parts.username or parts.password:
        return "must not carry credentials"
    if not host:
        return "has no host"
    if parts.scheme == "https":
        return None
    # NOTE: IP literals only (`is_loopback` without `by_name`): a name is resolved by whatever
    # the host's resolver says, which is not a promise that the bytes stay on this machine.
    if parts.scheme == "http" and allow_loopback_http and is_loopback(host):
        return None
    if parts.scheme == "http" and is_loopback(host):
        return "uses plain http (allowed for a loopback IP only with allow_loopback_http=True)"
    return "must use https"


def base_url(name: str, value: str, *, allow_loopback_http: bool) -> str:
    """`value` as `scheme://host[:port]` (a bare host means https), or a ConfigurationError."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty URL", setting=name)
    value = with_scheme(value)
    problem = check_fetch_url(value, allow_loopback_http=allow_loopback_http)
    if problem:
        raise ConfigurationError(f"{name} {problem}", setting=name)
    parts = urlsplit(value)
    if parts.path or parts.query or parts.fragment:
        raise ConfigurationError(
            f"{name} must be scheme://host[:port] with no path or query", setting=name
        )
    return value
