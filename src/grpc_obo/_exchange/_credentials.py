"""How the middle tier proves who it is: `ClientCredential`.

A credential is a client secret, a certificate (PEM or PKCS12 key + certificate, optionally
sending the chain for subject-name/issuer authentication; from a file, re-read when it changes),
a federated token file (workload identity), a managed identity's token (MSAL's managed identity
client), or an assertion callback. A `ConfidentialClient` (`_confidential.py`) takes one or an
ordered list and uses the first that works (`_sources.py`). Every repr is redacted. Errors name
the file, never a secret's value.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from grpc_obo._common import is_guid
from grpc_obo._errors import ConfigurationError
from grpc_obo._errors._checks import a_bool, a_callable, a_path
from grpc_obo._exchange._source_kinds import (
    AssertionCallback,
    CertificateFile,
    FederatedTokenFile,
    Fixed,
    ManagedIdentityAssertion,
    Source,
)
from grpc_obo._identity import SecretToken

__all__ = ["ClientCredential"]


@dataclass(frozen=True, eq=False, repr=False)
class ClientCredential:
    """A client secret, a certificate (or certificate file), a federated token file, a managed
    identity, or an assertion callback. Build with the class methods."""

    kind: str
    """`secret`, `certificate`, `assertion`, `federated_token_file` or `managed_identity`."""
    _secret: SecretToken | None = None
    _key_pem: SecretToken | None = None
    _cert_pem: str | None = None
    _passphrase: SecretToken | None = None
    _send_x5c: bool = False
    _callback: Callable[[], str] | None = None
    _path: str | None = None
    """The certificate file (re-read when it changes) or the federated token file."""
    _file_passphrase: SecretToken | None = None
    _identity: str | None = None
    """A user-assigned managed identity's client id (None: system-assigned)."""

    @classmethod
    def secret(cls, value: str | SecretToken) -> ClientCredential:
        raw = value.reveal() if isinstance(value, SecretToken) else value
        if not isinstance(raw, str) or not raw:
            # NOTE: never the value (bytes or a number may still be the secret).
            raise ConfigurationError(
                "secret must be the client secret, a non-empty string", setting="secret"
            )
        return cls("secret", _secret=SecretToken(raw))

    @classmethod
    def certificate(
        cls,
        *,
        private_key_pem: bytes,
        certificate_pem: bytes,
        passphrase: bytes | None = None,
        send_certificate_chain: bool = False,
    ) -> ClientCredential:
        """A certificate credential. The key is checked to load and to match the certificate."""
        _passphrase_checked(passphrase)
        if passphrase is not None and not _is_utf8(passphrase):
            # NOTE: MSAL takes the passphrase as text; never the value in the message.
            raise ConfigurationError("passphrase must be UTF-8 text", setting="passphrase")
        a_bool("send_certificate_chain", send_certificate_chain)
        if not isinstance(private_key_pem, bytes) or not isinstance(certificate_pem, bytes):
            raise ConfigurationError(
                "certificate: private_key_pem and certificate_pem must be PEM bytes",
                setting="certificate",
            )
        try:
            key = serialization.load_pem_private_key(private_key_pem, password=passphrase)
            cert = x509.load_pem_x509_certificate(certificate_pem)
        except (ValueError, TypeError):
            raise ConfigurationError(
                "certificate: the client certificate or its private key could not be loaded",
                setting="certificate",
            ) from None
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        cert_public = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if public != cert_public:
            raise ConfigurationError(
                "certificate: the private key does not belong to the certificate",
                setting="certificate",
            )
        if not isinstance(key, rsa.RSAPrivateKey):
            # MSAL signs client assertions with RS256 / PS256, as Entra requires.
            raise ConfigurationError(
                "certificate: the client certificate's private key must be RSA",
                setting="certificate",
            )
        return cls(
            "certificate",
            _key_pem=SecretToken(private_key_pem.decode("ascii")),
            _cert_pem=certificate_pem.decode("ascii"),
            _passphrase=SecretToken(passphrase.decode()) if passphrase else None,
            _send_x5c=send_certificate_chain,
        )

    @classmethod
    def certificate_file(
        cls,
        path: str | Path,
        *,
        passphrase: bytes | None = None,
        send_certificate_chain: bool = False,
    ) -> ClientCredential:
        """A file with the private key and the certificate (AZURE_CLIENT_CERTIFICATE_PATH).

        PEM (key and certificate blocks, the key possibly encrypted with `passphrase`) or, as
        azure-identity reads it, PKCS12 (`.pfx` / `.p12`, protected by `passphrase` if at all):
        a file without a PEM block is read as PKCS12, whatever its name. Errors name the file.
        """
        path = a_path("certificate_file", path)
        _passphrase_checked(passphrase)
        a_bool("send_certificate_chain", send_certificate_chain)
        try:
            data = Path(path).read_bytes()
        except OSError:
            raise _file_error(path, "cannot be read") from None
        loaded = cls._load_file(data, str(path), passphrase, send_certificate_chain)
        return dataclasses.replace(
            loaded,
            _path=os.fspath(path),
            _file_passphrase=SecretToken(passphrase.decode("latin-1")) if passphrase else None,
        )

    @classmethod
    def _load_file(
        cls, data: bytes, path: str, passphrase: bytes | None, send_certificate_chain: bool
    ) -> ClientCredential:
        if b"-----BEGIN" not in data:
            return cls._pkcs12(data, str(path), passphrase, send_certificate_chain)
        key_pem = _pem_blocks(data, "PRIVATE KEY")
        cert_pem = _pem_blocks(data, "CERTIFICATE")
        if not key_pem or not cert_pem:
            raise _file_error(path, "must hold a PEM private key and a certificate")
        try:
            return cls.certificate(
                private_key_pem=key_pem[0],
                certificate_pem=b"".join(cert_pem),
                passphrase=passphrase,
                send_certificate_chain=send_certificate_chain,
            )
        except ConfigurationError as exc:
            raise _file_error(path, f"does not load ({exc})") from None

    @classmethod
    def _pkcs12(
        cls, data: bytes, path: str, passphrase: bytes | None, send_certificate_chain: bool
    ) -> ClientCredential:
        try:
            key, cert, chain = pkcs12.load_key_and_certificates(data, passphrase)
        except (ValueError, TypeError):
            raise _file_error(
                path,
                "is neither PEM nor PKCS12 that opens with the given password "
                "(AZURE_CLIENT_CERTIFICATE_PASSWORD)",
            ) from None
        if key is None or cert is None:
            raise _file_error(path, "is PKCS12 without a private key and its certificate")
        # NOTE: the key is kept decrypted in memory (as a SecretToken), as azure-identity does:
        # MSAL takes PEM, and the passphrase has done its job once the file is open.
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        certs = [cert, *chain]
        try:
            return cls.certificate(
                private_key_pem=key_pem,
                certificate_pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs),
                send_certificate_chain=send_certificate_chain,
            )
        except ConfigurationError as exc:
            raise _file_error(path, f"does not load ({exc})") from None

    @classmethod
    def assertion(cls, callback: Callable[[], str]) -> ClientCredential:
        """A callback returning a fresh signed client assertion (e.g. a federated token).

        A JWT it returns is reused until shortly before its `exp`; anything else is asked for
        again on every token request."""
        a_callable("assertion", callback, "a callable returning a signed client assertion")
        return cls("assertion", _callback=callback)

    @classmethod
    def federated_token_file(cls, path: str | Path) -> ClientCredential:
        """Workload identity federation: the file (AZURE_FEDERATED_TOKEN_FILE) holds a token from
        an issuer the app registration has a federated credential for (a Kubernetes
        service-account token the kubelet rotates). Looked at near its token's `exp` and once a
        minute before that, re-read when it changed (and at once when the authority refuses
        its token), never sent past its `exp`. A missing file is not an error here: it makes
        the source unavailable (the next source in the list is used)."""
        return cls("federated_token_file", _path=a_path("federated_token_file", path))

    @classmethod
    def managed_identity(cls, client_id: str | None = None) -> ClientCredential:
        """A managed identity's token (for api://AzureADTokenExchange) as the client assertion,
        obtained with MSAL's `ManagedIdentityClient` (App Service / Container Apps:
        IDENTITY_ENDPOINT and IDENTITY_HEADER, which MSAL reads; else IMDS). The app registration
        needs a federated credential for the identity (issuer: the tenant's
        `https://login.microsoftonline.com/<tenant>/v2.0`, subject: the identity's principal id).
        `client_id` names a user-assigned identity; None means the system-assigned one. MSAL
        reads IDENTITY_ENDPOINT / IDENTITY_HEADER from the process environment itself (also when
        `ConfidentialClient.from_env` was given a mapping)."""
        if client_id is not None and not is_guid(client_id):
            raise ConfigurationError(
                "managed_identity: a user-assigned managed identity's client_id must be a GUID",
                setting="managed_identity",
            )
        return cls("managed_identity", _identity=client_id)

    def source(self, *, ca_file: str | None, timeout: float, clock: Callable[[], float]) -> Source:
        """Where this credential comes from at each token request (see `_source_kinds.py`)."""
        if self.kind == "federated_token_file":
            return FederatedTokenFile(str(self._path), clock)
        if self.kind == "managed_identity":
            return ManagedIdentityAssertion(
                self._identity, ca_file=ca_file, timeout=timeout, clock=clock
            )
        if self.kind == "assertion" and self._callback is not None:
            return AssertionCallback(self._callback, clock)
        if self.kind == "certificate" and self._path is not None:
            return CertificateFile(self._path, self._reload)
        thumbprint = _thumbprint(self._cert_pem) if self._cert_pem else None
        label = "client secret" if self.kind == "secret" else f"certificate {thumbprint}"
        return Fixed(label, self.to_msal(), (self.kind, thumbprint))

    def _reload(self) -> tuple[Any, str]:
        """The certificate file as it is now: MSAL's credential and the thumbprint."""
        path = str(self._path)
        try:
            data = Path(path).read_bytes()
        except OSError:
            raise _file_error(path, "cannot be read") from None
        passphrase = (
            self._file_passphrase.reveal().encode("latin-1") if self._file_passphrase else None
        )
        loaded = self._load_file(data, path, passphrase, self._send_x5c)
        return loaded.to_msal(), _thumbprint(str(loaded._cert_pem))

    def to_msal(self) -> Any:
        """The `client_credential` value MSAL's ConfidentialClientApplication takes (secret,
        certificate, callback; the other kinds are resolved per request by `source()`)."""
        if self.kind in ("federated_token_file", "managed_identity"):
            raise ConfigurationError(f"a {self.kind} credential is resolved per token request")
        if self._secret is not None:
            return self._secret.reveal()
        if self._key_pem is not None:
            value: dict[str, Any] = {"private_key": self._key_pem.reveal()}
            if self._send_x5c:
                # With the certificate, MSAL signs PS256 with x5t#S256 and sends x5c.
                value["public_certificate"] = self._cert_pem
            else:
                cert = x509.load_pem_x509_certificate(str(self._cert_pem).encode())
                value["thumbprint"] = cert.fingerprint(_sha1()).hex().upper()
            if self._passphrase is not None:
                value["passphrase"] = self._passphrase.reveal()
            return value
        return {"client_assertion": self._callback}

    def __repr__(self) -> str:
        return f"ClientCredential(kind={self.kind!r}, value='**********')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("ClientCredential is not picklable")


def _passphrase_checked(passphrase: object) -> None:
    if passphrase is not None and not isinstance(passphrase, bytes):
        # NOTE: never the value: it is a password.
        raise ConfigurationError(
            "passphrase must be bytes (or None), e.g. password.encode()", setting="passphrase"
        )


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _file_error(path: str, what: str) -> ConfigurationError:
    """A certificate file's problem, naming the file (a path, never its contents)."""
    return ConfigurationError(
        f"certificate_file: the client certificate file {path!r} {what}",
        setting="certificate_file",
    )


def _thumbprint(cert_pem: str) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return str(cert.fingerprint(_sha1()).hex().upper())


def _sha1() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA1()  # noqa: S303 (the x5t thumbprint is SHA-1 by definition)


def _pem_blocks(data: bytes, label: str) -> list[bytes]:
    pattern = re.compile(
        rb"-----BEGIN ((?:ENCRYPTED |RSA |EC )?" + label.encode() + rb")-----.*?-----END \1-----",
        re.S,
    )
    return [match.group(0) + b"\n" for match in pattern.finditer(data)]
