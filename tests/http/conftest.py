"""Fixtures for the HTTP On-Behalf-Of tests: the dev authority, the Original API's view of its
users (tokens minted, then validated for real), its `OnBehalfOf`, and a REST downstream."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

import grpc_obo
from grpc_obo import Identity, TokenValidator, ValidatorOptions
from grpc_obo.devauthority import DevAuthority, default_world
from tests.http.downstream import Downstream

FAST = grpc_obo.RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.05, budget=5.0)


def options_for(authority: DevAuthority, api: str) -> ValidatorOptions:
    app = authority.world.app(api)
    return ValidatorOptions(
        tenant="organizations",
        allowed_tenants=frozenset(t.id for t in authority.world.tenants),
        audiences=frozenset({app.client_id, str(app.app_id_uri)}),
        authority_host=authority.base_url,
        v1_issuer_host=authority.base_url,
        ssl_context=authority.client_ssl_context(),
    )


@pytest_asyncio.fixture(scope="session")
async def original_validator(
    grpc_obo_authority_session: DevAuthority,
) -> AsyncIterator[TokenValidator]:
    async with TokenValidator(options_for(grpc_obo_authority_session, "original")) as validator:
        yield validator


@pytest_asyncio.fixture(scope="session")
async def downstream_validator(
    grpc_obo_authority_session: DevAuthority,
) -> AsyncIterator[TokenValidator]:
    async with TokenValidator(options_for(grpc_obo_authority_session, "downstream")) as validator:
        yield validator


class Users:
    """Signed-in users as the Original API sees them; every token is kept for the leak checks."""

    def __init__(self, authority: DevAuthority, validator: TokenValidator) -> None:
        self.authority = authority
        self.validator = validator
        self.secrets: list[str] = []

    def token(self, user: str = "alice", **options: Any) -> str:
        options.setdefault("scopes", ["access_as_user"])
        return self.remember(
            self.authority.mint_user_token(user, audience="original", client="client", **options)
        )

    async def identity(self, user: str = "alice", **options: Any) -> Identity:
        return await self.validator.validate(self.token(user, **options))

    def remember(self, token: str) -> str:
        self.secrets.extend((token, *token.split(".")[1:]))
        return token


@pytest.fixture
def users(grpc_obo_authority: DevAuthority, original_validator: TokenValidator) -> Users:
    return Users(grpc_obo_authority, original_validator)


@pytest.fixture
def client(grpc_obo_authority: DevAuthority) -> grpc_obo.ConfidentialClient:
    original = grpc_obo_authority.world.app("original")
    return grpc_obo.ConfidentialClient(
        client_id=original.client_id,
        tenant=grpc_obo_authority.tenant_id,
        credential=grpc_obo.ClientCredential.secret(original.secrets[0]),
        authority_host=grpc_obo_authority.base_url,
        ca_file=str(grpc_obo_authority.ca_file),
    )


@pytest.fixture
async def obo(client: grpc_obo.ConfidentialClient) -> AsyncIterator[grpc_obo.OnBehalfOf]:
    exchanger = grpc_obo.OnBehalfOf(client, retry=FAST)
    yield exchanger
    await exchanger.close()


@pytest.fixture
def read(grpc_obo_authority: DevAuthority) -> str:
    return f"{grpc_obo_authority.world.app('downstream').app_id_uri}/Data.Read"


@pytest.fixture
async def downstream(downstream_validator: TokenValidator) -> AsyncIterator[Downstream]:
    api = await Downstream(downstream_validator).start()
    yield api
    await api.stop()


@pytest.fixture
def no_secrets_logged(caplog: pytest.LogCaptureFixture, users: Users) -> Iterator[list[str]]:
    """Everything logged (any level) during the test is searched for every token it saw."""
    caplog.set_level(logging.DEBUG)
    yield users.secrets
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in users.secrets:
        assert secret not in text, "a token reached a log record"


# -- an authority of one test's own, on a clock the test moves (revocations) --------------


class SteppingClock:
    """Real time plus an offset the test moves forward (no test waits for the wall clock)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock()


@pytest.fixture
def authority(clock: SteppingClock) -> Iterator[DevAuthority]:
    with DevAuthority(world=default_world(), clock=clock).running_in_thread() as running:
        yield running


@pytest.fixture
async def validator(authority: DevAuthority) -> AsyncIterator[grpc_obo.TokenValidator]:
    async with grpc_obo.TokenValidator(options_for(authority, "original")) as validator:
        yield validator


def confidential(
    authority: DevAuthority, app: str = "original", **options: Any
) -> grpc_obo.ConfidentialClient:
    """`app`'s own credential (its client secret) for On-Behalf-Of."""
    found = authority.world.app(app)
    return grpc_obo.ConfidentialClient(
        client_id=found.client_id,
        tenant=authority.tenant_id,
        credential=grpc_obo.ClientCredential.secret(found.secrets[0]),
        authority_host=authority.base_url,
        ca_file=str(authority.ca_file),
        **options,
    )
