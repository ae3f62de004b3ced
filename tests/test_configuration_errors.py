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
    BearerAuthMiddleware,
    ConfigurationError,
    MethodPolicy,
    Policy,
    Telemetry,
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
