"""Fixtures for secretless middle tiers: one threaded dev authority, an external OIDC issuer
(its own HTTPS server, certificate from the authority's CA), apps registered per test.

Nothing here holds a client secret or private key for the apps under test: they authenticate
with federated credentials only.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import msal
import pytest
import requests
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from grpc_obo.devauthority import App, DevAuthority

TIMEOUT = 10.0
_names = itertools.count(1)


@pytest.fixture(scope="session")
def authority() -> Iterator[DevAuthority]:
    with DevAuthority().running_in_thread() as running:
        yield running


@pytest.fixture(autouse=True)
def _clean_authority(authority: DevAuthority) -> Iterator[None]:
    yield
    authority.faults.clear()
    authority.requests.clear()


class ExternalIssuer:
    """An OIDC issuer on its own HTTPS port (discovery + JWKS), like GitHub's or a cluster's."""

    def __init__(self, authority: DevAuthority, directory: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex
        self.served = authority.issue_server_certificate(directory, name="issuer")
        self.fetches = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/tenant-a/cluster-1"

    def start(self) -> ExternalIssuer:
        ready = threading.Event()

        async def serve() -> None:
            app = web.Application()
            app.router.add_get("/tenant-a/cluster-1/.well-known/openid-configuration", self._disc)
            app.router.add_get("/tenant-a/cluster-1/openid/v1/jwks", self._jwks)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._runner.setup()
            import ssl

            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.served.cert_file, self.served.key_file)
            site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
            await site.start()
            self.port = self._runner.addresses[0][1]
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()
            assert self._runner is not None
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(TIMEOUT)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(TIMEOUT)

    async def _disc(self, request: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response(
            {
                "issuer": self.url,
                "jwks_uri": f"{self.url}/openid/v1/jwks",
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return web.json_response({"keys": [jwk]})

    def mint(
        self,
        subject: str,
        *,
        audience: str | list[str] = "api://AzureADTokenExchange",
        lifetime: int = 3600,
        issued_at: float | None = None,
        issuer: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        now = int(time.time() if issued_at is None else issued_at)
        claims: dict[str, Any] = {
            "iss": issuer or self.url,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": self.kid})


@pytest.fixture(scope="session")
def issuer(
    authority: DevAuthority, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ExternalIssuer]:
    running = ExternalIssuer(authority, tmp_path_factory.mktemp("issuer")).start()
    yield running
    running.stop()


@pytest.fixture
def middle_tier(authority: DevAuthority) -> Iterator[App]:
    """A new confidential API with no secret and no certificate, allowed to call `downstream`
    On-Behalf-Of users and to call it as itself (app role)."""
    name = f"secretless-{next(_names)}"
    app = authority.world.add_app(
        name,
        scopes=["access_as_user"],
        secret=False,
        api_permissions={"downstream": ["Data.Read"]},
        app_role_assignments={"downstream": ["Data.Read.All"]},
        pre_authorized=None,
    )
    authority.world.grant_consent("client", name, ["access_as_user"])
    yield app
    authority.world.remove_app(name)


def msal_app(authority: DevAuthority, app: App, assertion: Any) -> Any:
    """MSAL as a middle tier uses it: `client_assertion` is a callable (a string is deprecated)."""
    produce = assertion if callable(assertion) else (lambda: assertion)
    return msal.ConfidentialClientApplication(
        app.client_id,
        client_credential={"client_assertion": produce},
        authority=authority.authority_url,
        instance_discovery=False,
        http_client=authority.msal_http_client(),
    )


def downstream_scope(authority: DevAuthority, name: str = "Data.Read") -> str:
    found = authority.world.app("downstream")
    return f"{found.app_id_uri}/{name}"


def raw_token_request(authority: DevAuthority, form: dict[str, str]) -> requests.Response:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(authority.ca_file)
    return session.post(authority.token_url, data=form, timeout=TIMEOUT)


def user_identity(authority: DevAuthority, app: App, user: str = "alice") -> Any:
    """`user` signed in to `app` (the middle tier), as its server interceptor would see them."""
    from grpc_obo import Identity, IdentityKind, SecretToken

    token = authority.mint_user_token(user, audience=app.name, scopes=["access_as_user"])
    claims = jwt.decode(token, options={"verify_signature": False})
    return Identity(
        tid=claims["tid"],
        oid=claims["oid"],
        sub=claims["sub"],
        kind=IdentityKind.USER,
        scopes=frozenset(claims["scp"].split()),
        audience=claims["aud"],
        issuer=claims["iss"],
        expires_at=claims["exp"],
        token=SecretToken(token),
    )


def confidential_client(authority: DevAuthority, app: App, credential: Any) -> Any:
    from grpc_obo import ConfidentialClient

    return ConfidentialClient(
        client_id=app.client_id,
        tenant=authority.tenant_id,
        credential=credential,
        authority_host=authority.base_url,
        ca_file=str(authority.ca_file),
    )


def verified(authority: DevAuthority, token: str, audience: str) -> dict[str, Any]:
    keys = jwt.PyJWKSet.from_dict(authority.jwks())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["RS256"], audience=audience, options={"verify_iss": False}
    )
    return claims
