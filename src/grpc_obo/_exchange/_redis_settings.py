"""`RedisTokenStore`'s settings, checked, and its URL, parsed: each wrong setting is a
`ConfigurationError` that names it (`url` for the URL) and never quotes a value, as a Redis URL
may hold the password, and a value in the wrong place may be a secret in the wrong place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from grpc_obo._errors import ConfigurationError
from grpc_obo._errors._checks import (
    a_bool,
    a_callable,
    a_number,
    a_path,
    a_string,
    a_whole_number,
)
from grpc_obo._exchange._crypto import TokenSealer

__all__ = ["check_settings", "parse_url"]

_URL_RULE = "url must be redis://[user:password@]host[:port][/db] (or rediss:// for TLS)"


def check_settings(given: Mapping[str, Any]) -> None:
    """Check `RedisTokenStore.__init__`'s settings, by name (its `locals()`)."""
    if not isinstance(given["sealer"], TokenSealer):
        raise ConfigurationError(
            "sealer must be a TokenSealer (RedisTokenStore encrypts every value)",
            setting="sealer",
        )
    a_string("host", given["host"], "a host name or address")
    a_whole_number("port", given["port"], minimum=1, maximum=65535)
    if a_whole_number("db", given["db"], minimum=0) and given["cluster"] is True:
        raise ConfigurationError("db must be 0 on Redis Cluster (it has no other)", setting="db")
    for setting in ("username", "password"):
        if given[setting] is not None and not isinstance(given[setting], str):
            raise ConfigurationError(f"{setting} must be a string or None", setting=setting)
    ssl = a_bool("ssl", given["ssl"])
    if given["ssl_ca_file"] is not None:
        a_path("ssl_ca_file", given["ssl_ca_file"])
        if not ssl:
            raise ConfigurationError(
                "ssl_ca_file needs TLS (ssl=True, or a rediss:// URL)", setting="ssl_ca_file"
            )
    a_bool("cluster", given["cluster"])
    namespace = given["namespace"]
    if namespace is not None and (
        not isinstance(namespace, str) or any(c in namespace for c in "{}|")
    ):
        raise ConfigurationError(
            "namespace must be a string without '{', '}' or '|'", setting="namespace"
        )
    a_number("timeout", given["timeout"], above=True)
    a_whole_number("pool_max_size", given["pool_max_size"])
    a_whole_number("l1_max_entries", given["l1_max_entries"])
    a_number("l1_ttl", given["l1_ttl"], above=True)
    if not 0.05 <= a_number("lease_ttl", given["lease_ttl"]) <= 300:
        raise ConfigurationError(
            "lease_ttl must be between 0.05 and 300 seconds", setting="lease_ttl"
        )
    a_callable("clock", given["clock"], "a callable returning the time in seconds")
    if not callable(getattr(given["observer"], "store_outcome", None)):
        raise ConfigurationError(
            "observer must have a store_outcome(outcome) method", setting="observer"
        )


def parse_url(url: object) -> dict[str, Any]:
    """The connection settings in `url`: host, port, db, username, password, ssl."""
    if not isinstance(url, str):
        raise ConfigurationError(_URL_RULE, setting="url")
    try:
        parts = urlsplit(url)
        port = 6379 if parts.port is None else parts.port  # port 0 is refused, not 6379
        path = parts.path.strip("/")
        db = int(path) if path else 0
    except ValueError:
        # NOTE: `from None`: urllib's and int()'s messages quote the URL, password and all.
        raise ConfigurationError(_URL_RULE, setting="url") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname or db < 0:
        raise ConfigurationError(_URL_RULE, setting="url")
    return {
        "host": parts.hostname,
        "port": port,
        "db": db,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "ssl": parts.scheme == "rediss",
    }
