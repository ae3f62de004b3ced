"""A dev workload-identity issuer: what a Kubernetes cluster's service-account issuer and its
kubelet do for a pod that uses Microsoft Entra Workload ID.

- `WorkloadIssuer` is an OIDC issuer served by the dev authority at
  `{authority}/workload/<cluster>` (discovery and JWKS, over the authority's HTTPS and CA, the
  same paths as a cluster's `--service-account-issuer`). It signs service-account tokens
  (`sub` = `system:serviceaccount:<namespace>:<name>`, `aud` = `["api://AzureADTokenExchange"]`)
  with its own key: nothing in them comes from the authority's signing keys.
- `ProjectedToken` is the kubelet's part: it writes such a token into a file atomically
  (mode 0600) and writes a new one once 80% of the old one's lifetime has passed, as the kubelet
  does, driven by the issuer's clock: tests call `rotate_due()` after moving their clock; a
  running authority calls it from a timer (`WorkloadIssuers.run`).
- `pod_env()` is the environment the Workload ID webhook gives the pod: AZURE_FEDERATED_TOKEN_FILE,
  AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_AUTHORITY_HOST (and GRPC_OBO_CA_FILE for the dev CA).

An app accepts these tokens once it has a federated credential with issuer
`{authority_host}/workload/<cluster>` and the service account's subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web

from grpc_obo.devauthority._keys import SigningKey
from grpc_obo.devauthority._registrations import TOKEN_EXCHANGE_AUDIENCE, App, FederatedCredential

__all__ = ["ProjectedToken", "WorkloadIssuer", "WorkloadIssuers", "pod_env", "service_account"]

_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")  # a Kubernetes DNS label-ish name
_SUBJECT = re.compile(r"^system:serviceaccount:([^:]+):([^:]+)$")
ROTATE_AT = 0.8
"""The kubelet refreshes a projected token once this share of its lifetime has passed."""
DEFAULT_LIFETIME = 3600
"""Seconds a projected token is valid (the Workload ID webhook asks for one hour)."""


def service_account(subject: str) -> tuple[str, str] | None:
    """`(namespace, name)` of a `system:serviceaccount:<namespace>:<name>` subject, else None."""
    found = _SUBJECT.match(subject)
    return (found.group(1), found.group(2)) if found else None


class WorkloadIssuer:
    """One cluster's service-account issuer (see the module docstring)."""

    def __init__(
        self, cluster: str, *, base_url: Callable[[], str], clock: Callable[[], float]
    ) -> None:
        if not _NAME.match(cluster):
            raise ValueError(f"cluster name {cluster!r}: lower-case letters, digits, '-', '.'")
        self.cluster = cluster
        self.clock = clock
        self._base_url = base_url
        self.key = SigningKey.generate()
        self._uids: dict[tuple[str, str], str] = {}

    @property
    def url(self) -> str:
        """The issuer URL: what a federated credential names and every token's `iss`."""
        return f"{self._base_url()}/workload/{self.cluster}"

    @property
    def credential_issuer(self) -> str:
        """The issuer as a world file or `add_federated_credential` writes it (port-free)."""
        return f"{{authority_host}}/workload/{self.cluster}"

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": f"{self.url}/openid/v1/jwks",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def jwks(self) -> dict[str, Any]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.private_key.public_key(), as_dict=True)
        jwk.update({"kid": self.key.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def token(
        self,
        namespace: str,
        name: str,
        *,
        audience: str = TOKEN_EXCHANGE_AUDIENCE,
        lifetime: int = DEFAULT_LIFETIME,
    ) -> str:
        """A service-account token for `namespace`/`name`, shaped as a projected one."""
        if not (_NAME.match(namespace) and _NAME.match(name)):
            raise ValueError("namespace and service account are lower-case DNS names")
        if lifetime <= 0:
            raise ValueError("lifetime must be positive")
        now = int(self.clock())
        uid = self._uids.setdefault((namespace, name), str(uuid.uuid4()))
        claims = {
            "aud": [audience],
            "exp": now + lifetime,
            "iat": now,
            "nbf": now,
            "iss": self.url,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": name, "uid": uid},
            },
            "sub": f"system:serviceaccount:{namespace}:{name}",
        }
        return jwt.encode(
            claims, self.key.private_key, algorithm="RS256", headers={"kid": self.key.kid}
        )

    def project(
        self,
        path: str | os.PathLike[str],
        namespace: str,
        name: str,
        *,
        audience: str = TOKEN_EXCHANGE_AUDIENCE,
        lifetime: int = DEFAULT_LIFETIME,
    ) -> ProjectedToken:
        """Write a token for `namespace`/`name` to `path` now; it rotates from then on."""
        projected = ProjectedToken(
            issuer=self,
            path=Path(path).absolute(),
            namespace=namespace,
            name=name,
            audience=audience,
            lifetime=lifetime,
        )
        projected.write()
        return projected


@dataclass
class ProjectedToken:
    """A service-account token file the "kubelet" keeps fresh (see the module docstring)."""

    issuer: WorkloadIssuer
    path: Path
    namespace: str
    name: str
    audience: str
    lifetime: int
    issued_at: float = 0.0
    rotations: int = 0
    """How many times the file was rewritten after the first write."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def subject(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    @property
    def expires_at(self) -> float:
        return self.issued_at + self.lifetime

    @property
    def due_at(self) -> float:
        return self.issued_at + ROTATE_AT * self.lifetime

    def write(self) -> None:
        """Write a new token now (atomically: a reader sees the old file or the new one)."""
        with self._lock:
            self._write()

    def _write(self) -> None:
        # Called with self._lock held.
        token = self.issuer.token(
            self.namespace, self.name, audience=self.audience, lifetime=self.lifetime
        )
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".token-")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(token)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        if self.issued_at:
            self.rotations += 1
        self.issued_at = self.issuer.clock()

    def rotate_due(self) -> bool:
        """Write a new token if 80% of the current one's lifetime has passed."""
        with self._lock:  # the timer and a test may both ask: one rotation
            if self.issuer.clock() < self.due_at:
                return False
            self._write()
            return True


class WorkloadIssuers:
    """The dev authority's workload issuers by cluster, their routes and the rotation timer."""

    def __init__(self, *, base_url: Callable[[], str], clock: Callable[[], float]) -> None:
        self._base_url = base_url
        self._clock = clock
        self._issuers: dict[str, WorkloadIssuer] = {}
        self._projected: list[ProjectedToken] = []
        self._lock = threading.Lock()

    def issuer(self, cluster: str = "dev") -> WorkloadIssuer:
        """The issuer of `cluster`, created on first use (its key lives with the authority)."""
        with self._lock:
            found = self._issuers.get(cluster)
            if found is None:
                found = self._issuers[cluster] = WorkloadIssuer(
                    cluster, base_url=self._base_url, clock=self._clock
                )
            return found

    def project(
        self,
        path: str | os.PathLike[str],
        subject: str,
        *,
        cluster: str = "dev",
        lifetime: int = DEFAULT_LIFETIME,
    ) -> ProjectedToken:
        """Project a token for `subject` (`system:serviceaccount:<ns>:<name>`) into `path`;
        the timer of a running authority rotates it."""
        parsed = service_account(subject)
        if parsed is None:
            raise ValueError(f"{subject!r} is not system:serviceaccount:<namespace>:<name>")
        projected = self.issuer(cluster).project(path, *parsed, lifetime=lifetime)
        with self._lock:
            self._projected.append(projected)
        return projected

    def projected(self) -> list[ProjectedToken]:
        with self._lock:
            return list(self._projected)

    def rotate_due(self) -> int:
        """Rotate every projected token that is due; how many were rotated."""
        return sum(token.rotate_due() for token in self.projected())

    async def run(self, *, every: float = 5.0) -> None:
        """The kubelet's timer: check for due tokens every `every` seconds until cancelled."""
        while True:
            await asyncio.sleep(every)
            # File writes are small and rare: not worth a thread hop.
            self.rotate_due()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/workload/{cluster}/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/workload/{cluster}/openid/v1/jwks", self._jwks)

    def _known(self, request: web.Request) -> WorkloadIssuer:
        with self._lock:
            found = self._issuers.get(request.match_info["cluster"])
        if found is None:
            raise web.HTTPNotFound()
        return found

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response(self._known(request).discovery())

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self._known(request).jwks())

    def workload_credentials(self, app: App) -> Iterator[tuple[FederatedCredential, str]]:
        """`app`'s federated credentials that name a dev workload issuer, with its cluster."""
        prefix = "{authority_host}/workload/"
        for credential in app.federated_credentials:
            cluster = credential.issuer.removeprefix(prefix)
            if (
                credential.issuer.startswith(prefix)
                and _NAME.match(cluster)
                and service_account(credential.subject) is not None
            ):
                yield credential, cluster


def workload_dotenv(
    issuers: WorkloadIssuers, app: App, directory: Path, env: dict[str, str]
) -> dict[str, str] | None:
    """`env` (the app's `azure_env`) for a pod running as `app` with workload identity, or None
    when `app` has no federated credential on a dev workload issuer: a token for its first such
    credential's service account is projected into `directory/<app>.token` (rotated while the
    authority runs), and the secret or certificate is left out: the pod holds none."""
    found = next(issuers.workload_credentials(app), None)
    if found is None:
        return None
    credential, cluster = found
    token = issuers.project(directory / f"{app.name}.token", credential.subject, cluster=cluster)
    kept = {
        k: v
        for k, v in env.items()
        if k not in ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH")
    }
    return {**kept, **pod_env(app, token, authority_host=env["AZURE_AUTHORITY_HOST"])}


def pod_env(
    app: App, token: ProjectedToken, *, authority_host: str, ca_file: str | None = None
) -> dict[str, str]:
    """The environment the Workload ID webhook injects into a pod running as `app`."""
    env = {
        "AZURE_FEDERATED_TOKEN_FILE": str(token.path),
        "AZURE_CLIENT_ID": app.client_id,
        "AZURE_TENANT_ID": app.tenant_id,
        "AZURE_AUTHORITY_HOST": authority_host,
    }
    if ca_file is not None:
        env["GRPC_OBO_CA_FILE"] = ca_file
    return env
