"""Identity redaction, the identity contextvar, and the one error -> status table."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import pickle
from collections.abc import Callable
from typing import Any

import grpc
import pytest

import grpc_obo
from grpc_obo import (
    Identity,
    IdentityKind,
    SecretToken,
    current_identity,
    status_for,
    use_identity,
    www_authenticate_for,
)

RAW = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def make_identity(oid: str = "00000000-0000-0000-0000-00000000000a") -> Identity:
    return Identity(
        tid="72f988bf-86f1-41af-91ab-2d7cd011db47",
        oid=oid,
        sub="sub",
        kind=IdentityKind.USER,
        scopes=frozenset({"access_as_user"}),
        token=SecretToken(RAW),
    )


def test_secret_token_never_shows_its_value() -> None:
    secret = SecretToken(RAW)
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}"):
        assert RAW not in text
    assert secret.reveal() == RAW
    assert SecretToken(RAW) == secret
    assert SecretToken(RAW + "x") != secret


def test_secret_token_refuses_pickling() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(SecretToken(RAW))


def test_identity_pickling_is_refused_because_of_its_token() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(make_identity())


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy], ids=["copy", "deepcopy"])
def test_secret_token_copies_are_the_same_object(copier: Callable[[Any], Any]) -> None:
    """A SecretToken is immutable: copying hands back the same object, never a pickled form."""
    secret = SecretToken(RAW)
    assert copier(secret) is secret


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy], ids=["copy", "deepcopy"])
def test_identity_can_be_copied(copier: Callable[[Any], Any]) -> None:
    """Handlers and test code copy identities (deepcopy of a request context, fixtures)."""
    identity = make_identity()
    copied = copier(identity)
    assert copied == identity
    assert copied.token is identity.token
    assert copied.token.reveal() == RAW


def test_identity_can_be_replaced_and_deep_copied_inside_containers() -> None:
    identity = make_identity()
    other = dataclasses.replace(identity, oid="b")
    assert other.oid == "b" and other.token is identity.token
    nested = copy.deepcopy({"who": [identity, other]})
    assert nested["who"][1].principal.endswith("/b")
    assert nested["who"][0].token is identity.token


def test_identity_repr_has_no_token() -> None:
    identity = make_identity()
    assert RAW not in repr(identity)
    assert RAW not in str(identity)
    assert identity.principal.endswith("/00000000-0000-0000-0000-00000000000a")


async def test_use_identity_is_scoped_to_its_block_and_task() -> None:
    assert current_identity() is None
    alice, bob = make_identity("a"), make_identity("b")

    async def run_as(identity: Identity) -> str | None:
        with use_identity(identity):
            await asyncio.sleep(0)
            seen = current_identity()
            return seen.oid if seen else None

    assert await asyncio.gather(run_as(alice), run_as(bob)) == ["a", "b"]
    assert current_identity() is None


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (grpc_obo.ExpiredTokenError("token expired"), grpc.StatusCode.UNAUTHENTICATED),
        (grpc_obo.MissingTokenError("no bearer token"), grpc.StatusCode.UNAUTHENTICATED),
        (grpc_obo.InsufficientScopeError("scope"), grpc.StatusCode.PERMISSION_DENIED),
        (grpc_obo.AppTokenNotAllowedError("app"), grpc.StatusCode.PERMISSION_DENIED),
        (grpc_obo.KeySourceUnavailableError(), grpc.StatusCode.UNAVAILABLE),
        (grpc_obo.ClaimsChallengeError("mfa", claims="{}"), grpc.StatusCode.UNAUTHENTICATED),
        (grpc_obo.AuthorityUnavailableError("down"), grpc.StatusCode.UNAVAILABLE),
        (RuntimeError("boom"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_table(error: BaseException, code: grpc.StatusCode) -> None:
    assert status_for(error) == code


def test_www_authenticate_forms() -> None:
    assert www_authenticate_for(grpc_obo.MissingTokenError("no bearer token")) == "Bearer"
    expired = www_authenticate_for(grpc_obo.ExpiredTokenError("token expired"))
    assert expired == 'Bearer error="invalid_token", error_description="token expired"'
    scope = www_authenticate_for(
        grpc_obo.InsufficientScopeError("missing scope", required_scopes=["Read", "Write"])
    )
    assert scope is not None and 'error="insufficient_scope"' in scope
    assert 'scope="Read Write"' in scope
    claims = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'
    challenge = www_authenticate_for(grpc_obo.ClaimsChallengeError("mfa", claims=claims))
    assert challenge is not None and 'error="insufficient_claims"' in challenge
    encoded = challenge.split('claims="')[1].rstrip('"')
    assert base64.b64decode(encoded).decode() == claims


def test_a_role_refusal_has_its_own_reason_and_no_role_in_scope() -> None:
    """Roles are not scopes: a client cannot request them (an administrator assigns them), so
    they never go into the challenge's `scope=`; the refusal says which kind by its reason."""
    refusal = grpc_obo.InsufficientScopeError("no role", required_roles=["Orders.Admin"])
    assert refusal.reason == "insufficient_role"
    assert refusal.required_roles == ("Orders.Admin",)
    challenge = www_authenticate_for(refusal) or ""
    assert 'error="insufficient_scope"' in challenge
    assert "scope=" not in challenge and "Orders.Admin" not in challenge
    scopes = grpc_obo.InsufficientScopeError("no scope", required_scopes=["Orders.Read"])
    assert scopes.reason == "insufficient_scope"


# -- the decisions about an error are attributes of its class -----------------------------------

_USERS_OWN = (
    grpc_obo.ExpiredTokenError("token expired"),
    grpc_obo.InsufficientScopeError("no", required_scopes=("a",)),
    grpc_obo.ClaimsChallengeError("sign in again", claims="{}"),
    grpc_obo.InvalidGrantError("expired assertion"),
    grpc_obo.ConsentRequiredError("no consent"),
    grpc_obo.MissingIdentityError("no identity"),
)
_SERVICES_OWN = (
    grpc_obo.KeySourceUnavailableError(),
    grpc_obo.AuthorityUnavailableError("down"),
    grpc_obo.TokenExchangeError("refused"),
    grpc_obo.ConfigurationError("bad"),
    grpc_obo.DownstreamError("failed", code=grpc.StatusCode.UNAVAILABLE),
)


@pytest.mark.parametrize("error", _USERS_OWN + _SERVICES_OWN, ids=lambda e: type(e).__name__)
def test_whose_fault_is_a_class_attribute_that_telemetry_reads(
    error: grpc_obo.GrpcOboError,
) -> None:
    from grpc_obo._telemetry._redact import _is_fault

    assert error.service_fault is (error in _SERVICES_OWN)
    assert _is_fault(error) is error.service_fault

    # A subclass the application defines under any name inherits the decision, or overrides it.
    class Renamed(type(error)):  # type: ignore[misc]
        service_fault = not type(error).service_fault

    assert _is_fault(Renamed.__new__(Renamed)) is not error.service_fault


def test_every_error_has_a_message_and_a_reason_on_the_root() -> None:
    for error in _USERS_OWN + _SERVICES_OWN:
        assert isinstance(error.message, str) and error.message
        assert error.reason is None or error.reason.replace("_", "").isalnum()
    hinted = grpc_obo.TokenExchangeError("refused", hint="check AZURE_CLIENT_ID")
    assert hinted.message == "refused" and str(hinted) == "refused: check AZURE_CLIENT_ID"
    keys = grpc_obo.KeySourceUnavailableError(url="https://k.example/keys", detail="HTTP 500")
    assert keys.message == "signing keys are unavailable" and "HTTP 500" in str(keys)


def test_log_levels_are_class_attributes() -> None:
    import logging

    assert grpc_obo.TokenExchangeError("x").log_level == logging.WARNING
    assert grpc_obo.ConsentRequiredError("x").log_level == logging.WARNING
    assert grpc_obo.InvalidGrantError("x").log_level == logging.DEBUG
    assert grpc_obo.ClaimsChallengeError("x").log_level == logging.DEBUG
    assert grpc_obo.KeySourceUnavailableError().log_level == logging.WARNING
    assert grpc_obo.ExpiredTokenError("x").log_level == logging.DEBUG


def test_a_configuration_error_names_its_setting_and_from_env_maps_it_to_the_variable() -> None:
    with pytest.raises(grpc_obo.ConfigurationError) as caught:
        grpc_obo.ConfidentialClient(
            client_id="00000000-0000-0000-0000-000000000001",
            tenant="common",
            credential=grpc_obo.ClientCredential.secret("s3cret-value"),
        )
    assert caught.value.setting == "tenant"
    environ = {
        "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000001",
        "AZURE_TENANT_ID": "00000000-0000-0000-0000-000000000002",
        "AZURE_CLIENT_SECRET": "s3cret-value",
        "AZURE_AUTHORITY_HOST": "http://login.example",
    }
    with pytest.raises(grpc_obo.ConfigurationError) as caught:
        grpc_obo.ConfidentialClient.from_env(environ=environ)
    assert caught.value.setting == "authority_host"
    assert str(caught.value).startswith("AZURE_AUTHORITY_HOST: authority_host")


@pytest.mark.parametrize(
    "build",
    [
        lambda: grpc_obo.Telemetry(identities="loud"),  # type: ignore[arg-type]
        lambda: grpc_obo.Telemetry(identities="hashed", identity_key=b"short"),
        lambda: grpc_obo.Telemetry(identity_key=b"0123456789abcdef0123"),
        lambda: grpc_obo.TokenValidator({"tenant": "x"}),  # type: ignore[arg-type]
    ],
)
def test_every_configuration_error_is_a_configuration_error(build: Callable[[], object]) -> None:
    with pytest.raises(grpc_obo.ConfigurationError):
        build()
