"""Every configuration error is a `ConfigurationError` (a `ValueError`), raised at construction.

A value of the wrong type is a configuration error like any other: it must not escape as a
`TypeError` or `AttributeError` from deep inside a constructor (or, worse, pass and fail on the
first call). Each case below hands one public constructor one bad setting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from grpc_obo import (
    AppOnly,
    BearerAuthMiddleware,
    ClientCredential,
    ConfidentialClient,
    ConfigurationError,
    Identity,
    MemoryTokenStore,
    MethodPolicy,
    OnBehalfOf,
    Policy,
    RedisTokenStore,
    RetryPolicy,
    Telemetry,
    TokenCache,
    TokenSealer,
    TokenValidator,
    ValidatorOptions,
    http_requires,
    requires,
    server_interceptor,
)

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
API = "6e74172b-be56-4843-9ff4-e66a39bb12e3"


def options(**overrides: Any) -> ValidatorOptions:
    return ValidatorOptions(**{"tenant": TENANT, "audiences": frozenset({API}), **overrides})


def validator() -> TokenValidator:
    return TokenValidator(options())


async def _app(scope: Any, receive: Any, send: Any) -> None:
    return None


CASES: dict[str, Callable[[], object]] = {
    "options: audiences not a collection": lambda: options(audiences=1),
    "options: allowed_tenants not a collection": lambda: ValidatorOptions(
        tenant="organizations", audiences=frozenset({API}), allowed_tenants=1
    ),
    "options: versions not a collection": lambda: options(versions=2),
    "options: allowed_client_ids not a collection": lambda: options(allowed_client_ids=1),
    "options: ca_file not a path": lambda: options(ca_file=1),
    "options: jwks keys not a list": lambda: options(jwks={"keys": 1}),
    "options: leeway not a number": lambda: options(leeway="60"),
    "options: clock not callable": lambda: options(clock=1),
    "validator: not options": lambda: TokenValidator(1),  # type: ignore[arg-type]
    "validator: telemetry not Telemetry": lambda: TokenValidator(options(), telemetry=1),  # type: ignore[arg-type]
    "telemetry: identities": lambda: Telemetry(identities="all"),  # type: ignore[arg-type]
    "telemetry: tracer_provider": lambda: Telemetry(tracer_provider=1),  # type: ignore[arg-type]
    "rule: scopes not a collection": lambda: MethodPolicy(scopes=1),  # type: ignore[arg-type]
    "rule: app_roles not a collection": lambda: MethodPolicy(app_roles=None),  # type: ignore[arg-type]
    "rule: public not a bool": lambda: MethodPolicy(public="yes"),  # type: ignore[arg-type]
    "rule: callers": lambda: MethodPolicy(callers="users"),  # type: ignore[arg-type]
    "requires: scopes not a collection": lambda: requires(scopes=1),  # type: ignore[arg-type]
    "http_requires: scopes not a collection": lambda: http_requires(scopes=1),  # type: ignore[arg-type]
    "policy: methods not a mapping": lambda: Policy(methods=1),  # type: ignore[arg-type]
    "policy: methods a list": lambda: Policy(methods=[("/a.B/C", MethodPolicy())]),  # type: ignore[arg-type]
    "policy: public not a collection": lambda: Policy(public=1),  # type: ignore[arg-type]
    "policy: public holds a non-string": lambda: Policy(public=[1]),  # type: ignore[list-item]
    "policy: strict not a bool": lambda: Policy(strict="yes"),  # type: ignore[arg-type]
    "policy: builtin_public not a bool": lambda: Policy(builtin_public="no"),  # type: ignore[arg-type]
    "server: validator": lambda: server_interceptor(1),  # type: ignore[arg-type]
    "server: policy": lambda: server_interceptor(validator(), policy=1),  # type: ignore[arg-type]
    "server: telemetry": lambda: server_interceptor(validator(), telemetry=1),  # type: ignore[arg-type]
    "front door: validator": lambda: BearerAuthMiddleware(_app, validator=1),
    "front door: public_paths not a collection": lambda: BearerAuthMiddleware(
        _app,
        validator=validator(),
        public_paths=1,  # type: ignore[arg-type]
    ),
    "front door: telemetry": lambda: BearerAuthMiddleware(
        _app,
        validator=validator(),
        telemetry=1,  # type: ignore[arg-type]
    ),
}


@pytest.mark.parametrize("build", CASES.values(), ids=CASES.keys())
def test_a_bad_setting_is_a_configuration_error(build: Callable[[], object]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build()
    assert isinstance(caught.value, ValueError)
    assert caught.value.message  # a sentence that says what is wrong
    # ... about the setting it names
    assert caught.value.setting is not None and caught.value.setting in caught.value.message


# -- every setting of the outbound side and of the front doors, each error naming its setting --

SECRET = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzZWNyZXQifQ.c2lnbmF0dXJlLXNlY3JldA"
"""A token-like value handed where a number, a callable or an object belongs: no message may
quote it (a value in the wrong place may be a secret in the wrong place)."""
SEALING_KEY = b"k" * 32
NAN, INF = float("nan"), float("inf")


def confidential_client() -> ConfidentialClient:
    return ConfidentialClient(
        client_id=API, tenant=TENANT, credential=ClientCredential.secret(SECRET)
    )


class _SyncValidator:
    def validate(self, token: str) -> Identity:  # not a coroutine function
        raise AssertionError("never called")

    def cached(self, token: str) -> Identity | None:
        return None


class _Uncached:
    async def validate(self, token: str) -> Identity:
        raise AssertionError("never called")


class _Store:
    """Looks like a store but for `close`."""

    async def get(self, key: str) -> None:
        return None

    async def set(self, key: str, token: object, ttl: float) -> None:
        return None

    async def delete(self, key: str) -> None:
        return None


def _outbound_cases(kind: type[OnBehalfOf] | type[AppOnly]) -> dict[str, tuple[Any, str]]:
    name = kind.__name__
    scope = "api://downstream/.default"

    def made(**options: Any) -> OnBehalfOf | AppOnly:
        return kind(confidential_client(), **options)

    return {
        f"{name}: client not a ConfidentialClient": (lambda: kind(SECRET), "client"),  # type: ignore[arg-type]
        f"{name}: store not a store": (lambda: made(store=SECRET), "store"),
        f"{name}: store without close": (lambda: made(store=_Store()), "store"),
        f"{name}: retry not a RetryPolicy": (lambda: made(retry=SECRET), "retry"),
        f"{name}: max_workers a string": (lambda: made(max_workers=SECRET), "max_workers"),
        f"{name}: max_workers a bool": (lambda: made(max_workers=True), "max_workers"),
        f"{name}: max_workers a float": (lambda: made(max_workers=2.5), "max_workers"),
        f"{name}: max_workers zero": (lambda: made(max_workers=0), "max_workers"),
        f"{name}: channel scopes a string": (
            lambda: made().channel("127.0.0.1:1", scopes=SECRET),
            "scopes",
        ),
        f"{name}: interceptors scopes not a collection": (
            lambda: made().client_interceptors(scopes=1),  # type: ignore[arg-type]
            "scopes",
        ),
        f"{name}: method_scopes not a mapping": (
            lambda: made().client_interceptors(scopes=[scope], method_scopes=[SECRET]),  # type: ignore[arg-type]
            "method_scopes",
        ),
        f"{name}: method_scopes value a string": (
            lambda: made().client_interceptors(scopes=[scope], method_scopes={"a.B": SECRET}),
            "method_scopes",
        ),
        f"{name}: channel target not a string": (
            lambda: made().channel(1, scopes=[scope]),  # type: ignore[arg-type]
            "target",
        ),
        f"{name}: channel credentials not credentials": (
            lambda: made().channel("127.0.0.1:1", scopes=[scope], credentials=SECRET),  # type: ignore[arg-type]
            "credentials",
        ),
        f"{name}: channel interceptors not a list": (
            lambda: made().channel("127.0.0.1:1", scopes=[scope], interceptors=1),  # type: ignore[arg-type]
            "interceptors",
        ),
        f"{name}: channel interceptors hold a non-interceptor": (
            lambda: made().channel("127.0.0.1:1", scopes=[scope], interceptors=[SECRET]),  # type: ignore[list-item]
            "interceptors",
        ),
        f"{name}: channel options not pairs": (
            lambda: made().channel("127.0.0.1:1", scopes=[scope], options=[SECRET]),  # type: ignore[list-item]
            "options",
        ),
        f"{name}: channel compression a string": (
            lambda: made().channel("127.0.0.1:1", scopes=[scope], compression=SECRET),  # type: ignore[arg-type]
            "compression",
        ),
        f"{name}: http_auth scopes a string": (
            lambda: made().http_auth(scopes=SECRET),
            "scopes",
        ),
        f"{name}: http_auth timeout a string": (
            lambda: made().http_auth(scopes=[scope], timeout=SECRET),  # type: ignore[arg-type]
            "timeout",
        ),
        f"{name}: http_auth timeout NaN": (
            lambda: made().http_auth(scopes=[scope], timeout=NAN),
            "timeout",
        ),
    }


def client_with(**settings: Any) -> ConfidentialClient:
    given: dict[str, Any] = {
        "client_id": API,
        "tenant": TENANT,
        "credential": ClientCredential.secret("a-secret"),
    }
    return ConfidentialClient(**{**given, **settings})


_CLIENT: dict[str, tuple[Callable[[], object], str]] = {
    "client_capabilities a string": (
        lambda: client_with(client_capabilities="cp1"),
        "client_capabilities",
    ),
    "client_capabilities a number": (
        lambda: client_with(client_capabilities=1),
        "client_capabilities",
    ),
    "client_capabilities holds a secret": (
        lambda: client_with(client_capabilities=[SECRET]),
        "client_capabilities",
    ),
    "ca_file a number": (lambda: client_with(ca_file=1), "ca_file"),
    "ca_file empty": (lambda: client_with(ca_file=""), "ca_file"),
    "http_timeout a string": (lambda: client_with(http_timeout=SECRET), "http_timeout"),
    "http_timeout NaN": (lambda: client_with(http_timeout=NAN), "http_timeout"),
    "http_timeout a bool": (lambda: client_with(http_timeout=True), "http_timeout"),
    "http_timeout zero": (lambda: client_with(http_timeout=0), "http_timeout"),
    "http_timeout infinite": (lambda: client_with(http_timeout=INF), "http_timeout"),
    "credential a string": (lambda: client_with(credential=SECRET), "credential"),
    "credential a list of strings": (lambda: client_with(credential=[SECRET]), "credential"),
    "credential an empty list": (lambda: client_with(credential=[]), "credential"),
    "authority_host a number": (lambda: client_with(authority_host=1), "authority_host"),
    "from_env environ not a mapping": (
        lambda: ConfidentialClient.from_env([SECRET]),  # type: ignore[arg-type]
        "environ",
    ),
    "from_env without AZURE_TENANT_ID": (
        lambda: ConfidentialClient.from_env({"AZURE_CLIENT_ID": API}),
        "tenant",
    ),
    "from_env without AZURE_CLIENT_ID": (
        lambda: ConfidentialClient.from_env({"AZURE_TENANT_ID": TENANT}),
        "client_id",
    ),
    "from_env without a credential": (
        lambda: ConfidentialClient.from_env({"AZURE_TENANT_ID": TENANT, "AZURE_CLIENT_ID": API}),
        "credential",
    ),
}

_CREDENTIAL: dict[str, tuple[Callable[[], object], str]] = {
    "secret a number": (lambda: ClientCredential.secret(1), "secret"),  # type: ignore[arg-type]
    "secret empty": (lambda: ClientCredential.secret(""), "secret"),
    "secret bytes": (lambda: ClientCredential.secret(SECRET.encode()), "secret"),  # type: ignore[arg-type]
    "certificate key a string": (
        lambda: ClientCredential.certificate(private_key_pem=SECRET, certificate_pem=b"x"),  # type: ignore[arg-type]
        "certificate",
    ),
    "certificate not PEM": (
        lambda: ClientCredential.certificate(
            private_key_pem=SECRET.encode(), certificate_pem=SECRET.encode()
        ),
        "certificate",
    ),
    "certificate passphrase a string": (
        lambda: ClientCredential.certificate(
            private_key_pem=b"x",
            certificate_pem=b"x",
            passphrase=SECRET,  # type: ignore[arg-type]
        ),
        "passphrase",
    ),
    "certificate passphrase not UTF-8": (
        lambda: ClientCredential.certificate(
            private_key_pem=b"x", certificate_pem=b"x", passphrase=b"\xff" + SECRET.encode()
        ),
        "passphrase",
    ),
    "certificate send_certificate_chain a string": (
        lambda: ClientCredential.certificate(
            private_key_pem=b"x",
            certificate_pem=b"x",
            send_certificate_chain="yes",  # type: ignore[arg-type]
        ),
        "send_certificate_chain",
    ),
    "certificate file a number": (
        lambda: ClientCredential.certificate_file(1),  # type: ignore[arg-type]
        "certificate_file",
    ),
    "certificate file missing": (
        lambda: ClientCredential.certificate_file("/nonexistent/grpc-obo/cert.pem"),
        "certificate_file",
    ),
    "certificate file passphrase a string": (
        lambda: ClientCredential.certificate_file("/nonexistent/c.pem", passphrase=SECRET),  # type: ignore[arg-type]
        "passphrase",
    ),
    "federated token file a number": (
        lambda: ClientCredential.federated_token_file(1),  # type: ignore[arg-type]
        "federated_token_file",
    ),
    "federated token file empty": (
        lambda: ClientCredential.federated_token_file(""),
        "federated_token_file",
    ),
    "managed identity client_id not a GUID": (
        lambda: ClientCredential.managed_identity(SECRET),
        "managed_identity",
    ),
    "assertion not callable": (
        lambda: ClientCredential.assertion(SECRET),  # type: ignore[arg-type]
        "assertion",
    ),
}


def redis_store(**settings: Any) -> RedisTokenStore:
    return RedisTokenStore(**{"sealer": TokenSealer(SEALING_KEY), **settings})


def redis_url(url: Any) -> RedisTokenStore:
    return RedisTokenStore.from_url(url, sealer=TokenSealer(SEALING_KEY))


_REDIS: dict[str, tuple[Callable[[], object], str]] = {
    "sealer a key": (lambda: RedisTokenStore(sealer=SECRET), "sealer"),  # type: ignore[arg-type]
    "host a number": (lambda: redis_store(host=1), "host"),
    "host empty": (lambda: redis_store(host=""), "host"),
    "port a string": (lambda: redis_store(port=SECRET), "port"),
    "port a bool": (lambda: redis_store(port=True), "port"),
    "port out of range": (lambda: redis_store(port=70_000), "port"),
    "db a string": (lambda: redis_store(db="0"), "db"),
    "db negative": (lambda: redis_store(db=-1), "db"),
    "username a number": (lambda: redis_store(username=1), "username"),
    "password a number": (lambda: redis_store(password=1), "password"),
    "ssl a string": (lambda: redis_store(ssl="yes"), "ssl"),
    "ssl_ca_file a number": (lambda: redis_store(ssl=True, ssl_ca_file=1), "ssl_ca_file"),
    "ssl_ca_file without TLS": (lambda: redis_store(ssl_ca_file="/ca.pem"), "ssl_ca_file"),
    "cluster a string": (lambda: redis_store(cluster="yes"), "cluster"),
    "namespace a number": (lambda: redis_store(namespace=1), "namespace"),
    "namespace with a hash tag": (lambda: redis_store(namespace="a{b}"), "namespace"),
    "timeout a string": (lambda: redis_store(timeout=SECRET), "timeout"),
    "timeout NaN": (lambda: redis_store(timeout=NAN), "timeout"),
    "timeout a bool": (lambda: redis_store(timeout=True), "timeout"),
    "timeout zero": (lambda: redis_store(timeout=0), "timeout"),
    "pool_max_size a string": (lambda: redis_store(pool_max_size=SECRET), "pool_max_size"),
    "pool_max_size zero": (lambda: redis_store(pool_max_size=0), "pool_max_size"),
    "l1_max_entries a string": (lambda: redis_store(l1_max_entries=SECRET), "l1_max_entries"),
    "l1_max_entries a bool": (lambda: redis_store(l1_max_entries=True), "l1_max_entries"),
    "l1_ttl a string": (lambda: redis_store(l1_ttl=SECRET), "l1_ttl"),
    "l1_ttl NaN": (lambda: redis_store(l1_ttl=NAN), "l1_ttl"),
    "l1_ttl zero": (lambda: redis_store(l1_ttl=0), "l1_ttl"),
    "lease_ttl a string": (lambda: redis_store(lease_ttl=SECRET), "lease_ttl"),
    "lease_ttl infinite": (lambda: redis_store(lease_ttl=INF), "lease_ttl"),
    "lease_ttl too short": (lambda: redis_store(lease_ttl=0.01), "lease_ttl"),
    "clock not callable": (lambda: redis_store(clock=1), "clock"),
    "observer without store_outcome": (lambda: redis_store(observer=SECRET), "observer"),
    "url a number": (lambda: redis_url(1), "url"),
    "url not redis": (lambda: redis_url(f"https://user:{SECRET}@host/"), "url"),
    "url without a host": (lambda: redis_url(f"redis://:{SECRET}@/0"), "url"),
    "url with a bad port": (lambda: redis_url(f"redis://:{SECRET}@host:port/0"), "url"),
    "url with a bad database": (lambda: redis_url(f"redis://:{SECRET}@host:6379/db"), "url"),
    "url with port 0": (lambda: redis_url(f"redis://:{SECRET}@host:0/0"), "port"),
    "cluster with a database": (lambda: redis_store(cluster=True, db=1), "db"),
}

NAMED: dict[str, tuple[Callable[[], object], str]] = {
    "retry: max_attempts a string": (lambda: RetryPolicy(max_attempts=SECRET), "max_attempts"),  # type: ignore[arg-type]
    "retry: max_attempts a bool": (lambda: RetryPolicy(max_attempts=True), "max_attempts"),
    "retry: max_attempts a float": (lambda: RetryPolicy(max_attempts=2.5), "max_attempts"),  # type: ignore[arg-type]
    "retry: max_attempts zero": (lambda: RetryPolicy(max_attempts=0), "max_attempts"),
    "retry: base_delay a string": (lambda: RetryPolicy(base_delay=SECRET), "base_delay"),  # type: ignore[arg-type]
    "retry: base_delay a bool": (lambda: RetryPolicy(base_delay=False), "base_delay"),
    "retry: base_delay NaN": (lambda: RetryPolicy(base_delay=NAN), "base_delay"),
    "retry: base_delay negative": (lambda: RetryPolicy(base_delay=-0.1), "base_delay"),
    "retry: max_delay a string": (lambda: RetryPolicy(max_delay=SECRET), "max_delay"),  # type: ignore[arg-type]
    "retry: max_delay infinite": (lambda: RetryPolicy(max_delay=INF), "max_delay"),
    "retry: max_delay below base_delay": (
        lambda: RetryPolicy(base_delay=1.0, max_delay=0.5),
        "max_delay",
    ),
    "retry: budget a string": (lambda: RetryPolicy(budget=SECRET), "budget"),  # type: ignore[arg-type]
    "retry: budget NaN": (lambda: RetryPolicy(budget=NAN), "budget"),
    "retry: budget infinite": (lambda: RetryPolicy(budget=INF), "budget"),
    "retry: budget zero": (lambda: RetryPolicy(budget=0), "budget"),
    "cache: margin a string": (lambda: TokenCache(margin=SECRET), "margin"),  # type: ignore[arg-type]
    "cache: margin a bool": (lambda: TokenCache(margin=True), "margin"),
    "cache: margin NaN": (lambda: TokenCache(margin=NAN), "margin"),
    "cache: margin infinite": (lambda: TokenCache(margin=INF), "margin"),
    "cache: margin negative": (lambda: TokenCache(margin=-1), "margin"),
    "cache: store not a store": (lambda: TokenCache(store=SECRET), "store"),  # type: ignore[arg-type]
    "cache: store a TokenCache": (lambda: TokenCache(store=TokenCache()), "store"),  # type: ignore[arg-type]
    "cache: store without close": (lambda: TokenCache(store=_Store()), "store"),  # type: ignore[arg-type]
    "cache: clock not callable": (lambda: TokenCache(clock=SECRET), "clock"),  # type: ignore[arg-type]
    "memory store: max_entries a string": (
        lambda: MemoryTokenStore(max_entries=SECRET),  # type: ignore[arg-type]
        "max_entries",
    ),
    "memory store: max_entries a bool": (
        lambda: MemoryTokenStore(max_entries=True),
        "max_entries",
    ),
    "memory store: max_entries a float": (
        lambda: MemoryTokenStore(max_entries=2.5),  # type: ignore[arg-type]
        "max_entries",
    ),
    "memory store: max_entries zero": (lambda: MemoryTokenStore(max_entries=0), "max_entries"),
    "memory store: clock not callable": (
        lambda: MemoryTokenStore(clock=SECRET),  # type: ignore[arg-type]
        "clock",
    ),
    "sealer: key a string": (lambda: TokenSealer(SECRET), "key"),  # type: ignore[arg-type]
    "sealer: key too short": (lambda: TokenSealer(SECRET.encode()[:16]), "key"),
    "sealer: key_id a string": (lambda: TokenSealer(SEALING_KEY, key_id=SECRET), "key_id"),  # type: ignore[arg-type]
    "sealer: key_id a bool": (lambda: TokenSealer(SEALING_KEY, key_id=True), "key_id"),
    "sealer: key_id out of range": (lambda: TokenSealer(SEALING_KEY, key_id=256), "key_id"),
    "sealer: previous a list of keys": (
        lambda: TokenSealer(SEALING_KEY, key_id=2, previous=[SECRET.encode()[:32]]),  # type: ignore[arg-type]
        "previous",
    ),
    "sealer: previous not a mapping": (
        lambda: TokenSealer(SEALING_KEY, key_id=2, previous=1),  # type: ignore[arg-type]
        "previous",
    ),
    "sealer: previous keyed by a string": (
        lambda: TokenSealer(SEALING_KEY, key_id=2, previous={SECRET: SEALING_KEY}),  # type: ignore[dict-item]
        "previous",
    ),
    "sealer: previous key a string": (
        lambda: TokenSealer(SEALING_KEY, key_id=2, previous={1: SECRET}),  # type: ignore[dict-item]
        "previous",
    ),
    "sealer: previous repeats key_id": (
        lambda: TokenSealer(SEALING_KEY, key_id=2, previous={2: SEALING_KEY}),
        "previous",
    ),
    **{f"confidential client: {name}": case for name, case in _CLIENT.items()},
    **{f"credential: {name}": case for name, case in _CREDENTIAL.items()},
    **{f"redis store: {name}": case for name, case in _REDIS.items()},
    **_outbound_cases(OnBehalfOf),
    **_outbound_cases(AppOnly),
    "server: validate not a coroutine function": (
        lambda: server_interceptor(_SyncValidator()),  # type: ignore[arg-type]
        "validator",
    ),
    "server: validator without cached": (
        lambda: server_interceptor(_Uncached()),  # type: ignore[arg-type]
        "validator",
    ),
    "server: validator not one": (lambda: server_interceptor(SECRET), "validator"),  # type: ignore[arg-type]
    "front door: validate not a coroutine function": (
        lambda: BearerAuthMiddleware(_app, validator=_SyncValidator()),
        "validator",
    ),
    "front door: validator not one": (
        lambda: BearerAuthMiddleware(_app, validator=SECRET),
        "validator",
    ),
    "front door: cached not callable": (
        lambda: BearerAuthMiddleware(_app, validator=_with_cached(SECRET)),
        "validator",
    ),
    "front door: default not a MethodPolicy": (
        lambda: BearerAuthMiddleware(_app, validator=validator(), default=SECRET),  # type: ignore[arg-type]
        "default",
    ),
    "front door: app not callable": (
        lambda: BearerAuthMiddleware(SECRET, validator=validator()),  # type: ignore[arg-type]
        "app",
    ),
}


def _with_cached(cached: object) -> object:
    class Validator(_Uncached):
        pass

    Validator.cached = cached  # type: ignore[attr-defined]
    return Validator()


@pytest.mark.parametrize(("build", "setting"), NAMED.values(), ids=NAMED.keys())
def test_a_bad_setting_is_named_and_never_quoted(build: Callable[[], object], setting: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build()
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.setting == setting
    told = f"{error} {error!r} {error.message} {error.args}"
    assert setting in error.message  # the sentence names what to fix
    assert SECRET not in told and SECRET[:20] not in told
    assert repr(SEALING_KEY) not in told
    # ... nor does an exception it is chained to (a traceback prints that too)
    shown = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    assert shown is None or SECRET[:20] not in f"{shown} {shown!r}"
