"""OpenTelemetry for grpc_obo: span and metric names, and the one place that decides what leaves
the process in them.

The library emits, the application configures: only `opentelemetry-api` is used here, with the
global providers unless `Telemetry` is given others. Nothing in this module ever receives a token:
attributes come from identifiers (oid, tid, client id), exception *class* names, Entra's numeric
error codes and correlation ids, and fixed vocabularies. `error_description`, claims values,
usernames and every token stay out (see `_failure_attributes`). Identity identifiers can be
HMAC-hashed or left out for deployments that must not export personal identifiers; they never
go on metrics or span names.

This module imports nothing of grpc_obo but the error tree (for `ConfigurationError`): the
server, client, validation and exchange parts call it (directly, or through their observer
hooks) with plain values.

`_names` holds the vocabulary (span, attribute and metric names), `_redact` the one redaction
point for failures and URLs, `_recorder` the `Telemetry` that records spans and metrics.
"""

from grpc_obo._telemetry._recorder import Telemetry, Validation

__all__ = ["Telemetry", "Validation"]
