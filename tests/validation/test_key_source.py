"""The discovery + JWKS key source against a counting server on 127.0.0.1: refresh rules, single
flight, the random-`kid` flood bound, last good key set, rotation, and the https-only rule."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

import grpc_obo
from grpc_obo import TokenValidator, ValidatorOptions
from grpc_obo._validation._keys import RemoteKeySource
from tests.validation.conftest import KeyServer
from tests.validation.tokens import (
    API_CLIENT_ID,
    TENANT,
    FakeClock,
    b64url,
    jwk,
    jwks,
    mint,
    random_kid,
    record,
    v2_claims,
)
from tests.waiting import eventually

MakeRemote = Callable[..., TokenValidator]


def token_for(server: KeyServer, clock: FakeClock, key: str = "key-a", **claims: Any) -> str:
    return mint(v2_claims(int(clock.now), authority=server.base_url, **claims), key=key)


def unsigned_token(server: KeyServer, clock: FakeClock, kid: str) -> str:
    """A well-formed token naming `kid`, with a signature nobody will get to check."""
    import json

    head = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}).encode())
    body = b64url(json.dumps(v2_claims(int(clock.now), authority=server.base_url)).encode())
    return record(f"{head}.{body}.{b64url(bytes(256))}")


def source(validator: TokenValidator) -> RemoteKeySource:
    keys = validator.key_source
    assert isinstance(keys, RemoteKeySource)
    return keys


def refresh_settled(validator: TokenValidator) -> bool:
    """No key refresh in flight (the last one, if any, finished)."""
    task = source(validator)._refresh
    return task is None or task.done()


async def test_start_fetches_discovery_then_jwks_once(
    key_server: KeyServer, make_remote_validator: MakeRemote, clock: FakeClock
) -> None:
    validator = make_remote_validator()
    await validator.start()
    assert (key_server.discovery_requests, key_server.jwks_requests) == (1, 1)
    for _ in range(5):
        assert (await validator.validate(token_for(key_server, clock))).tid == TENANT
    assert (key_server.discovery_requests, key_server.jwks_requests) == (1, 1)


async def test_first_validate_fetches_lazily(
    key_server: KeyServer, make_remote_validator: MakeRemote, clock: FakeClock
) -> None:
    validator = make_remote_validator()
    assert await validator.validate(token_for(key_server, clock))
    assert key_server.jwks_requests == 1


async def test_unavailable_when_keys_were_never_fetched(
    key_server: KeyServer, make_remote_validator: MakeRemote, clock: FakeClock
) -> None:
    key_server.down = True
    validator = make_remote_validator()
    with pytest.raises(grpc_obo.KeySourceUnavailableError) as caught:
        await validator.start()
    assert grpc_obo.status_for(caught.value).name == "UNAVAILABLE"
    # A burst of requests while down costs no further fetches within the interval...
    results = await asyncio.gather(
        *(validator.validate(token_for(key_server, clock)) for _ in range(20)),
        return_exceptions=True,
    )
    assert all(isinstance(r, grpc_obo.KeySourceUnavailableError) for r in results)
    assert key_server.discovery_requests == 1
    # ...and once the authority is back and the interval has passed, it recovers.
    key_server.down = False
    clock.advance(301)
    assert await validator.validate(token_for(key_server, clock))


async def test_rotation_new_key_is_fetched_on_its_first_token(
    key_server: KeyServer, make_remote_validator: MakeRemote, clock: FakeClock
) -> None:
    validator = make_remote_validator()
    await validator.start()
    # The authority starts publishing key-b and signing with it right away.
    key_server.jwks = jwks(jwk("key-a"), jwk("key-b"))
    clock.advance(1)
    assert await validator.validate(token_for(key_server, clock, key="key-b"))
    assert await validator.validate(token_for(key_server, clock, key="key-a"))
    assert key_server.jwks_requests == 2


async def test_unknown_kid_refreshes_at_most_once_per_interval(
    key_server: KeyServer, make_remote_validator: MakeRemote, clock: FakeClock
) -> None:
    validator = make_remote_validator(unknown_kid_refresh_interval=300)
    await validator.start()
    with pytest.raises(grpc_obo.UnknownKeyError):
        await validator.validate(token_for(key_server, clock, key="key-b"))
    assert key_server.jwks_requests == 2
    # key-b appears, but the last unknown-kid refresh is under 300 s old: no fetch, refused.
    key_server.jwks = jwks(jwk("key-a"), jwk("key-b"))
    clock.advance(299)
    with pytest.raises(grpc_obo.UnknownKeyError):
        await validator.validate(token_for(key_server, clock, key="key-b"))
    assert key_server.jwks_requests == 2
    clock.advance(1)
    assert await validator.validate(token_for(key_server, clock, key="key-b"))
    assert key_server.jwks_requests == 3


async def test_random_kid_flood_costs_one_fetch_per_interval(
    key_server: KeyServer, make_remote_validator: MakeRemote, clock: FakeClock
) -> None:
    validator = make_remote_validator()
    await validator.start()
    key_server.delay = 0.05  # the fetch is slow, so the flood really overlaps it
    for round_ in range(2):
        tokens = [unsigned_token(key_server, clock, random_kid()) for _ in range(500)]
        results = await asyncio.gather(
            *(validator.validate(t) for t in tokens), return_exceptions=True
        )
        assert all(isinstance(r, grpc_obo.UnknownKeyError) for r in results), results[:3]
        assert key_server.jwks_requests == 1 + (round_ + 1)  # start + one per interval
        clock.advance(300)
    assert key_server.discovery_requests == 1


async def test_memory_of_missing_key_names_is_bounded(
    key_server: KeyServer, make_remote_validator: MakeRemote, clock: FakeClock
) -> None:
    validator = make_remote_validator()
    await validator.start()
    key_server.delay = 0.05  # one shared fetch for the whole flood
    kids = [random_kid() for _ in range(1500)]
    tokens = [unsigned_token(key_server, clock, kid) for kid in kids]
    results = await asyncio.gather(*(validator.validate(t) for t in tokens), return_exceptions=True)
    assert all(isinstance(r, grpc_obo.UnknownKeyError) for r in results), results[:3]
    assert key_server.jwks_requests == 2
    missing = source(validator)._missing
    assert len(missing) == 1024  # the oldest names are forgotten first
    assert f"kid:{kids[0]}" not in missing
    assert f"kid:{kids[-1]}" in missing


async def test_concurrent_callers_share_one_fetch(
    key_server: KeyServer, make_remote_validator: MakeRemote, clock: FakeClock
) -> None:
    validator = make_remote_validator()
    key_server.delay = 0.05
    tokens = [
        token_for(key_server, clock, oid=f"00000000-0000-0000-0000-{i:012d}") for i in range(50)
    ]
    identities = await asyncio.gather(*(validator.validate(t) for t in tokens))
    assert len({identity.oid for identity in identities}) == 50
    assert (key_server.discovery_requests, key_server.jwks_requests) == (1, 1)


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(
    key_server: KeyServer, make_remote_validator: MakeRemote, clock: FakeClock
) -> None:
    validator = make_remote_validator()
    key_server.delay = 0.1
    first = asyncio.ensure_future(validator.validate(token_for(key_server, clock)))
    second = asyncio.ensure_future(validator.validate(token_for(key_server, clock)))
    await eventually(lambda: key_server.jwks_requests == 1)  # both callers share it
    first.cancel()
    assert (await second).tid == TENANT
    with pytest.raises(asyncio.CancelledError):
        await first
    assert key_server.jwks_requests == 1


async def test_last_good_key_set_keeps_serving_when_the_authority_is_down(
    key_server: KeyServer, make_remote_validator: MakeRemote, clock: FakeClock
) -> None:
    validator = make_remote_validator(key_refresh_interval=3600, unknown_kid_refresh_interval=60)
    await validator.start()
    key_server.down = True
    for _ in range(3):
        clock.advance(3600)  # the scheduled refresh is due each time, and fails
        identity = await validator.validate(token_for(key_server, clock))
        assert identity.tid == TENANT
        await eventually(lambda: refresh_settled(validator))  # it ran, and failed
    attempts = key_server.discovery_requests + key_server.jwks_requests
    assert attempts <= 1 + 1 + 3 * 2  # start, then at most one attempt per due refresh
    # An unknown kid while down: refused as unknown (the keys we have still work).
    with pytest.raises(grpc_obo.UnknownKeyError):
        await validator.validate(token_for(key_server, clock, key="key-b"))
    assert await validator.validate(token_for(key_server, clock))


async def test_failed_refresh_while_down_is_retried_at_most_per_interval(
    key_server: KeyServer, make_remote_validator: MakeRemote, clock: FakeClock
) -> None:
    validator = make_remote_validator(key_refresh_interval=3600, unknown_kid_refresh_interval=60)
    await validator.start()
    key_server.down = True
    clock.advance(3600)
    before = key_server.discovery_requests + key_server.jwks_requests
    for _ in range(50):
        await validator.validate(token_for(key_server, clock))
        await asyncio.sleep(0)
    await eventually(lambda: refresh_settled(validator))
    # Fifty requests, one failed JWKS request: the next attempt waits for the interval.
    assert key_server.discovery_requests + key_server.jwks_requests - before == 1


async def test_scheduled_refresh_replaces_keys_and_drops_cached_tokens(
    key_server: KeyServer, make_remote_validator: MakeRemote, clock: FakeClock
) -> None:
    validator = make_remote_validator(key_refresh_interval=3600, unknown_kid_refresh_interval=60)
    await validator.start()
    token = mint(
        v2_claims(int(clock.now), authority=key_server.base_url, exp=int(clock.now) + 86400)
    )
    assert await validator.validate(token)
    # key-a is withdrawn (compromised or retired); the daily refresh notices.
    key_server.jwks = jwks(jwk("key-b"))
    clock.advance(3600)
    assert await validator.validate(token)  # still served while the refresh runs
    await eventually(lambda: refresh_settled(validator))
    assert key_server.jwks_requests == 2
    clock.advance(60)  # let the unknown-kid refresh (which finds nothing) be allowed
    with pytest.raises(grpc_obo.UnknownKeyError):
        await validator.validate(token)


async def test_empty_or_unusable_jwks_does_not_replace_good_keys(
    key_server: KeyServer, make_remote_validator: MakeRemote, clock: FakeClock
) -> None:
    validator = make_remote_validator()
    await validator.start()
    key_server.jwks = jwks(
        jwk("key-b", use="enc"),
        jwk("small", bits=1024),
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
        jwk("key-c", alg="PS256"),
    )
    with pytest.raises(grpc_obo.UnknownKeyError):
        await validator.validate(token_for(key_server, clock, key="key-b"))
    assert key_server.jwks_requests == 2
    assert await validator.validate(token_for(key_server, clock))


async def test_jwks_uri_must_be_https(
    key_server: KeyServer, make_remote_validator: MakeRemote, clock: FakeClock
) -> None:
    validator = make_remote_validator(allow_loopback_http=True)
    original = key_server.discovery

    async def evil_discovery(request: web.Request) -> web.Response:
        await original(request)
        return web.json_response({"jwks_uri": "http://example.com/keys"})

    key_server.discovery = evil_discovery  # type: ignore[method-assign]
    with pytest.raises(grpc_obo.KeySourceUnavailableError):
        await validator.start()


def test_plain_http_needs_a_loopback_ip_and_the_explicit_option() -> None:
    base: dict[str, Any] = {"tenant": TENANT, "audiences": {API_CLIENT_ID}}
    for host, allowed in [
        ("http://127.0.0.1:8080", False),
        ("http://localhost:8080", True),
        ("http://example.com", True),
        ("http://10.0.0.1", True),
        ("ftp://127.0.0.1", True),
    ]:
        with pytest.raises(grpc_obo.ConfigurationError):
            ValidatorOptions(**base, authority_host=host, allow_loopback_http=allowed)
    assert ValidatorOptions(**base, authority_host="http://127.0.0.1:1", allow_loopback_http=True)
    assert ValidatorOptions(**base, authority_host="http://[::1]:1", allow_loopback_http=True)


async def test_redirects_are_not_followed(
    make_remote_validator: MakeRemote, key_server: KeyServer
) -> None:
    async def redirect(request: web.Request) -> web.Response:
        key_server.discovery_requests += 1
        raise web.HTTPFound(location=f"{key_server.base_url}/elsewhere")

    key_server.discovery = redirect  # type: ignore[method-assign]
    validator = make_remote_validator()
    with pytest.raises(grpc_obo.KeySourceUnavailableError):
        await validator.start()


async def test_close_stops_the_source(
    key_server: KeyServer, make_remote_validator: MakeRemote, clock: FakeClock
) -> None:
    validator = make_remote_validator()
    await validator.start()
    await validator.close()
    await validator.close()  # idempotent
    with pytest.raises(grpc_obo.KeySourceUnavailableError):
        await validator.validate(token_for(key_server, clock, key="key-b"))


async def test_async_context_manager_closes(key_server: KeyServer, clock: FakeClock) -> None:
    options = ValidatorOptions(
        tenant=TENANT,
        audiences=frozenset({API_CLIENT_ID}),
        clock=clock,
        authority_host=key_server.base_url,
        allow_loopback_http=True,
    )
    async with TokenValidator(options) as validator:
        assert await validator.validate(token_for(key_server, clock))
        session = source(validator)._session
        assert session is not None
    assert session.closed


# -- https with a private CA: what the dev authority needs ----------------------------------


def _self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "grpc-obo test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_path, key_path)
    client_ctx = ssl.create_default_context(cafile=str(cert_path))
    return server_ctx, client_ctx


async def test_https_with_a_private_ca_needs_only_ssl_context(
    tmp_path: Path, clock: FakeClock
) -> None:
    server_ctx, client_ctx = _self_signed(tmp_path)
    server = KeyServer()
    await server.start(ssl_context=server_ctx)
    try:
        assert server.base_url.startswith("https://127.0.0.1:")
        settings: dict[str, Any] = {
            "tenant": TENANT,
            "audiences": frozenset({API_CLIENT_ID}),
            "clock": clock,
            "authority_host": server.base_url,
        }
        async with TokenValidator(ValidatorOptions(**settings, ssl_context=client_ctx)) as ok:
            assert (await ok.validate(token_for(server, clock))).tid == TENANT
        # Without the CA the certificate is not trusted: no keys, UNAVAILABLE.
        async with TokenValidator(ValidatorOptions(**settings)) as untrusting:
            with pytest.raises(grpc_obo.KeySourceUnavailableError):
                await untrusting.start()
    finally:
        await server.stop()
