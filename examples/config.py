"""How an example API process is configured: environment variables, read once at start.

The identity variables are azure-identity's (what `grpc_obo.ConfidentialClient.from_env()` reads):

    AZURE_TENANT_ID           the registration's home tenant (GUID)
    AZURE_CLIENT_ID           this API's app registration: the audience of the tokens it accepts,
                              and (middle tiers) who exchanges tokens On-Behalf-Of
    AZURE_CLIENT_SECRET       middle tiers: a client secret, or
    AZURE_CLIENT_CERTIFICATE_PATH   a PEM file with the private key and the certificate
    AZURE_AUTHORITY_HOST      https://login.microsoftonline.com unless set (the dev authority's URL)

and the examples' own:

    AUTHORITY_CA_FILE         trust exactly this CA for the authority (the dev authority's)
    API_APP_ID_URI            this API's App ID URI, also accepted as audience (api://CLIENT_ID)
    ALLOWED_TENANTS           tenant GUIDs whose users are served (space separated); without it,
                              only AZURE_TENANT_ID's
    LISTEN_ADDRESS            host:port to serve on (port 0 picks a free one)
    TLS_CERT_FILE, TLS_KEY_FILE   the server's certificate chain and key (PEM)
    TLS_CA_FILE               the CA that signed the next hop's certificate (middle tiers)
    PLAINTEXT_LOOPBACK=1      no TLS at all, only on loopback addresses (logs a WARNING)
    <NEXT>_ADDRESS, <NEXT>_SCOPES   middle tiers: the next hop (STORE_*, VAULT_*) and the
                              delegated scopes to ask for it (space separated)
    SPANS_FILE                append finished spans here as JSON lines (see examples/tracing.py)

Every problem is a `grpc_obo.ConfigurationError` with a one-line message naming the variable.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

import grpc_obo

_LOG = logging.getLogger("examples.config")
ENTRA = "https://login.microsoftonline.com"


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

        tenant, client_id = need("AZURE_TENANT_ID"), need("AZURE_CLIENT_ID")
        authority_host = env.get("AZURE_AUTHORITY_HOST", "").strip() or ENTRA
        ca_file = env.get("AUTHORITY_CA_FILE", "").strip() or None
        ssl_context = _authority_ssl(ca_file)
        allowed = env.get("ALLOWED_TENANTS", "").replace(",", " ").split()
        audiences = {client_id, env.get("API_APP_ID_URI", "").strip() or f"api://{client_id}"}
        validator = grpc_obo.ValidatorOptions(
            tenant="organizations" if allowed else tenant,
            allowed_tenants=frozenset(allowed) if allowed else None,
            audiences=frozenset(audiences),
            authority_host=authority_host,
            # Only Entra's v1 issuer is sts.windows.net; another authority issues both versions.
            v1_issuer_host="https://sts.windows.net" if authority_host == ENTRA else authority_host,
            ssl_context=ssl_context,
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
            client = grpc_obo.ConfidentialClient.from_env(env, ca_file=ca_file)
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


def _authority_ssl(ca_file: str | None) -> ssl.SSLContext | None:
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError):
        raise grpc_obo.ConfigurationError(
            f"AUTHORITY_CA_FILE ({ca_file}) is not a readable PEM CA certificate"
        ) from None


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
