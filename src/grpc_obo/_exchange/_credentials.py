"""How the middle tier proves who it is: `ClientCredential` and `ConfidentialClient`.

A credential is a client secret, a certificate (PEM or PKCS12 key + certificate, optionally
sending the chain for subject-name/issuer authentication; from a file, re-read when it changes),
a federated token file (workload identity), a managed identity's token (MSAL's managed identity
client), or an assertion callback. A `ConfidentialClient` takes one or an ordered list and uses
the first that works (`_sources.py`). Every repr is redacted. `ConfidentialClient.from_env()`
reads the AZURE_* variables as azure-identity does, and only when called: nothing reads the
environment implicitly. Errors name the file or the variable, never a secret's value.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from grpc_obo._common import is_guid, with_scheme
from grpc_obo._errors import ConfigurationError, TokenExchangeError
from grpc_obo._exchange._sources import (
    AssertionCallback,
    CertificateFile,
    FederatedTokenFile,
    Fixed,
    ManagedIdentityAssertion,
    Source,
)
from grpc_obo._identity import SecretToken

__all__ = ["ClientCredential", "ConfidentialClient", "explain_refusal"]

# A verified domain name (contoso.onmicrosoft.com, contoso.com): Entra takes one in place of
# the tenant GUID in an authority URL. Every Entra domain has a dot; a bare word
# ("northwind") is not a tenant Entra knows, and fails at start-up rather than at the first call.
_TENANT_DOMAIN = re.compile(
    r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_HOST_RULE = "authority_host must be an https:// URL or a host name"
_TENANT_RULE = (
    "tenant must be the tenant GUID, a verified domain name (contoso.onmicrosoft.com) or "
    "'organizations'"
)


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
            raise ConfigurationError("a client secret must be a non-empty string")
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
        try:
            key = serialization.load_pem_private_key(private_key_pem, password=passphrase)
            cert = x509.load_pem_x509_certificate(certificate_pem)
        except (ValueError, TypeError):
            raise ConfigurationError(
                "the client certificate or its private key could not be loaded"
            ) from None
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        cert_public = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if public != cert_public:
            raise ConfigurationError("the private key does not belong to the certificate")
        if not isinstance(key, rsa.RSAPrivateKey):
            # MSAL signs client assertions with RS256 / PS256, as Entra requires.
            raise ConfigurationError("the client certificate's private key must be RSA")
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
        try:
            data = Path(path).read_bytes()
        except OSError:
            raise ConfigurationError(
                f"the client certificate file {str(path)!r} cannot be read"
            ) from None
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
            raise ConfigurationError(
                f"the client certificate file {str(path)!r} must hold a PEM private key and a "
                "certificate"
            )
        try:
            return cls.certificate(
                private_key_pem=key_pem[0],
                certificate_pem=b"".join(cert_pem),
                passphrase=passphrase,
                send_certificate_chain=send_certificate_chain,
            )
        except ConfigurationError as exc:
            raise ConfigurationError(f"{str(path)!r}: {exc}") from None

    @classmethod
    def _pkcs12(
        cls, data: bytes, path: str, passphrase: bytes | None, send_certificate_chain: bool
    ) -> ClientCredential:
        try:
            key, cert, chain = pkcs12.load_key_and_certificates(data, passphrase)
        except (ValueError, TypeError):
            raise ConfigurationError(
                f"the client certificate file {path!r} is neither PEM nor PKCS12 that opens with "
                "the given password (AZURE_CLIENT_CERTIFICATE_PASSWORD)"
            ) from None
        if key is None or cert is None:
            raise ConfigurationError(
                f"the PKCS12 file {path!r} must hold a private key and its certificate"
            )
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
            raise ConfigurationError(f"{path!r}: {exc}") from None

    @classmethod
    def assertion(cls, callback: Callable[[], str]) -> ClientCredential:
        """A callback returning a fresh signed client assertion (e.g. a federated token).

        A JWT it returns is reused until shortly before its `exp`; anything else is asked for
        again on every token request."""
        if not callable(callback):
            raise ConfigurationError("the assertion callback must be callable")
        return cls("assertion", _callback=callback)

    @classmethod
    def federated_token_file(cls, path: str | Path) -> ClientCredential:
        """Workload identity federation: the file (AZURE_FEDERATED_TOKEN_FILE) holds a token from
        an issuer the app registration has a federated credential for (a Kubernetes
        service-account token the kubelet rotates). Re-read whenever it changes, never sent
        past its `exp`. A missing file is not an error here: it makes the source unavailable
        (the next source in the list is used)."""
        text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
        if not text or not text.strip():
            raise ConfigurationError("the federated token file must be a path")
        return cls("federated_token_file", _path=text)

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
            raise ConfigurationError("a managed identity's client_id must be a GUID")
        return cls("managed_identity", _identity=client_id)

    def source(self, *, ca_file: str | None, timeout: float, clock: Callable[[], float]) -> Source:
        """Where this credential comes from at each token request (see `_sources.py`)."""
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
            raise ConfigurationError(
                f"the client certificate file {path!r} cannot be read"
            ) from None
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


@dataclass(frozen=True, kw_only=True)
class ConfidentialClient:
    """The middle tier's app registration: who exchanges tokens, where, and with what."""

    client_id: str
    tenant: str
    """The app's home tenant: its GUID, a verified domain name or 'organizations' (as
    `ValidatorOptions(tenant=...)`)."""
    credential: ClientCredential | Sequence[ClientCredential] = field(repr=False)
    """One credential, or several in order: the first that works is used for each token
    request, with one WARNING when it falls back (see `credentials`)."""
    authority_host: str = "https://login.microsoftonline.com"
    """The authority's host; a bare host (`login.microsoftonline.us`) means https, as in
    azure-identity."""
    client_capabilities: tuple[str, ...] = ("cp1",)
    """Declared to the authority (`xms_cc` in the tokens it issues). `cp1`, the default, says
    this service handles claims challenges, which grpc_obo does (it evicts, exchanges again
    with the claims, relays what only the user can satisfy): Entra then issues long-lived
    Continuous Access Evaluation tokens that a resource (Microsoft Graph) revokes at once on a
    critical event. Pass `()` to opt out (short-lived tokens, revocation at their expiry)."""
    ca_file: str | None = None
    """Trust exactly this CA file for the authority (the dev authority's, a corporate one), as
    `ValidatorOptions(ca_file=...)` does for key fetches; None trusts requests' default CAs."""
    http_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not is_guid(self.client_id):
            raise ConfigurationError(
                "client_id must be the app registration's GUID", setting="client_id"
            )
        if not isinstance(self.tenant, str):
            raise ConfigurationError(_TENANT_RULE, setting="tenant")
        if self.tenant.lower() in ("common", "consumers"):
            raise ConfigurationError(
                "On-Behalf-Of needs the middle tier's tenant (or 'organizations'), not "
                f"{self.tenant!r}",
                setting="tenant",
            )
        if not (
            is_guid(self.tenant)
            or _TENANT_DOMAIN.match(self.tenant)
            or self.tenant.lower() == "organizations"
        ):
            raise ConfigurationError(_TENANT_RULE, setting="tenant")
        if not isinstance(self.authority_host, str) or not self.authority_host.strip():
            raise ConfigurationError(_HOST_RULE, setting="authority_host")
        host = with_scheme(self.authority_host)
        if not host.startswith("https://"):
            raise ConfigurationError(_HOST_RULE, setting="authority_host")
        object.__setattr__(self, "authority_host", host)
        ca_file: object = self.ca_file
        if isinstance(ca_file, os.PathLike):  # a Path works too
            object.__setattr__(self, "ca_file", os.fspath(ca_file))
        given = self.credential
        listed: object = (given,) if isinstance(given, ClientCredential) else given
        if (
            isinstance(listed, (str, bytes))
            or not isinstance(listed, Sequence)
            or not listed
            or not all(isinstance(c, ClientCredential) for c in listed)
        ):
            raise ConfigurationError(
                "credential must be a ClientCredential or a non-empty list of them"
            )
        if not isinstance(given, ClientCredential):
            object.__setattr__(self, "credential", tuple(listed))
        if not all(isinstance(c, str) and c.isalnum() for c in self.client_capabilities):
            raise ConfigurationError("client_capabilities is a tuple such as ('cp1',)")
        if self.http_timeout <= 0:
            raise ConfigurationError("http_timeout must be positive")

    @property
    def credentials(self) -> tuple[ClientCredential, ...]:
        """The credential sources in the order they are tried."""
        given = self.credential
        return (given,) if isinstance(given, ClientCredential) else tuple(given)

    @property
    def authority(self) -> str:
        """The home tenant's authority (client credentials use it)."""
        return self.authority_for(self.tenant)

    def authority_for(self, tenant: str) -> str:
        """The authority of `tenant`: On-Behalf-Of goes to the tenant that issued the token."""
        return f"{self.authority_host}/{tenant}"

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        client_capabilities: tuple[str, ...] = ("cp1",),
        ca_file: str | None = None,
    ) -> ConfidentialClient:
        """Read AZURE_TENANT_ID, AZURE_CLIENT_ID and the credentials from the environment.

        Every credential that is set becomes a source, tried in this order for each token
        request (the first that works is used; one WARNING when it falls back):
        AZURE_FEDERATED_TOKEN_FILE (workload identity: re-read when it changes, never used past
        its exp); GRPC_OBO_MANAGED_IDENTITY_CLIENT_ID (a user-assigned managed identity's client
        id: its token for api://AzureADTokenExchange, from MSAL's managed identity client, is the
        assertion); AZURE_CLIENT_CERTIFICATE_PATH, a PEM or PKCS12 (.pfx/.p12) file (with
        AZURE_CLIENT_CERTIFICATE_PASSWORD, AZURE_CLIENT_SEND_CERTIFICATE_CHAIN; re-read when it
        changes); AZURE_CLIENT_SECRET.
        AZURE_AUTHORITY_HOST overrides the authority host (a bare host means https).
        GRPC_OBO_CA_FILE (unless `ca_file` is given) trusts exactly that CA, as
        `ValidatorOptions.from_env()` does. Errors name the variable, never its value.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def need(name: str) -> str:
            value = get(name)
            if value is None:
                raise ConfigurationError(f"{name} is not set")
            return value

        def named(variable: str, exc: ConfigurationError) -> ConfigurationError:
            return ConfigurationError(f"{variable}: {exc}", setting=exc.setting)

        tenant, client_id = need("AZURE_TENANT_ID"), need("AZURE_CLIENT_ID")
        # Secretless first, as the order and Microsoft.Identity.Web's examples have it.
        sources: list[ClientCredential] = []
        if get("AZURE_FEDERATED_TOKEN_FILE"):
            sources.append(
                ClientCredential.federated_token_file(need("AZURE_FEDERATED_TOKEN_FILE"))
            )
        if get("GRPC_OBO_MANAGED_IDENTITY_CLIENT_ID"):
            try:
                sources.append(
                    ClientCredential.managed_identity(need("GRPC_OBO_MANAGED_IDENTITY_CLIENT_ID"))
                )
            except ConfigurationError as exc:
                raise named("GRPC_OBO_MANAGED_IDENTITY_CLIENT_ID", exc) from None
        if get("AZURE_CLIENT_CERTIFICATE_PATH"):
            password = env.get("AZURE_CLIENT_CERTIFICATE_PASSWORD")
            try:
                sources.append(
                    ClientCredential.certificate_file(
                        need("AZURE_CLIENT_CERTIFICATE_PATH"),
                        passphrase=password.encode() if password else None,
                        send_certificate_chain=env.get(
                            "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", ""
                        ).lower()
                        in ("1", "true"),
                    )
                )
            except ConfigurationError as exc:
                raise named("AZURE_CLIENT_CERTIFICATE_PATH", exc) from None
        if env.get("AZURE_CLIENT_SECRET"):
            sources.append(ClientCredential.secret(env["AZURE_CLIENT_SECRET"]))
        if not sources:
            raise ConfigurationError(
                "set AZURE_FEDERATED_TOKEN_FILE, GRPC_OBO_MANAGED_IDENTITY_CLIENT_ID, "
                "AZURE_CLIENT_CERTIFICATE_PATH or AZURE_CLIENT_SECRET"
            )
        credential = sources[0] if len(sources) == 1 else tuple(sources)
        if ca_file is None:
            ca_file = get("GRPC_OBO_CA_FILE")
            if ca_file is not None and not os.path.exists(ca_file):
                raise ConfigurationError(f"GRPC_OBO_CA_FILE: ca_file {ca_file!r} does not exist")
        try:
            return cls(
                client_id=client_id,
                tenant=tenant,
                credential=credential,
                authority_host=get("AZURE_AUTHORITY_HOST") or _ENTRA,
                client_capabilities=client_capabilities,
                ca_file=ca_file,
            )
        except ConfigurationError as exc:
            variable = _FROM_ENV.get(exc.setting or "")
            if variable is None:
                raise
            raise named(variable, exc) from None


_ENTRA = "https://login.microsoftonline.com"
# The variable `from_env()` reads each setting from, to name it in a ConfigurationError.
_FROM_ENV = {
    "client_id": "AZURE_CLIENT_ID",
    "tenant": "AZURE_TENANT_ID",
    "authority_host": "AZURE_AUTHORITY_HOST",
}


# What each credential kind is called, and the variable `from_env()` reads it from.
_CREDENTIAL_SOURCES = {
    "secret": ("client secret", "AZURE_CLIENT_SECRET (or ClientCredential.secret)"),
    "certificate": (
        "client certificate",
        "AZURE_CLIENT_CERTIFICATE_PATH (or ClientCredential.certificate)",
    ),
    "assertion": (
        "client assertion",
        "AZURE_FEDERATED_TOKEN_FILE (or the ClientCredential.assertion callback)",
    ),
}
_CREDENTIAL_SOURCES["federated_token_file"] = (
    "federated token (client assertion)",
    "AZURE_FEDERATED_TOKEN_FILE (or ClientCredential.federated_token_file)",
)
_CREDENTIAL_SOURCES["managed_identity"] = (
    "managed identity's token (client assertion)",
    "GRPC_OBO_MANAGED_IDENTITY_CLIENT_ID (or ClientCredential.managed_identity)",
)
# Every assertion source is matched against the app's federated credentials alike.
_ADVICE_FOR = {"federated_token_file": "assertion", "managed_identity": "assertion"}
_CREDENTIAL_ADVICE = {
    "secret": "use the value of an unexpired secret of app {client_id}, not the secret's id",
    "certificate": "its certificate must be one uploaded to app {client_id}'s registration",
    "assertion": (
        "its issuer, subject and audience must match a federated credential of app {client_id}"
    ),
}
# AADSTS codes that mean the credential itself is wrong: 7000215 invalid secret, 7000222
# expired secret, 700027 assertion (certificate) not valid, 70021 no matching federated
# credential, 700213 no match for the subject, 700024 assertion out of its time range.
_CREDENTIAL_CODES = frozenset({7000215, 7000222, 700027, 70021, 700213, 700024})
_UNKNOWN_APP = 700016
_UNKNOWN_TENANT = 90002


def explain_refusal(
    client: ConfidentialClient, error: TokenExchangeError, tenant: str, source: int = 0
) -> TokenExchangeError:
    """`error` with a hint naming the setting (and `from_env()` variable) to fix, when the
    authority refused this client's own configuration; else `error` unchanged.

    The hint goes into `str()` (logs, start-up tracebacks), not into `message` (what a caller
    is told). It names variables, app and tenant ids: never a secret's value. `source` is the
    position, in `client.credentials`, of the credential the request was made with.
    """
    if error.hint is not None:
        return error
    codes = set(error.error_codes)
    hint: str | None = None
    if codes & _CREDENTIAL_CODES:
        code = min(codes & _CREDENTIAL_CODES)
        kind = client.credentials[min(source, len(client.credentials) - 1)].kind
        what, variable = _CREDENTIAL_SOURCES[kind]
        advice = _CREDENTIAL_ADVICE[_ADVICE_FOR.get(kind, kind)].format(client_id=client.client_id)
        hint = f"the authority refused the {what} (AADSTS{code}): check {variable}; {advice}"
    elif _UNKNOWN_APP in codes:
        hint = (
            f"the authority knows no application {client.client_id} in tenant {tenant} "
            "(AADSTS700016): check AZURE_CLIENT_ID (client_id) and AZURE_TENANT_ID (tenant)"
        )
    elif _UNKNOWN_TENANT in codes:
        hint = (
            f"the authority knows no tenant {tenant} (AADSTS90002): check AZURE_TENANT_ID "
            "(tenant), and AZURE_AUTHORITY_HOST (authority_host) for a national cloud"
        )
    if hint is None:
        return error
    return type(error)(
        error.message,
        error=error.error,
        suberror=error.suberror,
        error_codes=error.error_codes,
        correlation_id=error.correlation_id,
        claims=error.claims,
        hint=hint,
    )
