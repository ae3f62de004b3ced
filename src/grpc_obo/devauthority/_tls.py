"""A throw-away certificate authority and server certificate for the dev authority's HTTPS.

MSAL refuses an `http://` authority, so the dev authority speaks TLS with a CA it makes at start
and writes to a file that clients trust explicitly. Keys are ECDSA P-256: fast to generate and
accepted by every TLS stack we talk to.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files written for one authority instance."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "grpc_obo dev authority"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def write_tls_files(directory: Path, *, days: int = 7) -> TlsFiles:
    """Create a CA and a server certificate for 127.0.0.1/::1/localhost in `directory`."""
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(minutes=5)
    not_after = now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("grpc_obo dev authority CA"))
        .issuer_name(_name("grpc_obo dev authority CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        ca_file=directory / "ca.pem",
        cert_file=directory / "server.pem",
        key_file=directory / "server-key.pem",
    )
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.key_file.chmod(0o600)
    return files


def server_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert_file, files.key_file)
    return context


def client_ssl_context(ca_file: str | Path) -> ssl.SSLContext:
    """An SSL context that trusts exactly the given CA file (for aiohttp and friends)."""
    return ssl.create_default_context(cafile=str(ca_file))


class _AuthoritySession(requests.Session):
    """A session that puts the authority's port back on URLs MSAL builds without it.

    NOTE: MSAL builds the user-realm discovery URL of the password (ROPC) flow from the
    authority's host name alone (`https://{hostname}/common/userrealm/...`), dropping the port,
    so against an authority on a non-default port that request would go to port 443.
    """

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self._host = host
        self._port = port

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        text = url.decode() if isinstance(url, bytes) else url
        parts = urllib.parse.urlsplit(text)
        if parts.scheme == "https" and parts.hostname == self._host and parts.port is None:
            text = urllib.parse.urlunsplit(parts._replace(netloc=f"{self._host}:{self._port}"))
        return super().request(method, text, *args, **kwargs)


def msal_http_client(
    ca_file: str | Path, *, host: str | None = None, port: int | None = None
) -> requests.Session:
    """A `requests.Session` for MSAL's `http_client=` that trusts the given CA.

    With `host` and `port` (the dev authority's), port-less URLs MSAL builds for that host are
    sent to that port (see `_AuthoritySession`).

    NOTE: with `trust_env` on (the default), requests replaces a per-request `verify=None` with
    REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the environment, which outranks `session.verify`;
    MSAL passes no `verify`, so the CA would be silently ignored. `trust_env = False` makes the
    session's own `verify` authoritative (and keeps loopback traffic away from proxies).
    """
    session = (
        _AuthoritySession(host, port)
        if host is not None and port is not None
        else requests.Session()
    )
    session.trust_env = False
    session.verify = str(ca_file)
    return session
