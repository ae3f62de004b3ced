"""The records the dev authority's registrations are made of: tenants, app registrations
(`App`: client id, credentials, App ID URI, exposed scopes and roles, pre-authorized clients,
consented permissions, federated credentials, redirect URIs), users, and Microsoft Graph as a
resource like any other; with the rules a record obeys on its own (a redirect URI's form, the
pairwise `sub`). `World` (`_world.py`) holds them and changes them at run time.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
import secrets
import urllib.parse
import uuid
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
"""Microsoft Graph's well-known application id: the audience of tokens asked without a resource."""
GRAPH_APP_ID_URI = "https://graph.microsoft.com"
"""Microsoft Graph's App ID URI: `https://graph.microsoft.com/User.Read` names the same scope
as the unprefixed `User.Read`."""
MICROSOFT_SERVICES_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
"""The tenant Microsoft's first-party apps (Graph among them) are registered in."""


_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def new_guid() -> str:
    return str(uuid.uuid4())


def new_secret() -> str:
    # Shaped like Entra client secrets: 40 characters with a recognisable 3-character prefix.
    return "dev" + secrets.token_urlsafe(30)[:37]


@dataclass(frozen=True)
class ClientCertificate:
    """A client credential certificate. `private_key_pem` is None for one registered by a user."""

    certificate_pem: bytes
    private_key_pem: bytes | None = field(default=None, repr=False)

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate_pem)

    @property
    def thumbprint_sha1(self) -> bytes:
        return self.certificate.fingerprint(hashes.SHA1())  # noqa: S303 (x5t is SHA-1 by spec)

    @property
    def thumbprint_sha256(self) -> bytes:
        return self.certificate.fingerprint(hashes.SHA256())

    @property
    def thumbprint_hex(self) -> str:
        """The SHA-1 thumbprint in hex, the form MSAL's `client_credential` takes."""
        return self.thumbprint_sha1.hex().upper()

    @staticmethod
    def generate(subject: str, *, days: int = 30) -> ClientCertificate:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256())
        )
        return ClientCertificate(
            certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
            private_key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )


TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
"""The audience Entra expects in a federated credential's assertion unless told otherwise."""


@dataclass(frozen=True)
class FederatedCredential:
    """A federated identity credential (FIC) on an app registration: Entra accepts, as the app's
    client assertion, a token from `issuer` about `subject` for one of `audiences`.

    `issuer` may contain `{authority_host}`, replaced by the running authority's base URL (its
    port is known only at start): `{authority_host}/workload/<cluster>` is a dev workload
    issuer, `{authority_host}/<tenant id>/v2.0` the authority itself (managed identities).
    """

    name: str
    issuer: str
    subject: str
    audiences: tuple[str, ...] = (TOKEN_EXCHANGE_AUDIENCE,)


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str


@dataclass
class App:
    """An app registration. Mutable on purpose: tests change permissions at run time."""

    name: str
    client_id: str = field(default_factory=new_guid)
    tenant_id: str = ""
    public_client: bool = False
    secrets: list[str] = field(default_factory=list, repr=False)
    certificates: list[ClientCertificate] = field(default_factory=list, repr=False)
    app_id_uri: str | None = None
    scopes: frozenset[str] = frozenset()
    """Delegated scopes this app exposes as an API (e.g. `access_as_user`)."""
    app_roles: frozenset[str] = frozenset()
    """App roles this API defines (granted to client apps as application permissions)."""
    pre_authorized: dict[str, frozenset[str]] = field(default_factory=dict)
    """Client app id -> delegated scopes those clients may use without consent."""
    api_permissions: dict[str, frozenset[str]] = field(default_factory=dict)
    """Resource app id -> delegated scopes this app has (admin-consented) on that API."""
    app_role_assignments: dict[str, frozenset[str]] = field(default_factory=dict)
    """Resource app id -> app roles granted to this app (application permissions)."""
    access_token_version: int = 2
    """`accessTokenAcceptedVersion`: the shape of access tokens issued for this API."""
    multi_tenant: bool = True
    federated_credentials: list[FederatedCredential] = field(default_factory=list)
    """Issuer + subject pairs whose tokens this app accepts as its client assertion."""
    redirect_uris: tuple[str, ...] = ()
    """Where the authorization endpoint may send this client's codes (`http://localhost`
    matches any port, as Entra does for loopback redirect URIs)."""
    consent_free_scopes: frozenset[str] = frozenset()
    """Delegated scopes every client gets without a consent grant (Graph's `User.Read`: in
    Entra a user consents to it for themselves at first sign-in; the dev authority has no
    consent prompt)."""

    def __post_init__(self) -> None:
        if self.app_id_uri is None and (self.scopes or self.app_roles):
            self.app_id_uri = f"api://{self.client_id}"

    @property
    def is_confidential(self) -> bool:
        return not self.public_client

    def identifiers(self) -> set[str]:
        """Every string that names this app as a resource (client id, App ID URI)."""
        names = {self.client_id, f"api://{self.client_id}"}
        if self.app_id_uri:
            names.add(self.app_id_uri)
        return names


@dataclass
class User:
    username: str
    password: str = field(default_factory=new_secret, repr=False)
    oid: str = field(default_factory=new_guid)
    tenant_id: str = ""
    display_name: str = ""
    app_roles: dict[str, frozenset[str]] = field(default_factory=dict)
    """Resource app id -> app roles assigned to this user (appear in `roles` of user tokens)."""
    tokens_valid_from: float = 0.0
    """Entra's `TokensValidFrom` (Unix time): refresh tokens and sessions from before it are
    void. Moved by `World.revoke_sessions` and `World.set_password`."""
    revocations: int = field(default=0, repr=False)

    @property
    def credential_version(self) -> str:
        """Changes whenever the password changes (however it is set) or sessions are revoked:
        refresh tokens carry the version they were issued under. A digest, never the password."""
        digest = hashlib.sha256(f"{self.revocations}:{self.password}".encode())
        return digest.hexdigest()[:16]


# A representative part of Graph's permissions: delegated scopes and the app roles of the same
# names that daemons get (`https://graph.microsoft.com/.default`).
GRAPH_SCOPES = frozenset(
    {
        *("User.Read", "User.ReadBasic.All", "User.Read.All", "User.ReadWrite.All"),
        *("Mail.Read", "Mail.ReadWrite", "Mail.Send", "Calendars.Read", "Calendars.ReadWrite"),
        *("Files.Read", "Files.Read.All", "Files.ReadWrite", "Files.ReadWrite.All"),
        *("Sites.Read.All", "Group.Read.All", "Group.ReadWrite.All", "People.Read"),
        *("Directory.Read.All", "Directory.ReadWrite.All", "Contacts.Read", "Tasks.ReadWrite"),
    }
)
GRAPH_APP_ROLES = frozenset(
    {
        *("User.Read.All", "User.ReadWrite.All", "Mail.Read", "Mail.Send", "Files.Read.All"),
        *("Sites.Read.All", "Group.Read.All", "Directory.Read.All", "Directory.ReadWrite.All"),
    }
)


def microsoft_graph() -> App:
    """Microsoft Graph as a resource like any other: App ID URI `https://graph.microsoft.com`,
    v1 access tokens, and only `User.Read` (besides openid, profile, email, offline_access) given
    without consent; any other scope needs `grant_consent(client, "graph", [...])`."""
    return App(
        name="graph",
        client_id=GRAPH_APP_ID,
        tenant_id=MICROSOFT_SERVICES_TENANT,
        app_id_uri=GRAPH_APP_ID_URI,
        scopes=GRAPH_SCOPES,
        app_roles=GRAPH_APP_ROLES,
        access_token_version=1,
        consent_free_scopes=frozenset({"User.Read"}),
    )


def check_redirect_uri(uri: str) -> str:
    """`uri` if it can be a registered redirect URI: https, or http on a loopback host
    (Entra's rule), absolute, without a fragment; `ValueError` otherwise."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        raise ValueError(f"redirect URI {uri[:100]!r} is not a URL") from None
    loopback = parts.hostname in ("localhost", "127.0.0.1")
    if (
        not isinstance(uri, str)
        or len(uri) > 256
        or parts.fragment
        or not parts.hostname
        or not (parts.scheme == "https" or (parts.scheme == "http" and loopback))
    ):
        raise ValueError(
            f"redirect URI {uri[:100]!r} must be https (http only on localhost or 127.0.0.1), "
            "absolute, at most 256 characters, without a fragment"
        )
    return uri


def pairwise_sub(oid: str, app_client_id: str, tenant_id: str) -> str:
    """Entra's `sub`: stable per user *and* app, so two apps cannot correlate users by it."""
    digest = hashlib.sha256(f"{tenant_id}:{app_client_id}:{oid}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
