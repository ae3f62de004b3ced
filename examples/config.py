"""How an example API process is configured: environment variables, read once at start.

The identity variables are azure-identity's, read by `grpc_obo.ValidatorOptions.from_env()` and
(middle tiers) `grpc_obo.ConfidentialClient.from_env()`:

    AZURE_TENANT_ID           the registration's home tenant (GUID)
    AZURE_CLIENT_ID           this API's app registration: the audience of the tokens it accepts
                              (with api://CLIENT_ID), and who exchanges tokens On-Behalf-Of
    AZURE_FEDERATED_TOKEN_FILE   middle tiers: workload identity, a service-account token file
                              (what `make demo` gives them: no secret, no key), or
    GRPC_OBO_MANAGED_IDENTITY_CLIENT_ID   a user-assigned managed identity, or
    AZURE_CLIENT_CERTIFICATE_PATH   a PEM or PKCS12 file with the key and the certificate, or
    AZURE_CLIENT_SECRET       a client secret (all that are set are tried in this order)
    AZURE_AUTHORITY_HOST      https://login.microsoftonline.com unless set (the dev authority's URL)
    GRPC_OBO_CA_FILE          trust exactly this CA for the authority (the dev authority's)
    GRPC_OBO_AUDIENCES        this API's identifiers, if not AZURE_CLIENT_ID and api://<it>
    GRPC_OBO_ALLOWED_TENANTS  tenant GUIDs whose users are served (then validated as a
                              multi-tenant API); without it, only AZURE_TENANT_ID's

and the examples' own:

    LISTEN_ADDRESS            host:port to serve on (port 0 picks a free one)
    TLS_CERT_FILE, TLS_KEY_FILE   the server's certificate chain and key (PEM): required unless
                              PLAINTEXT_LOOPBACK=1 (`python -m examples.authority` issues
                              each API one from the dev authority's CA)
    TLS_CA_FILE               the CA that signed the next hop's certificate (middle tiers;
                              without it, the system's CAs)
    PLAINTEXT_LOOPBACK=1      the explicit opt-out: no TLS at all, only on loopback addresses
                              (logs a WARNING)
    <NEXT>_ADDRESS, <NEXT>_SCOPES   middle tiers: the next hop (STORE_*, VAULT_*) and the
                              delegated scopes to ask for it (space separated)
    SPANS_FILE                append finished spans here as JSON lines (see examples/tracing.py)

Every problem is a `grpc_obo.ConfigurationError` with a one-line message naming the variable.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

import grpc_obo


@dataclass(frozen=True)
class Downstream:
    """The next hop of a middle tier: where, with which scopes, trusting which CA."""

    address: str
    scopes: tuple[str, ...]
    credentials: grpc.ChannelCredentials | None
    """None: plaintext (PLAINTEXT_LOOPBACK=1, loopback only)."""


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    listen: str
    validator: grpc_obo.ValidatorOptions
    server_credentials: grpc.ServerCredentials | None
    """None: plaintext (PLAINTEXT_LOOPBACK=1, loopback only)."""
    client: grpc_obo.ConfidentialClient | None = None
    """Middle tiers: the registration that exchanges tokens On-Behalf-Of."""
    downstream: Downstream | None = None

    @classmethod
    def from_env(
        cls,
        name: str,
        env: Mapping[str, str],
        *,
        default_listen: str,
        next_hop: str | None = None,
    ) -> ServiceConfig:
        """Read the variables above; `next_hop` is the prefix of a middle tier's next hop."""

        def need(variable: str) -> str:
            value = env.get(variable, "").strip()
            if not value:
                raise grpc_obo.ConfigurationError(f"{variable} is not set")
            return value

        for variable in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID"):  # said first, and plainly
            need(variable)
        # An API serving several tenants validates as multi-tenant, while its registration's
        # home tenant stays AZURE_TENANT_ID (the middle tier's credential needs it).
        several = bool(env.get("GRPC_OBO_ALLOWED_TENANTS", "").strip())
        validator = grpc_obo.ValidatorOptions.from_env(
            env, **({"tenant": "organizations"} if several else {})
        )

        plaintext = env.get("PLAINTEXT_LOOPBACK", "").strip() == "1"
        listen = env.get("LISTEN_ADDRESS", "").strip() or default_listen
        if plaintext:
            _loopback_only("LISTEN_ADDRESS", listen)
            server_credentials = None
        else:
            server_credentials = _server_credentials(env)

        client = downstream = None
        if next_hop is not None:
            client = grpc_obo.ConfidentialClient.from_env(env)
            address = need(f"{next_hop}_ADDRESS")
            scopes = tuple(need(f"{next_hop}_SCOPES").split())
            if plaintext:
                _loopback_only(f"{next_hop}_ADDRESS", address)
                credentials = None
            else:
                credentials = grpc.ssl_channel_credentials(
                    _read(env, "TLS_CA_FILE") if env.get("TLS_CA_FILE") else None
                )
            downstream = Downstream(address=address, scopes=scopes, credentials=credentials)
        return cls(
            name=name,
            listen=listen,
            validator=validator,
            server_credentials=server_credentials,
            client=client,
            downstream=downstream,
        )


def _read(env: Mapping[str, str], variable: str) -> bytes:
    path = env.get(variable, "").strip()
    if not path:
        raise grpc_obo.ConfigurationError(
            f"{variable} is not set (or set PLAINTEXT_LOOPBACK=1 to serve without TLS on loopback)"
        )
    try:
        return Path(path).read_bytes()
    except OSError:
        raise grpc_obo.ConfigurationError(f"{variable} ({path}) cannot be read") from None


def _server_credentials(env: Mapping[str, str]) -> grpc.ServerCredentials:
    chain, key = _read(env, "TLS_CERT_FILE"), _read(env, "TLS_KEY_FILE")
    return grpc.ssl_server_credentials([(key, chain)])


def _loopback_only(variable: str, address: str) -> None:
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise grpc_obo.ConfigurationError(
            f"PLAINTEXT_LOOPBACK=1 allows loopback addresses only, and {variable} is {address}"
        )
