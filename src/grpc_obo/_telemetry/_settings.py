"""`Telemetry`: the public settings, where grpc_obo's spans and metrics go and whether they carry
identities. Frozen and hashable; what records is private (`_recorder.recorder_for`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from opentelemetry import metrics, trace

from grpc_obo._errors import ConfigurationError

__all__ = ["IdentityMode", "Telemetry"]

IdentityMode = Literal["plain", "hashed", "omit"]


@dataclass(frozen=True, kw_only=True)
class Telemetry:
    """Where grpc_obo's spans and metrics go, and whether identities are exported.

    `identities`: "plain" puts the caller's `oid`, `tid` and client app id on spans (what lets
    an operator find a user's requests in Jaeger); "hashed" puts an HMAC-SHA-256 of each under
    `identity_key` instead (the same user hashes the same everywhere the key is shared);
    "omit" leaves them out. Providers default to the global ones (set by the application).

    Settings only: pass the same object to `server_interceptor`, `TokenValidator`,
    `OnBehalfOf` and `AppOnly` and they record through the same instruments.
    """

    tracer_provider: trace.TracerProvider | None = None
    meter_provider: metrics.MeterProvider | None = None
    identities: IdentityMode = "plain"
    identity_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.identities not in ("plain", "hashed", "omit"):
            raise ConfigurationError(
                'identities must be "plain", "hashed" or "omit"', setting="identities"
            )
        if self.identities == "hashed":
            if not isinstance(self.identity_key, bytes) or len(self.identity_key) < 16:
                raise ConfigurationError(
                    "hashed identities need identity_key: at least 16 random bytes",
                    setting="identity_key",
                )
        elif self.identity_key is not None:
            raise ConfigurationError(
                'identity_key is used only with identities="hashed"', setting="identity_key"
            )
        # NOTE: checked here, not on the first span: a wrong object would fail at start-up's
        # end, on the first call, where nobody reads the traceback.
        if self.tracer_provider is not None and not isinstance(
            self.tracer_provider, trace.TracerProvider
        ):
            raise ConfigurationError(
                "tracer_provider must be an OpenTelemetry TracerProvider",
                setting="tracer_provider",
            )
        if self.meter_provider is not None and not isinstance(
            self.meter_provider, metrics.MeterProvider
        ):
            raise ConfigurationError(
                "meter_provider must be an OpenTelemetry MeterProvider", setting="meter_provider"
            )

    def __repr__(self) -> str:
        # The identity key is a secret: never in a repr.
        return f"Telemetry(identities={self.identities!r})"
