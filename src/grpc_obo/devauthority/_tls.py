"""A throw-away certificate authority and server certificate for the dev authority's HTTPS.

MSAL refuses an `http://` authority, so the dev authority speaks TLS with a CA that clients trust
explicitly. Without a state directory the CA is new at every start and lives in a temporary
directory removed at stop; with one (`state_ca`), the CA (`ca.pem`, key `ca-key.pem` 0600) is kept
there and reused while it has more than a day left, so a CA file another process was told about
stays valid across restarts, and authorities sharing the directory share the CA. Without one, the
CA's key lives in memory only. The authority's own server certificate is new at every start and
never left on disk. `issue_server_certificate` signs certificates for other servers (the example
APIs' gRPC TLS) with the same CA, so whoever trusts the authority's CA file trusts them too. Keys
are ECDSA P-256: fast to generate and accepted by every TLS stack we talk to.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import ssl
import tempfile
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from grpc_obo.devauthority._private import check_private_file, secure_state_dir, write_private


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


_CA_NAME = "grpc_obo dev authority CA"


def _make_ca(days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(_CA_NAME))
        .issuer_name(_name(_CA_NAME))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
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
    return ca_cert, ca_key


def _make_server(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, days: int
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The authority's own HTTPS certificate: 127.0.0.1, ::1 and localhost."""
    now = datetime.datetime.now(datetime.UTC)
    return _sign_server(
        ca_cert,
        ca_key,
        common_name="127.0.0.1",
        names=[_san("127.0.0.1"), _san("::1"), _san("localhost")],
        not_after=now + datetime.timedelta(days=days),
    )


def _sign_server(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    common_name: str,
    names: list[x509.GeneralName],
    not_after: datetime.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new key and a TLS server certificate for `names`, signed by the CA (never past it)."""
    now = datetime.datetime.now(datetime.UTC)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(not_after, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return server_cert, server_key


# A DNS name: labels of letters, digits and inner hyphens, optionally a leading `*.` wildcard.
_DNS_NAME = re.compile(
    r"(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*",
    re.IGNORECASE,
)


def _san(host: str) -> x509.GeneralName:
    """An IP address SAN for an address (`::1`, `[::1]`, `10.0.0.7`), else a DNS name SAN."""
    text = host.strip()
    try:
        return x509.IPAddress(ipaddress.ip_address(text[1:-1] if text[:1] == "[" else text))
    except ValueError:
        pass
    if len(text) > 253 or not _DNS_NAME.fullmatch(text):
        raise ValueError(f"not an IP address or a DNS name: {host!r}")
    return x509.DNSName(text.lower())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_tls_files(directory: Path, *, days: int = 7) -> TlsFiles:
    """Create a CA and a server certificate for 127.0.0.1/::1/localhost in `directory`."""
    ca_cert, ca_key = _make_ca(days)
    server_cert, server_key = _make_server(ca_cert, ca_key, days)
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        ca_file=directory / "ca.pem",
        cert_file=directory / "server.pem",
        key_file=directory / "server-key.pem",
    )
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    write_private(files.key_file, _key_pem(server_key))
    return files


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` between processes (none where fcntl does not exist)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: one authority per state dir
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@dataclass(frozen=True)
class StateCa:
    """The CA kept in a state directory: `ca_file` is what clients trust."""

    ca_file: Path
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)


def state_ca(directory: Path, *, days: int = 30) -> StateCa:
    """The CA kept in `directory`: reused while it has more than a day left, else made anew.

    `ca.pem` (certificate) and `ca-key.pem` (key, 0600) are written atomically under a lock, so
    authorities starting together in one directory agree on one CA.
    """
    secure_state_dir(directory)
    ca_file, key_file = directory / "ca.pem", directory / "ca-key.pem"
    with _locked(directory / ".ca.lock"):
        # A key that is not ours alone (planted, or left readable) is never adopted.
        found = _load_ca(ca_file, key_file) if check_private_file(key_file) else None
        if found is not None:
            return StateCa(ca_file, *found)
        cert, key = _make_ca(days)
        write_private(key_file, _key_pem(key))
        # The certificate is public, but a world-readable file in a private directory helps no
        # one; clients run as the same user.
        write_private(ca_file, cert.public_bytes(serialization.Encoding.PEM))
        return StateCa(ca_file, cert, key)


def memory_ca(directory: Path, *, days: int = 7) -> StateCa:
    """A new CA whose key stays in memory; only its certificate is written (`ca.pem`)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = _make_ca(days)
    ca_file = directory / "ca.pem"
    write_private(ca_file, cert.public_bytes(serialization.Encoding.PEM))
    return StateCa(ca_file, cert, key)


@dataclass(frozen=True)
class ServerCertificate:
    """A TLS server certificate the dev authority issued: three PEM files.

    `cert_file` is the certificate (for `grpc.ssl_server_credentials`, `ssl.load_cert_chain`),
    `key_file` its private key (PKCS#8, unencrypted, mode 0600), `ca_file` the authority's CA
    certificate, which signed it: what the server's clients trust. Only paths: the key is never
    held, printed or logged here.
    """

    cert_file: Path
    key_file: Path
    ca_file: Path
    hosts: tuple[str, ...]
    """What the certificate names (its subject alternative names), as given."""
    not_valid_after: datetime.datetime
    """When it expires (UTC)."""


_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_RESERVED_NAMES = frozenset({"ca", "ca-key"})  # the CA's own files in a state directory


def issue_server_certificate(
    ca: StateCa,
    directory: str | os.PathLike[str],
    *,
    hosts: str | Iterable[str],
    name: str,
    valid_for: datetime.timedelta,
) -> ServerCertificate:
    """Sign a new server certificate for `hosts` with `ca`; write `<name>.pem`, `<name>-key.pem`.

    Each file is written atomically (a temporary file renamed into place) and readable by the
    owner only; the key first, so a certificate on disk never names a key not yet written.
    """
    if not _FILE_NAME.fullmatch(name) or name.lower() in _RESERVED_NAMES:
        raise ValueError(
            f"name {name!r}: use letters, digits, '.', '_' or '-' (not 'ca' or 'ca-key', the "
            "CA's files)"
        )
    wanted = (hosts,) if isinstance(hosts, str) else tuple(hosts)
    unique = tuple(dict.fromkeys(h.strip() for h in wanted))
    if not unique or "" in unique:
        raise ValueError("hosts: name at least one host, and no empty one")
    names = [_san(host) for host in unique]  # ValueError naming a bad host
    if valid_for <= datetime.timedelta(0):
        raise ValueError(f"valid_for must be positive, not {valid_for}")
    cert, key = _sign_server(
        ca.certificate,
        ca.key,
        common_name=name,
        names=names,
        not_after=datetime.datetime.now(datetime.UTC) + valid_for,
    )
    where = Path(directory).absolute()  # handed to other processes
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    issued = ServerCertificate(
        cert_file=where / f"{name}.pem",
        key_file=where / f"{name}-key.pem",
        ca_file=ca.ca_file,
        hosts=unique,
        not_valid_after=cert.not_valid_after_utc,
    )
    write_private(issued.key_file, _key_pem(key))
    write_private(issued.cert_file, cert.public_bytes(serialization.Encoding.PEM))
    return issued


def _load_ca(
    ca_file: Path, key_file: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        return None
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return (cert, key) if left > datetime.timedelta(days=1) else None


def server_ssl_context_from(ca: StateCa, *, days: int = 7) -> ssl.SSLContext:
    """A server context with a new certificate signed by `ca`; nothing of it stays on disk."""
    cert, key = _make_server(ca.certificate, ca.key, days)
    with tempfile.TemporaryDirectory(prefix="grpc-obo-tls-") as scratch:
        files = TlsFiles(ca.ca_file, Path(scratch) / "server.pem", Path(scratch) / "server-key.pem")
        files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_private(files.key_file, _key_pem(key))
        return server_ssl_context(files)


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
