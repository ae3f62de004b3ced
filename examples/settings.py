"""What the example services need to know about the authority, read from one JSON document.

`grpc-obo authority --write-env authority.json` writes it; `DevAuthority.summary()` returns the
same document in-process. Against real Entra ID you would fill the same fields from your app
registrations (and take the credential from `ConfidentialClient.from_env()`).
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc_obo


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
    def ca_file(self) -> str:
        return str(self.document["ca_file"])

    def app(self, name: str) -> dict[str, Any]:
        app: dict[str, Any] = self.document["apps"][name]
        return app

    def scope(self, api: str, name: str) -> str:
        return f"{self.app(api)['app_id_uri']}/{name}"

    def validator_options(self, api: str) -> grpc_obo.ValidatorOptions:
        """How `api` validates the tokens it receives: its own audience, our tenants only."""
        app = self.app(api)
        return grpc_obo.ValidatorOptions(
            # Multi-tenant API: the demo world has a second tenant; accept exactly these two.
            tenant="organizations",
            allowed_tenants=frozenset(t["id"] for t in self.document["tenants"]),
            audiences=frozenset({app["client_id"], app["app_id_uri"]}),
            authority_host=self.authority_host,
            v1_issuer_host=self.authority_host,
            ssl_context=ssl.create_default_context(cafile=self.ca_file),
        )

    def confidential_client(self, api: str) -> grpc_obo.ConfidentialClient:
        """The middle tier's own credential (here its client secret) for On-Behalf-Of."""
        app = self.app(api)
        return grpc_obo.ConfidentialClient(
            client_id=app["client_id"],
            tenant_id=self.tenant_id,
            credential=grpc_obo.ClientCredential.secret(app["secrets"][0]),
            authority_host=self.authority_host,
            ca_file=self.ca_file,
        )
