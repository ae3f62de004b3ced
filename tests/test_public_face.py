"""The public face (issue 22, point 4): one way to build each thing, settings that are only
settings, and configuration errors of one type.

`grpc_obo.__all__` is the API: the server interceptor is built by its factory (the class is
private); `Telemetry` is frozen, hashable settings whose recorder (spans, metrics, hooks) is
private and shared by every part given the same settings.
"""

from __future__ import annotations

import dataclasses

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

import grpc_obo
from grpc_obo import ConfigurationError, Telemetry
from grpc_obo._telemetry import recorder_for

# What the recorder offers the parts of grpc_obo; none of it is the user's business.
HOOKS = (
    "validation",
    "validating",
    "refusal",
    "key_fetch",
    "acquisition",
    "hit",
    "authority_request",
    "annotate_caller",
    "annotate_current",
    "identity_attributes",
    "tracer",
)


def test_the_server_interceptor_is_exported_as_its_factory_only() -> None:
    assert "server_interceptor" in grpc_obo.__all__
    assert "AuthServerInterceptor" not in grpc_obo.__all__
    assert not hasattr(grpc_obo, "AuthServerInterceptor")


def test_every_exported_name_exists() -> None:
    assert [name for name in grpc_obo.__all__ if not hasattr(grpc_obo, name)] == []


def test_telemetry_is_frozen_hashable_settings() -> None:
    key = b"k" * 32
    settings = Telemetry(identities="hashed", identity_key=key)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.identities = "plain"  # type: ignore[misc]
    assert settings == Telemetry(identities="hashed", identity_key=key)
    assert hash(settings) == hash(Telemetry(identities="hashed", identity_key=key))
    assert settings != Telemetry(identities="omit")
    assert [f.name for f in dataclasses.fields(Telemetry)] == [
        "tracer_provider",
        "meter_provider",
        "identities",
        "identity_key",
    ]


def test_telemetry_has_no_hooks() -> None:
    settings = Telemetry()
    assert [hook for hook in HOOKS if hasattr(settings, hook)] == []
    public = {name for name in dir(settings) if not name.startswith("_")}
    assert public == {"tracer_provider", "meter_provider", "identities", "identity_key"}


def test_the_identity_key_is_never_in_a_repr() -> None:
    key = b"0123456789abcdef-secret"
    settings = Telemetry(identities="hashed", identity_key=key)
    for text in (repr(settings), str(settings), repr(recorder_for(settings))):
        assert "secret" not in text and repr(key) not in text


def test_parts_given_the_same_settings_share_one_recorder() -> None:
    """A server and a client given one `Telemetry` record through the same instruments."""
    settings = Telemetry(tracer_provider=TracerProvider(), meter_provider=MeterProvider())
    recorder = recorder_for(settings)
    assert all(callable(getattr(recorder, hook)) for hook in HOOKS if hook != "tracer")
    assert recorder_for(settings) is recorder
    # Equal settings are the same settings.
    same = Telemetry(
        tracer_provider=settings.tracer_provider, meter_provider=settings.meter_provider
    )
    assert recorder_for(same) is recorder
    assert recorder_for(Telemetry(identities="omit")) is not recorder
    assert recorder_for(None) is recorder_for(Telemetry())  # the global providers


@pytest.mark.parametrize(
    ("settings", "at_fault"),
    [
        ({"identities": "everyone"}, "identities"),
        ({"identities": "hashed"}, "identity_key"),
        ({"identities": "hashed", "identity_key": "a str of 16+ characters"}, "identity_key"),
        ({"identities": "plain", "identity_key": b"k" * 32}, "identity_key"),
        ({"tracer_provider": "jaeger"}, "tracer_provider"),
        ({"meter_provider": object()}, "meter_provider"),
    ],
    ids=str,
)
def test_bad_telemetry_settings_are_configuration_errors(
    settings: dict[str, object], at_fault: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Telemetry(**settings)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    assert caught.value.setting == at_fault


def test_something_else_than_telemetry_settings_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"grpc_obo\.Telemetry"):
        recorder_for(TracerProvider())  # type: ignore[arg-type]
