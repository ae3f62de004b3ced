"""What the examples need to know about the authority, read from one JSON document.

`python -m examples.authority --write-env authority.json` (or `grpc-obo authority --write-env`)
writes it; `DevAuthority.summary()` returns the same document in-process. `service_env()` turns
it into the environment an example API process reads (examples/config.py): against real Entra ID
you would set the same variables from your app registrations instead, and TLS_* from your own
certificates.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc_obo
from examples.world import STORE_SCOPES, VAULT_SCOPES

# Which registration each example API runs as, and the next hop it calls (prefix, registration,
# scopes).
REGISTRATIONS = {"workspace": "original", "store": "downstream", "vault": "vault"}
NEXT_HOPS = {
    "workspace": ("STORE", "downstream", STORE_SCOPES),
    "store": ("VAULT", "vault", VAULT_SCOPES),
}


@dataclass(frozen=True)
class Settings:
    document: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> Settings:
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))

    @property
    def authority_host(self) -> str:
        return str(self.document["authority_host"])

    @property
    def tenant_id(self) -> str:
        return str(self.document["tenant_id"])

    @property
    def tenants(self) -> list[str]:
        return [str(t["id"]) for t in self.document["tenants"]]

    @property
    def ca_file(self) -> str:
        return str(self.document["ca_file"])

    def app(self, name: str) -> dict[str, Any]:
        app: dict[str, Any] = self.document["apps"][name]
        return app

    def user(self, name: str) -> dict[str, Any]:
        user: dict[str, Any] = self.document["users"][name]
        return user

    def server_certificate(self, service: str) -> dict[str, str] | None:
        """The TLS certificate `python -m examples.authority` issued `service` (PEM paths:
        cert_file, key_file, ca_file), or None when the document has none."""
        found: dict[str, str] | None = self.document.get("server_certificates", {}).get(service)
        return found

    def workload_token(self, app: str) -> str | None:
        """The projected service-account token file the authority keeps fresh for `app`."""
        found: str | None = self.document.get("workload_tokens", {}).get(app)
        return found

    def middle_tier_credential(self, app: str) -> dict[str, str]:
        """How a middle tier proves itself: workload identity (AZURE_FEDERATED_TOKEN_FILE, no
        secret, no key) when the authority projected a token for it, else its client secret."""
        token_file = self.workload_token(app)
        if token_file is not None:
            return {"AZURE_FEDERATED_TOKEN_FILE": token_file}
        return {"AZURE_CLIENT_SECRET": self.app(app)["secrets"][0]}

    def scope(self, api: str, name: str) -> str:
        return f"{self.app(api)['app_id_uri']}/{name}"

    def validator_options(self, api: str) -> grpc_obo.ValidatorOptions:
        """How `api` validates the tokens it receives: its own audience, our tenants only."""
        app = self.app(api)
        return grpc_obo.ValidatorOptions(
            # Multi-tenant API: the demo world has a second tenant; accept exactly these two.
            tenant="organizations",
            allowed_tenants=frozenset(self.tenants),
            audiences=frozenset({app["client_id"], app["app_id_uri"]}),
            authority_host=self.authority_host,
            v1_issuer_host=self.authority_host,
            ssl_context=ssl.create_default_context(cafile=self.ca_file),
        )

    def confidential_client(self, api: str) -> grpc_obo.ConfidentialClient:
        """A middle tier's own credential for On-Behalf-Of: its workload identity token file
        when the document has one (`workload_tokens`), else its client secret."""
        app = self.app(api)
        token_file = self.workload_token(api)
        credential = (
            grpc_obo.ClientCredential.federated_token_file(token_file)
            if token_file is not None
            else grpc_obo.ClientCredential.secret(app["secrets"][0])
        )
        return grpc_obo.ConfidentialClient(
            client_id=app["client_id"],
            tenant=self.tenant_id,
            credential=credential,
            authority_host=self.authority_host,
            ca_file=self.ca_file,
        )

    def service_env(
        self,
        service: str,
        *,
        listen: str,
        next_address: str | None = None,
        tls: Mapping[str, str] | None = None,
        plaintext_loopback: bool = False,
    ) -> dict[str, str]:
        """The variables `python -m examples.<service>` reads, for this authority's world.

        TLS by default: TLS_CERT_FILE and TLS_KEY_FILE are the certificate the authority issued
        `service` (`server_certificate`), and for a middle tier TLS_CA_FILE is the authority's
        CA, which signed every API's certificate. `tls` gives those variables yourself.
        `plaintext_loopback=True` is the explicit opt-out (PLAINTEXT_LOOPBACK=1: loopback only,
        and the API logs a warning).
        """
        app = self.app(REGISTRATIONS[service])
        if plaintext_loopback:
            if tls is not None:
                raise ValueError("give tls or plaintext_loopback=True, not both")
            transport = {"PLAINTEXT_LOOPBACK": "1"}
        elif tls is not None:
            transport = dict(tls)
        else:
            issued = self.server_certificate(service)
            if issued is None:
                raise ValueError(
                    f"the authority's document has no certificate for {service} (see "
                    "examples/authority.py): give tls, or plaintext_loopback=True"
                )
            transport = {
                "TLS_CERT_FILE": issued["cert_file"],
                "TLS_KEY_FILE": issued["key_file"],
            }
            if service in NEXT_HOPS:  # whom the next hop's certificate must be signed by
                transport["TLS_CA_FILE"] = issued["ca_file"]
        env = {
            "AZURE_TENANT_ID": self.tenant_id,
            "AZURE_CLIENT_ID": app["client_id"],
            "AZURE_AUTHORITY_HOST": self.authority_host,
            "GRPC_OBO_CA_FILE": self.ca_file,
            "GRPC_OBO_AUDIENCES": f"{app['client_id']} {app['app_id_uri']}",
            "GRPC_OBO_ALLOWED_TENANTS": " ".join(self.tenants),
            "LISTEN_ADDRESS": listen,
            **transport,
        }
        if service in NEXT_HOPS:
            prefix, registration, scopes = NEXT_HOPS[service]
            if next_address is None:
                raise ValueError(f"{service} calls {registration}: give next_address")
            env.update(self.middle_tier_credential(REGISTRATIONS[service]))
            env[f"{prefix}_ADDRESS"] = next_address
            env[f"{prefix}_SCOPES"] = " ".join(self.scope(registration, s) for s in scopes)
        return env
