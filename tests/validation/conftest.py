"""Fixtures for the validation tests: a fake clock, validators that get closed, the recorded Entra
data, and a counting discovery + JWKS server on 127.0.0.1 that can slow down or go down."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from grpc_obo import TokenValidator, ValidatorOptions
from tests.validation.tokens import API_CLIENT_ID, APP_ID_URI, TENANT, FakeClock, jwk, jwks

REPO_ROOT = Path(__file__).resolve().parents[2]


RECORDED_DIR = REPO_ROOT / "tests" / "data" / "entra"


@pytest.fixture(scope="session")
def recorded_dir() -> Path:
    """`tests/data/entra`: real Entra documents and expired tokens kept in the repository."""
    if not (RECORDED_DIR / "README.md").is_file():
        pytest.fail(f"recorded Entra data missing from {RECORDED_DIR}: the checkout is incomplete")
    return RECORDED_DIR


@pytest.fixture
def recorded(recorded_dir: Path) -> Callable[[str], Any]:
    """Load a recorded file: JSON documents parsed, tokens as stripped text."""

    def load(name: str) -> Any:
        text = (recorded_dir / name).read_text()
        return json.loads(text) if name.endswith(".json") else text.strip()

    return load


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def static_options(clock: FakeClock, **overrides: Any) -> ValidatorOptions:
    settings: dict[str, Any] = {
        "tenant": TENANT,
        "audiences": frozenset({API_CLIENT_ID, APP_ID_URI}),
        "versions": frozenset({"1.0", "2.0"}),
        "clock": clock,
        "jwks": jwks(jwk("key-a"), jwk("key-b")),
    }
    settings.update(overrides)
    return ValidatorOptions(**settings)


@pytest.fixture
async def make_validator(
    clock: FakeClock,
) -> AsyncIterator[Callable[..., TokenValidator]]:
    """Build validators (static JWKS of key-a and key-b by default); all closed afterwards."""
    made: list[TokenValidator] = []

    def make(**overrides: Any) -> TokenValidator:
        validator = TokenValidator(static_options(clock, **overrides))
        made.append(validator)
        return validator

    yield make
    for validator in made:
        await validator.close()


@pytest.fixture
async def validator(make_validator: Callable[..., TokenValidator]) -> TokenValidator:
    return make_validator()


class KeyServer:
    """Discovery + JWKS for one tenant on 127.0.0.1:<port>, counting requests.

    `jwks` may be replaced at any time (key rotation); `down` answers 503; `delay` slows each
    JWKS answer so concurrent callers really overlap.
    """

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = jwks(jwk("key-a"))
        self.down = False
        self.delay = 0.0
        self.discovery_requests = 0
        self.jwks_requests = 0
        self.jwks_path = "/common/discovery/v2.0/keys"
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def _discovery(self, request: web.Request) -> web.Response:
        return await self.discovery(request)

    async def discovery(self, request: web.Request) -> web.Response:
        self.discovery_requests += 1
        if self.down:
            return web.Response(status=503)
        tenant = request.match_info["tenant"]
        return web.json_response(
            {
                "issuer": f"{self.base_url}/{tenant}/v2.0",
                "jwks_uri": f"{self.base_url}{self.jwks_path}",
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def _keys(self, request: web.Request) -> web.Response:
        self.jwks_requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            return web.Response(status=503)
        return web.json_response(self.jwks)

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        app = web.Application()
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._discovery)
        app.router.add_get(self.jwks_path, self._keys)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = self._runner.addresses[0][1]
        scheme = "https" if ssl_context is not None else "http"
        self.base_url = f"{scheme}://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def key_server() -> AsyncIterator[KeyServer]:
    server = KeyServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def make_remote_validator(
    key_server: KeyServer, clock: FakeClock
) -> AsyncIterator[Callable[..., TokenValidator]]:
    """Validators whose authority is `key_server` (loopback http, explicitly allowed)."""
    made: list[TokenValidator] = []

    def make(**overrides: Any) -> TokenValidator:
        settings: dict[str, Any] = {
            "tenant": TENANT,
            "audiences": frozenset({API_CLIENT_ID, APP_ID_URI}),
            "versions": frozenset({"1.0", "2.0"}),
            "clock": clock,
            "authority_host": key_server.base_url,
            "allow_loopback_http": True,
            "http_timeout": 5.0,
        }
        settings.update(overrides)
        validator = TokenValidator(ValidatorOptions(**settings))
        made.append(validator)
        return validator

    yield make
    for validator in made:
        await validator.close()
