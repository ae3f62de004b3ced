"""OpenTelemetry for grpc_obo: span and metric names, and the one place that decides what leaves
the process in them.

The library emits, the application configures: only `opentelemetry-api` is used here, with the
global providers unless `Telemetry` is given others. Nothing in this module ever receives a token:
attributes come from identifiers (oid, tid, client id), exception *class* names, Entra's numeric
error codes and correlation ids, and fixed vocabularies. `error_description`, claims values,
usernames and every token stay out (see `_failure_attributes`). Identity identifiers can be
HMAC-hashed or left out for deployments that must not export personal identifiers; they never
go on metrics or span names.

This package imports nothing of grpc_obo but the error tree (for `ConfigurationError`) and the
shared LRU: the server, client, validation and exchange parts call it (directly, or through
their observer hooks) with plain values.

`_settings` holds `Telemetry`, the public, frozen settings; `_recorder` the private `Recorder`
built from them (`recorder_for`), whose hooks record spans and metrics; `_names` the vocabulary
(span, attribute and metric names); `_redact` the one redaction point for failures and URLs.
"""

from grpc_obo._telemetry._recorder import Recorder, Validation, recorder_for
from grpc_obo._telemetry._settings import Telemetry

__all__ = ["Recorder", "Telemetry", "Validation", "recorder_for"]
