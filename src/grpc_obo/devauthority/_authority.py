"""`DevAuthority`: the local Entra-compatible authority as an async context manager or a thread.

It owns the TLS files, the key ring, the registrations, faults and request log, and serves them on
127.0.0.1 over HTTPS, with the dev workload issuers (`/workload/<cluster>`, `workloads`) and the
managed identity endpoint (`/managed-identity`, `managed_identities`) beside Entra's routes.
Tokens can also be minted directly (no HTTP) for tests that need a valid or deliberately broken
token fast. `summary()` and `azure_env()` describe it for other processes.

Files: without `state_dir`, a temporary directory (CA certificate, client certificates) removed
at stop; the CA's key is never written. With `state_dir`, the CA is kept there across restarts
(`ca.pem`, `ca-key.pem`), and each start writes its apps' client certificates as
`<app>-<thumbprint>.pem` (0600), removed at stop. The state directory is created 0700; one
owned by another user or writable by others is refused (`StateDirError`), and files are
written by mkstemp + rename, never through a planted symlink (`_private.py`).
`issue_server_certificate` writes where it is told and leaves its files alone at stop (they stay
valid while the CA does).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import re
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import requests
from aiohttp import web

from grpc_obo.devauthority._app import AuthorityApp
from grpc_obo.devauthority._default_world import default_world
from grpc_obo.devauthority._faults import Faults, RequestLog
from grpc_obo.devauthority._federation import Federation
from grpc_obo.devauthority._grants import Grants
from grpc_obo.devauthority._graph import GRAPH_PATH
from grpc_obo.devauthority._keys import KeyRing
from grpc_obo.devauthority._managed_identity import ManagedIdentities
from grpc_obo.devauthority._private import write_private
from grpc_obo.devauthority._registrations import App
from grpc_obo.devauthority._tls import (
    ServerCertificate,
    StateCa,
    client_ssl_context,
    issue_server_certificate,
    memory_ca,
    msal_http_client,
    server_ssl_context_from,
    state_ca,
)
from grpc_obo.devauthority._tokens import TokenMinter
from grpc_obo.devauthority._workload import WorkloadIssuers
from grpc_obo.devauthority._world import World
from grpc_obo.devauthority._worldfile import load_world


class DevAuthority:
    """A local authority that MSAL accepts as an Entra authority (with `instance_discovery=False`).

    ```
    async with DevAuthority() as authority:
        app = msal.PublicClientApplication(
            authority.world.app("client").client_id,
            authority=authority.authority_url,
            instance_discovery=False,
            http_client=authority.msal_http_client(),
        )
    ```
    """

    def __init__(
        self,
        *,
        world: World | str | os.PathLike[str] | None = None,
        port: int = 0,
        token_lifetime: int = 3600,
        key_size: int = 2048,
        clock: Callable[[], float] = time.time,
        state_dir: str | Path | None = None,
    ) -> None:
        # A path is a world file (TOML or JSON, see `load_world`).
        self.world = (
            default_world()
            if world is None
            else world
            if isinstance(world, World)
            else load_world(world)
        )
        self.world.clock = lambda: self.minter.clock()
        self.keys = KeyRing(key_size)
        self.faults = Faults()
        self.requests = RequestLog()
        self._port = port
        self._bound_port: int | None = None
        # Absolute: its paths are handed to processes that may run elsewhere.
        self._state_dir = Path(state_dir).absolute() if state_dir else None
        self._own_dir: str | None = None
        self._ca: StateCa | None = None
        self._credential_files: dict[str, str] = {}
        self._written: list[Path] = []  # files of this run in the state dir, removed at stop
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self.minter = TokenMinter(
            base_url=lambda: self.base_url, keys=self.keys, clock=clock, lifetime=token_lifetime
        )
        self.federation = Federation(
            world=self.world,
            base_url=lambda: self.base_url,
            ssl_context=self.client_ssl_context,
            clock=clock,
        )
        self.grants = Grants(
            world=self.world, minter=self.minter, faults=self.faults, federation=self.federation
        )
        self.workloads = WorkloadIssuers(base_url=lambda: self.base_url, clock=clock)
        """Dev workload-identity issuers (`{base_url}/workload/<cluster>`), see `_workload.py`."""
        self._workload_timer: asyncio.Task[None] | None = None
        self.managed_identities = ManagedIdentities(world=self.world, minter=self.minter)
        """User-assigned managed identities and their App Service-style endpoint."""

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> DevAuthority:
        if self._runner is not None:
            raise RuntimeError("the dev authority is already running")
        directory = self._state_dir
        if directory is None:
            self._own_dir = tempfile.mkdtemp(prefix="grpc-obo-authority-")
            directory = Path(self._own_dir)
            ca = memory_ca(directory)
        else:
            ca = state_ca(directory)
        context = server_ssl_context_from(ca)
        self._credential_files = self._write_client_certificates(directory)
        app = AuthorityApp(
            base_url=lambda: self.base_url,
            world=self.world,
            keys=self.keys,
            grants=self.grants,
            faults=self.faults,
            log=self.requests,
        ).build()
        self.workloads.add_routes(app)
        self.managed_identities.add_routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._port, ssl_context=context)
        await site.start()
        self._ca = ca
        self._runner = runner
        self._bound_port = runner.addresses[0][1]
        self._workload_timer = asyncio.get_running_loop().create_task(self.workloads.run())
        return self

    def _write_client_certificates(self, directory: Path) -> dict[str, str]:
        """Write each app's certificate + key (PEM, 0600) so other processes can use them."""
        written: dict[str, str] = {}
        for app in self.world.apps:
            for cert in app.certificates:
                if cert.private_key_pem is None:
                    continue
                # NOTE: named by thumbprint: authorities sharing a state dir never overwrite
                # each other's files.
                path = directory / f"{app.name}-{cert.thumbprint_hex[:12].lower()}.pem"
                write_private(path, cert.private_key_pem + cert.certificate_pem)
                self._written.append(path)
                written.setdefault(app.name, str(path))
        return written

    async def stop(self) -> None:
        timer, self._workload_timer = self._workload_timer, None
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        runner, self._runner = self._runner, None
        if runner is not None:
            server = runner.server
            open_transports = [
                h.transport for h in (server.connections if server else []) if h.transport
            ]
            await runner.cleanup()
            # NOTE: closing a TLS connection waits (up to 30 s) for the peer's close_notify,
            # which an idle keep-alive client never sends; a loop closed meanwhile (as
            # `running_in_thread` does) leaks the socket. Abort what is left, then yield once so
            # the transports' connection_lost callbacks close their sockets.
            for transport in open_transports:
                transport.abort()
            await asyncio.sleep(0)
        # NOTE: a stopped authority has no address: `port`/`base_url` raise rather than name a
        # port that another process may take next.
        self._bound_port = None
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None
        self._ca = None
        for path in self._written:
            with contextlib.suppress(OSError):
                path.unlink()
        self._written.clear()
        self._credential_files = {}

    async def __aenter__(self) -> DevAuthority:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def running_in_thread(self) -> Iterator[DevAuthority]:
        """Serve from a thread with its own event loop, for sync code and any test loop scope."""
        started = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # handed to the starting thread below
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        thread = threading.Thread(target=serve, name="grpc-obo-dev-authority", daemon=True)
        thread.start()
        started.wait()
        if failure:
            raise failure[0]
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)

    # -- where it is --------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("the dev authority is not running")
        return self._bound_port

    @property
    def base_url(self) -> str:
        """`https://127.0.0.1:PORT`, the authority host (Entra's `https://login.microsoftonline.com`)."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def graph_url(self) -> str:
        """The Graph-like API's base, `https://127.0.0.1:PORT/graph/v1.0` (Graph's own:
        `https://graph.microsoft.com/v1.0`): `GET {graph_url}/me`, with CAE."""
        return f"{self.base_url}{GRAPH_PATH}"

    @property
    def tenant_id(self) -> str:
        return self.world.home_tenant.id

    @property
    def authority_url(self) -> str:
        """Base URL plus the home tenant: what MSAL takes as `authority=`."""
        return self.authority_for()

    def authority_for(self, tenant: str | None = None) -> str:
        return f"{self.base_url}/{tenant or self.tenant_id}"

    def issuer(self, version: int = 2, tenant: str | None = None) -> str:
        return self.minter.issuer(tenant or self.tenant_id, version)

    @property
    def discovery_url(self) -> str:
        return f"{self.authority_url}/v2.0/.well-known/openid-configuration"

    @property
    def jwks_url(self) -> str:
        return f"{self.authority_url}/discovery/v2.0/keys"

    @property
    def token_url(self) -> str:
        return f"{self.authority_url}/oauth2/v2.0/token"

    @property
    def ca_file(self) -> Path:
        """The PEM CA certificate that clients must trust to talk to this authority."""
        if self._ca is None:
            raise RuntimeError("the dev authority is not running")
        return self._ca.ca_file

    def issue_server_certificate(
        self,
        directory: str | os.PathLike[str],
        *,
        hosts: str | Iterable[str] = ("127.0.0.1", "localhost", "::1"),
        name: str = "server",
        valid_for: datetime.timedelta = datetime.timedelta(hours=24),
    ) -> ServerCertificate:
        """A TLS server certificate for `hosts`, signed by this authority's CA, as PEM files.

        Writes `<directory>/<name>.pem` (the certificate) and `<directory>/<name>-key.pem` (its
        new ECDSA P-256 key, mode 0600), each atomically; the directory is created (0700) if
        missing. Addresses become IP address names, anything else DNS names. The certificate is
        for TLS servers only (extended key usage serverAuth, not a CA), valid for `valid_for`
        (24 hours; never past the CA, which lives 7 days, or 30 in a `state_dir`). Clients trust
        `ca_file`: the same CA file as the authority's own HTTPS, so a process configured for
        the authority (GRPC_OBO_CA_FILE) already has it.

        ```
        served = authority.issue_server_certificate(tmp_path, name="store")
        key, chain = served.key_file.read_bytes(), served.cert_file.read_bytes()
        server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, chain)]))
        channel = grpc.aio.secure_channel(
            address, grpc.ssl_channel_credentials(served.ca_file.read_bytes()))
        ```

        The files are the caller's: they stay at stop. Without `state_dir` the CA is new at
        every start, so certificates from an earlier run are not trusted by a later one.
        ValueError for a bad host, name (letters, digits, `.`, `_`, `-`) or validity;
        RuntimeError when the authority is not running.
        """
        if self._ca is None:
            raise RuntimeError("the dev authority is not running")
        return issue_server_certificate(
            self._ca, directory, hosts=hosts, name=name, valid_for=valid_for
        )

    def client_ssl_context(self) -> ssl.SSLContext:
        """An SSL context trusting this authority's CA (for aiohttp, the validator's key fetch)."""
        return client_ssl_context(self.ca_file)

    def msal_http_client(self) -> requests.Session:
        """A `requests.Session` for MSAL's `http_client=` that trusts this authority's CA."""
        return msal_http_client(self.ca_file, host="127.0.0.1", port=self.port)

    def jwks(self, *, version: int = 2) -> dict[str, Any]:
        """The JWKS document as served now, for validators configured with static keys."""
        suffix = "v2.0" if version == 2 else ""
        return self.keys.jwks(f"{self.base_url}/{{tenantid}}/{suffix}")

    # -- direct minting (no HTTP) -------------------------------------------------------

    def mint_user_token(
        self,
        user: str = "alice",
        *,
        audience: str = "original",
        client: str = "client",
        scopes: Iterable[str] | None = None,
        version: int | None = None,
        lifetime: int | None = None,
        capabilities: Iterable[str] = (),
        amr: Iterable[str] = ("pwd",),
        claims: Mapping[str, Any] | None = None,
        audience_claim: str | None = None,
    ) -> str:
        """A delegated access token for `user`, issued to `client` for the API `audience`.

        Default scopes are every delegated scope the API exposes. `claims` overrides or adds
        claims verbatim (set one to None-like values to build broken tokens in tests).
        """
        found = self.world.user(user)
        resource = self.world.app(audience)
        issued = self.minter.access_token(
            client=self.world.app(client),
            resource=resource,
            tenant_id=found.tenant_id,
            user=found,
            scopes=resource.scopes if scopes is None else scopes,
            version=version,
            client_auth="0" if self.world.app(client).public_client else "1",
            capabilities=capabilities,
            amr=amr,
            audience=audience_claim,
            lifetime=lifetime,
            extra=claims,
        )
        return issued.token

    def mint_app_token(
        self,
        client: str = "daemon",
        *,
        audience: str = "downstream",
        roles: Iterable[str] | None = None,
        version: int | None = None,
        lifetime: int | None = None,
        tenant: str | None = None,
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """An app-only access token (`roles`, `idtyp=app`) for `client` calling `audience`."""
        app: App = self.world.app(client)
        resource = self.world.app(audience)
        granted = (
            app.app_role_assignments.get(resource.client_id, frozenset())
            if roles is None
            else roles
        )
        issued = self.minter.access_token(
            client=app,
            resource=resource,
            tenant_id=tenant or app.tenant_id,
            roles=granted,
            version=version,
            client_auth="1",
            lifetime=lifetime,
            extra=claims,
        )
        return issued.token

    # -- description ----------------------------------------------------------------------

    def azure_env(self, app: str, *, include_secrets: bool = True) -> dict[str, str]:
        """What `app` needs in its environment to use this authority, under azure-identity's
        names where they exist: `ConfidentialClient.from_env()` and `ValidatorOptions.from_env()`
        read it with nothing else.

        `AZURE_TENANT_ID` (the app's tenant), `AZURE_CLIENT_ID`, `AZURE_AUTHORITY_HOST`,
        `GRPC_OBO_CA_FILE`, `GRPC_OBO_V1_ISSUER_HOST`; a confidential app's credential
        (`AZURE_CLIENT_SECRET`, or `AZURE_CLIENT_CERTIFICATE_PATH` when it has no secret); for an
        API, `GRPC_OBO_AUDIENCES` and `GRPC_OBO_TOKEN_VERSIONS`, and with several tenants
        `GRPC_OBO_ALLOWED_TENANTS` (every tenant of the world: a multi-tenant API); for each API
        it holds delegated permissions on, `GRPC_OBO_SCOPES_<API NAME>` (the full scopes, space
        separated: what a client app signs in for, what a middle tier exchanges for).
        """
        found = self.world.app(app)
        env = {
            "AZURE_TENANT_ID": found.tenant_id,
            "AZURE_CLIENT_ID": found.client_id,
            "AZURE_AUTHORITY_HOST": self.base_url,
            "GRPC_OBO_CA_FILE": str(self.ca_file),
            "GRPC_OBO_V1_ISSUER_HOST": self.base_url,
        }
        if found.secrets:
            env["AZURE_CLIENT_SECRET"] = found.secrets[0] if include_secrets else "**********"
        elif found.name in self._credential_files:
            env["AZURE_CLIENT_CERTIFICATE_PATH"] = self._credential_files[found.name]
        if found.scopes or found.app_roles:
            audiences = [found.client_id]
            if found.app_id_uri:
                audiences.append(found.app_id_uri)
            env["GRPC_OBO_AUDIENCES"] = ",".join(audiences)
            env["GRPC_OBO_TOKEN_VERSIONS"] = f"{found.access_token_version}.0"
            if len(self.world.tenants) > 1:
                env["GRPC_OBO_ALLOWED_TENANTS"] = ",".join(t.id for t in self.world.tenants)
        for resource_id, scopes in found.api_permissions.items():
            resource = self.world.find_app(resource_id)
            if resource is not None:
                prefix = resource.app_id_uri or resource.client_id
                name = re.sub(r"[^A-Z0-9]+", "_", resource.name.upper()).strip("_")
                env[f"GRPC_OBO_SCOPES_{name}"] = " ".join(f"{prefix}/{s}" for s in sorted(scopes))
        return env

    def summary(self, *, include_secrets: bool = True) -> dict[str, Any]:
        """What a client needs: URLs, tenant, CA file, apps and users (secrets on request)."""
        described = self.world.summary(include_secrets=include_secrets)
        for name, path in self._credential_files.items():
            described["apps"][name]["certificate_file"] = path
        return {
            "authority_host": self.base_url,
            "authority": self.authority_url,
            "tenant_id": self.tenant_id,
            "ca_file": str(self.ca_file),
            "issuer_v2": self.issuer(2),
            "issuer_v1": self.issuer(1),
            "jwks_uri": self.jwks_url,
            "token_endpoint": self.token_url,
            **described,
        }
