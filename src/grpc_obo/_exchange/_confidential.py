"""`ConfidentialClient`: the middle tier's app registration (who exchanges, where, with what).

Checked at construction: the client id is a GUID, the tenant a GUID, a verified domain name or
'organizations' (On-Behalf-Of needs the middle tier's tenant, never 'common'), the authority
host https. `from_env()` reads the AZURE_* variables as azure-identity does, and only when
called: nothing reads the environment implicitly; its errors name the variable, never a value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from grpc_obo._common import is_guid, with_scheme
from grpc_obo._errors import ConfigurationError
from grpc_obo._errors._checks import a_number, a_path, strings
from grpc_obo._exchange._credentials import ClientCredential

__all__ = ["ConfidentialClient"]

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
        if self.ca_file is not None:
            object.__setattr__(self, "ca_file", a_path("ca_file", self.ca_file))  # a Path too
        given = self.credential
        listed: object = (given,) if isinstance(given, ClientCredential) else given
        if (
            isinstance(listed, (str, bytes))
            or not isinstance(listed, Sequence)
            or not listed
            or not all(isinstance(c, ClientCredential) for c in listed)
        ):
            # NOTE: never the value: a secret given where a ClientCredential belongs.
            raise ConfigurationError(
                "credential must be a ClientCredential or a non-empty list of them",
                setting="credential",
            )
        if not isinstance(given, ClientCredential):
            object.__setattr__(self, "credential", tuple(listed))
        capabilities = strings(
            "client_capabilities", self.client_capabilities, "capabilities such as ('cp1',)"
        )
        if not all(c.isalnum() for c in capabilities):
            raise ConfigurationError(
                "client_capabilities must be a list of capabilities such as ('cp1',)",
                setting="client_capabilities",
            )
        object.__setattr__(self, "client_capabilities", capabilities)
        timeout = a_number("http_timeout", self.http_timeout, above=True)
        object.__setattr__(self, "http_timeout", timeout)

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
        if not isinstance(env, Mapping):
            raise ConfigurationError(
                "environ must be a mapping of variable names to values (None: os.environ)",
                setting="environ",
            )

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def need(name: str) -> str:
            value = get(name)
            if value is None:
                setting = _SETTING_OF.get(name)
                raise ConfigurationError(
                    f"{name} is not set (the {setting})" if setting else f"{name} is not set",
                    setting=setting,
                )
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
                "AZURE_CLIENT_CERTIFICATE_PATH or AZURE_CLIENT_SECRET (the credential)",
                setting="credential",
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
_SETTING_OF = {variable: setting for setting, variable in _FROM_ENV.items()}
