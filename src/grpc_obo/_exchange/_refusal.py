"""`explain_refusal`: what to fix when the authority refuses this client's own configuration.

An AADSTS code that means the credential, the application or the tenant is wrong becomes a
hint on the error naming the setting and the `from_env()` variable to check (never a secret's
value): it goes into `str()` (logs, start-up tracebacks), not into `message` (what a caller
is told).
"""

from __future__ import annotations

from grpc_obo._errors import TokenExchangeError
from grpc_obo._exchange._confidential import ConfidentialClient

__all__ = ["explain_refusal"]

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
    """`error`, given a hint naming the setting (and `from_env()` variable) to fix when the
    authority refused this client's own configuration (the same object: its class, traceback
    and attributes stay as they were); else `error` unchanged.

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
    if hint is not None:
        error.hint = hint
    return error
