"""`ValidatorOptions`: everything a `TokenValidator` needs, checked once at construction.

Misconfiguration (an http authority, a multi-tenant API without a tenant decision, a Graph
audience, a static JWKS with no usable key, a CA file that does not load) raises
`ConfigurationError` here, so a service fails at start-up instead of on its first request. Also
owns the issuer templates, the URL rules (https only; plain http only for a loopback IP literal,
and only when asked) and `from_env()`, which reads azure-identity's variable names.
"""

from __future__ import annotations

import os
import re
import ssl
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from grpc_obo._common import is_guid as _is_guid
from grpc_obo._common import with_scheme
from grpc_obo._errors import ConfigurationError
from grpc_obo._validation._jwks import parse_jwks
from grpc_obo._validation._urls import base_url

__all__ = [
    "GRAPH_AUDIENCES",
    "MULTI_TENANTS",
    "ValidatorOptions",
    "is_guid",
]

MULTI_TENANTS = frozenset({"organizations", "common"})
"""Tenant names that accept tokens from many tenants (the issuer is then templated by `tid`)."""

GRAPH_AUDIENCES = frozenset(
    {
        # Microsoft Graph and the retired Azure AD Graph: their tokens are for Microsoft's APIs
        # (Graph tokens even carry a header `nonce` that makes them unverifiable by design).
        "00000003-0000-0000-c000-000000000000",
        "https://graph.microsoft.com",
        "https://graph.microsoft.com/",
        "00000002-0000-0000-c000-000000000000",
        "https://graph.windows.net",
        "https://graph.windows.net/",
    }
)

_VERSIONS = frozenset({"1.0", "2.0"})


def is_guid(value: object) -> bool:
    """True for a lowercase GUID string, the only form Entra puts in `tid` and `oid`."""
    return _is_guid(value, lowercase=True)


def _string_set(name: str, value: Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        # NOTE: frozenset("abc") would silently become {"a", "b", "c"}.
        raise ConfigurationError(
            f"{name} must be a collection of strings, not one string", setting=name
        )
    if not isinstance(value, Iterable):
        raise ConfigurationError(f"{name} must be a collection of strings", setting=name)
    items = frozenset(value)
    if not all(isinstance(item, str) and item for item in items):
        raise ConfigurationError(f"{name} must contain only non-empty strings", setting=name)
    return items


def _guid_set(name: str, value: Iterable[str] | None) -> frozenset[str] | None:
    items = _string_set(name, value)
    if items is None:
        return None
    lowered = frozenset(item.lower() for item in items)
    if not all(is_guid(item) for item in lowered):
        raise ConfigurationError(f"{name} must contain only tenant/client GUIDs", setting=name)
    return lowered


# Contexts built here from `ca_file`: `dataclasses.replace()` passes them back together with
# `ca_file`, which must not count as giving both.
_CA_CONTEXTS: weakref.WeakSet[ssl.SSLContext] = weakref.WeakSet()


def ca_context(ca_file: object, name: str = "ca_file") -> ssl.SSLContext:
    """An SSL context trusting exactly the CA file (or OpenSSL hashed directory) `ca_file`."""
    try:
        path = os.fspath(ca_file)  # type: ignore[call-overload]
    except TypeError:
        raise ConfigurationError(f"{name} must be a path", setting=name) from None
    if not isinstance(path, str) or not path.strip():
        raise ConfigurationError(f"{name} is empty", setting=name)
    if not os.path.exists(path):
        raise ConfigurationError(f"{name} {path!r} does not exist", setting=name)
    try:
        if os.path.isdir(path):
            context = ssl.create_default_context(capath=path)
        else:
            # NOTE: with `cafile`, the default context loads no system CAs: exactly this CA.
            context = ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError, ValueError):
        raise ConfigurationError(
            f"{name} {path!r} is not a readable PEM CA file", setting=name
        ) from None
    _CA_CONTEXTS.add(context)
    return context


def _check_tenant(value: object) -> str:
    """The tenant, lowercased: a GUID, or 'organizations'/'common' (issuers carry the GUID, so
    a domain name cannot be checked against a token)."""
    tenant = value.lower() if isinstance(value, str) else ""
    if tenant not in MULTI_TENANTS and not is_guid(tenant):
        raise ConfigurationError(
            "tenant must be a tenant GUID, 'organizations' or 'common' (a domain "
            "name will not do: token issuers carry the GUID)",
            setting="tenant",
        )
    return tenant


_T = TypeVar("_T")


def _env_error(read: Mapping[str, str], build: Callable[..., _T], *args: object) -> _T:
    """`build(*args)`, its `ConfigurationError` naming the variable its setting was read from
    (`read`: option -> variable); one about a setting read from no variable as it is."""
    try:
        return build(*args)
    except ConfigurationError as exc:
        variable = read.get(exc.setting) if exc.setting is not None else None
        if variable is None:
            raise
        raise ConfigurationError(f"{variable}: {exc.message}", setting=variable) from None


def _bounded(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigurationError(f"{name} must be a number between {low} and {high}", setting=name)


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidatorOptions:
    """How a `TokenValidator` decides whether an Entra access token is for this API.

    Single-tenant: `tenant` is the tenant GUID and only its tokens are accepted. Multi-tenant:
    `tenant="organizations"` (or `"common"`) plus either `allowed_tenants` or an explicit
    `allow_all_tenants=True`, because "any tenant in the world" must be a decision, not a default.
    """

    tenant: str
    """The tenant GUID, or "organizations"/"common" for a multi-tenant API."""
    audiences: frozenset[str]
    """This API's identifiers: its client id GUID and/or App ID URIs (`api://...`)."""
    authority_host: str = "https://login.microsoftonline.com"
    """Where discovery lives and the v2 issuer's host: `{authority_host}/{tid}/v2.0`."""
    v1_issuer_host: str = "https://sts.windows.net"
    """The v1 issuer's host: `{v1_issuer_host}/{tid}/`. Override for a non-Microsoft authority."""
    allowed_tenants: frozenset[str] | None = None
    """Multi-tenant only: the tenant GUIDs whose tokens are accepted (others: PERMISSION_DENIED)."""
    allow_all_tenants: bool = False
    """Multi-tenant only: accept tokens from every tenant. Must be chosen explicitly."""
    versions: frozenset[str] = frozenset({"2.0"})
    """Accepted token versions (`ver`): "2.0" and/or "1.0"."""
    leeway: float = 60.0
    """Seconds of clock skew tolerated on `exp`, `nbf` and `iat` (0..300)."""
    allowed_client_ids: frozenset[str] | None = None
    """If set, only these calling client apps (`azp` v2 / `appid` v1) are accepted."""
    accept_app_tokens_without_roles: bool = False
    """Accept app-only tokens that carry no `roles` (Entra issues them when a client has no app
    role assignment). Off by default: a token with neither `scp` nor `roles` is refused (an
    app-only one with reason `app_token_without_roles`: it needs an app role of this API)."""
    clock: Callable[[], float] = time.time
    """Current time in epoch seconds; also drives key refresh timing. Replace it in tests."""
    max_token_bytes: int = 16 * 1024
    """Tokens longer than this are refused before any parsing (1 KiB..64 KiB)."""
    key_refresh_interval: float = 24 * 3600.0
    """Scheduled key refresh period in seconds: at most daily, as Entra asks."""
    unknown_kid_refresh_interval: float = 300.0
    """Minimum seconds between refreshes caused by a token naming an unknown key."""
    new_kid_refresh_interval: float = 30.0
    """Minimum seconds between the extra refreshes kept for key ids not looked up before: one
    junk token spending `unknown_kid_refresh_interval` cannot hold back a freshly rolled key."""
    key_fetch_backoff_initial: float = 1.0
    """While no key set was ever loaded: seconds before retrying a failed fetch (0.01..300),
    doubling after each failure up to `key_fetch_backoff_max`."""
    key_fetch_backoff_max: float = 30.0
    """The longest wait between fetch attempts while no key set was ever loaded (up to 3600)."""
    max_lifetime: float | None = None
    """If set, tokens whose `exp - iat` exceeds this many seconds are refused (60 s..30 days).
    Entra access tokens live 60-90 minutes by default and at most about 28 hours (CAE)."""
    verified_cache_size: int = 1_000_000
    """At most how many verified tokens to remember (0 turns the cache off); with the default,
    `verified_cache_bytes` is the bound that binds."""
    verified_cache_bytes: int = 256 * 2**20
    """The verified-token cache's memory budget in bytes (default 256 MiB, 1 MiB..64 GiB): each
    entry is charged its token's size plus about 800 bytes (the identity), so the default holds
    about 120,000 tokens of 1.3 KB (Entra's are 1.2-2.5 KB). Least recently used go first."""
    jwks: Mapping[str, Any] | None = field(default=None, repr=False)
    """A static JWKS document for offline use: no discovery and no network at all."""
    http_timeout: float = 10.0
    """Seconds for each discovery or JWKS request."""
    ca_file: str | None = None
    """Trust exactly this PEM CA file (or hashed directory) for key fetches, as
    `ConfidentialClient(ca_file=...)` does for exchanges: the dev authority's CA, a corporate
    one. Checked here. Give `ca_file` or `ssl_context`, not both."""
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    """TLS settings for key fetches; built from `ca_file` when that is given."""
    allow_loopback_http: bool = False
    """Allow plain http when the authority is a loopback IP literal (tests and local tools)."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise through the back door, once, here
        if not isinstance(self.allow_loopback_http, bool):
            raise ConfigurationError(
                "allow_loopback_http must be a bool", setting="allow_loopback_http"
            )
        loopback = self.allow_loopback_http
        set_(
            self,
            "authority_host",
            base_url("authority_host", self.authority_host, allow_loopback_http=loopback),
        )
        if not isinstance(self.v1_issuer_host, str) or not self.v1_issuer_host.strip():
            raise ConfigurationError(
                "v1_issuer_host must be a non-empty URL", setting="v1_issuer_host"
            )
        v1_host = with_scheme(self.v1_issuer_host)
        v1_parts = urlsplit(v1_host)
        if v1_parts.scheme not in ("https", "http") or not v1_parts.netloc or v1_parts.path:
            raise ConfigurationError(
                "v1_issuer_host must be scheme://host[:port]", setting="v1_issuer_host"
            )
        set_(self, "v1_issuer_host", v1_host)

        tenant = _check_tenant(self.tenant)
        set_(self, "tenant", tenant)

        allowed = _guid_set("allowed_tenants", self.allowed_tenants)
        set_(self, "allowed_tenants", allowed)
        if tenant in MULTI_TENANTS:
            if allowed is None and not self.allow_all_tenants:
                raise ConfigurationError(
                    "a multi-tenant validator needs allowed_tenants, or allow_all_tenants=True",
                    setting="allowed_tenants",
                )
            if allowed is not None and self.allow_all_tenants:
                raise ConfigurationError(
                    "give allowed_tenants or allow_all_tenants, not both", setting="allowed_tenants"
                )
            if allowed is not None and not allowed:
                raise ConfigurationError(
                    "allowed_tenants must not be empty", setting="allowed_tenants"
                )
        else:
            if self.allow_all_tenants:
                raise ConfigurationError(
                    "allow_all_tenants needs tenant='organizations'/'common'",
                    setting="allow_all_tenants",
                )
            if allowed is not None and allowed != {tenant}:
                raise ConfigurationError(
                    "a single-tenant validator accepts only its own tenant",
                    setting="allowed_tenants",
                )

        audiences = _string_set("audiences", self.audiences)
        if not audiences:
            raise ConfigurationError(
                "audiences must name at least one identifier of this API", setting="audiences"
            )
        # GUID client ids appear lowercase in `aud`; App ID URIs are compared exactly.
        audiences = frozenset(a.lower() if is_guid(a.lower()) else a for a in audiences)
        if audiences & GRAPH_AUDIENCES:
            raise ConfigurationError(
                "Microsoft Graph tokens are not ours to validate", setting="audiences"
            )
        set_(self, "audiences", audiences)

        versions = _string_set("versions", self.versions)
        if not versions or not versions <= _VERSIONS:
            raise ConfigurationError(
                'versions must be a non-empty subset of {"1.0", "2.0"}', setting="versions"
            )
        set_(self, "versions", versions)

        set_(self, "allowed_client_ids", _guid_set("allowed_client_ids", self.allowed_client_ids))
        if self.allowed_client_ids is not None and not self.allowed_client_ids:
            raise ConfigurationError(
                "allowed_client_ids must not be empty (None means any)",
                setting="allowed_client_ids",
            )

        _bounded("leeway", self.leeway, 0, 300)
        _bounded("max_token_bytes", self.max_token_bytes, 1024, 64 * 1024)
        _bounded("key_refresh_interval", self.key_refresh_interval, 1, 24 * 3600)
        _bounded("unknown_kid_refresh_interval", self.unknown_kid_refresh_interval, 1, 24 * 3600)
        if self.unknown_kid_refresh_interval > self.key_refresh_interval:
            raise ConfigurationError(
                "unknown_kid_refresh_interval exceeds key_refresh_interval",
                setting="unknown_kid_refresh_interval",
            )
        _bounded("new_kid_refresh_interval", self.new_kid_refresh_interval, 1, 24 * 3600)
        _bounded("key_fetch_backoff_initial", self.key_fetch_backoff_initial, 0.01, 300)
        _bounded("key_fetch_backoff_max", self.key_fetch_backoff_max, 0.01, 3600)
        if self.key_fetch_backoff_initial > self.key_fetch_backoff_max:
            raise ConfigurationError(
                "key_fetch_backoff_initial exceeds key_fetch_backoff_max",
                setting="key_fetch_backoff_initial",
            )
        if self.max_lifetime is not None:
            _bounded("max_lifetime", self.max_lifetime, 60, 30 * 86400)
        _bounded("verified_cache_size", self.verified_cache_size, 0, 10_000_000)
        _bounded("verified_cache_bytes", self.verified_cache_bytes, 2**20, 64 * 2**30)
        _bounded("http_timeout", self.http_timeout, 0.001, 120)
        for name in ("max_token_bytes", "verified_cache_size", "verified_cache_bytes"):
            if not isinstance(getattr(self, name), int):
                raise ConfigurationError(f"{name} must be an int", setting=name)
        if not callable(self.clock):
            raise ConfigurationError(
                "clock must be a callable returning epoch seconds", setting="clock"
            )
        if self.ssl_context is not None and not isinstance(self.ssl_context, ssl.SSLContext):
            raise ConfigurationError("ssl_context must be an ssl.SSLContext", setting="ssl_context")
        if self.ca_file is not None:
            if self.ssl_context is not None and self.ssl_context not in _CA_CONTEXTS:
                raise ConfigurationError("give ca_file or ssl_context, not both", setting="ca_file")
            context = ca_context(self.ca_file)  # checks the path first
            set_(self, "ca_file", os.fspath(self.ca_file))
            set_(self, "ssl_context", context)
        for name in ("allow_all_tenants", "accept_app_tokens_without_roles"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{name} must be a bool", setting=name)
        if self.jwks is not None:
            if not isinstance(self.jwks, Mapping):
                raise ConfigurationError(
                    "jwks must be a JWKS document (a mapping with 'keys')", setting="jwks"
                )
            if not parse_jwks(self.jwks).keys:
                raise ConfigurationError(
                    "jwks has no usable RSA signing key (>= 2048 bits)", setting="jwks"
                )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> ValidatorOptions:
        """Options for this API from the environment, when called (never implicitly).

        The names azure-identity uses, read as it reads them, plus grpc_obo's own where it has
        none (the same file works for `ConfidentialClient.from_env()` in a middle tier):

        - `AZURE_TENANT_ID` (required): `tenant`, a GUID or `organizations`/`common`; checked
          also when `GRPC_OBO_ALLOWED_TENANTS` replaces it;
        - `AZURE_CLIENT_ID`: `audiences` = this client id and `api://<client id>`;
        - `AZURE_AUTHORITY_HOST`: `authority_host`; a bare host (`login.microsoftonline.us`)
          means https;
        - `GRPC_OBO_AUDIENCES`: `audiences` instead (comma or space separated);
        - `GRPC_OBO_TOKEN_VERSIONS`: `versions`, `2.0` (default), `1.0` or `1.0,2.0`;
        - `GRPC_OBO_ALLOWED_TENANTS`: tenant GUIDs: a multi-tenant API (`tenant` becomes
          `organizations` unless it is `common`) accepting exactly these tenants;
        - `GRPC_OBO_CA_FILE`: `ca_file`, as for `ConfidentialClient.from_env()`;
        - `GRPC_OBO_V1_ISSUER_HOST`: `v1_issuer_host` (v1 tokens of a non-Microsoft authority).

        Keyword arguments are options that win over the environment
        (`from_env(versions={"1.0", "2.0"}, max_lifetime=28 * 3600)`). A bad value raises
        `ConfigurationError` naming the variable (never quoting a value).
        """
        env = os.environ if environ is None else environ
        read: dict[str, str] = {}  # option -> the variable it came from

        def get(variable: str) -> str | None:
            value = env.get(variable, "").strip()
            return value or None

        def items(variable: str) -> list[str]:
            return [part for part in re.split(r"[\s,]+", get(variable) or "") if part]

        values: dict[str, Any] = {}
        tenant = get("AZURE_TENANT_ID")
        if tenant is not None:
            values["tenant"], read["tenant"] = tenant, "AZURE_TENANT_ID"
        client_id = get("AZURE_CLIENT_ID")
        if get("GRPC_OBO_AUDIENCES"):
            values["audiences"] = frozenset(items("GRPC_OBO_AUDIENCES"))
            read["audiences"] = "GRPC_OBO_AUDIENCES"
        elif client_id is not None:
            values["audiences"] = frozenset({client_id, f"api://{client_id}"})
            read["audiences"] = "AZURE_CLIENT_ID"
        for variable, option in (
            ("AZURE_AUTHORITY_HOST", "authority_host"),
            ("GRPC_OBO_V1_ISSUER_HOST", "v1_issuer_host"),
            ("GRPC_OBO_CA_FILE", "ca_file"),
        ):
            value = get(variable)
            if value is not None:
                values[option], read[option] = value, variable
        if get("GRPC_OBO_TOKEN_VERSIONS") is not None:
            values["versions"] = frozenset(items("GRPC_OBO_TOKEN_VERSIONS"))
            read["versions"] = "GRPC_OBO_TOKEN_VERSIONS"
        if get("GRPC_OBO_ALLOWED_TENANTS") is not None:
            # NOTE: the home tenant is replaced below, never used: check it here all the same,
            # or a wrong AZURE_TENANT_ID would pass until ConfidentialClient meets the authority.
            if tenant is not None and "tenant" not in overrides:
                _env_error(read, _check_tenant, tenant)
            values["allowed_tenants"] = frozenset(items("GRPC_OBO_ALLOWED_TENANTS"))
            read["allowed_tenants"] = "GRPC_OBO_ALLOWED_TENANTS"
            # NOTE: an allow-list only means something to a multi-tenant API; AZURE_TENANT_ID
            # stays the API's home tenant, as ConfidentialClient.from_env() reads it.
            if str(values.get("tenant", "")).lower() not in MULTI_TENANTS:
                values["tenant"], read["tenant"] = "organizations", "GRPC_OBO_ALLOWED_TENANTS"
        for option in overrides:
            read.pop(option, None)
        values.update(overrides)
        for option, variable in (("tenant", "AZURE_TENANT_ID"), ("audiences", "AZURE_CLIENT_ID")):
            if option not in values:
                raise ConfigurationError(
                    f"{variable} is not set (needed for {option})", setting=variable
                )
        return _env_error(read, lambda: cls(**values))

    @property
    def is_multi_tenant(self) -> bool:
        return self.tenant in MULTI_TENANTS

    @property
    def discovery_url(self) -> str:
        """`{authority_host}/{tenant}/v2.0/.well-known/openid-configuration`."""
        return f"{self.authority_host}/{self.tenant}/v2.0/.well-known/openid-configuration"

    def issuer_for(self, version: str, tid: str) -> str:
        """The exact issuer a token of `version` from tenant `tid` must carry."""
        if version == "1.0":
            return f"{self.v1_issuer_host}/{tid}/"
        return f"{self.authority_host}/{tid}/v2.0"
