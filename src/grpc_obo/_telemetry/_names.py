"""The vocabulary grpc_obo's telemetry speaks: span, attribute and metric names, fixed values.

Backends, dashboards and tests match these strings; none is ever built from user data.
"""

from __future__ import annotations

# Span names: fixed, never built from user data.
SPAN_VALIDATE = "grpc_obo.validate"
SPAN_KEYS = "grpc_obo.keys.fetch"
SPAN_ACQUIRE = "grpc_obo.obo.acquire"
SPAN_AUTHORITY = "grpc_obo.authority.request"

# Attributes with no OpenTelemetry standard take the grpc_obo. prefix.
ATTR_OID = "grpc_obo.user.oid"
ATTR_TID = "grpc_obo.user.tid"
ATTR_CLIENT_ID = "grpc_obo.client.id"
ATTR_KIND = "grpc_obo.identity.kind"
ATTR_RESULT = "grpc_obo.result"
ATTR_REASON = "grpc_obo.refusal.reason"
ATTR_SOURCE = "grpc_obo.token.source"
ATTR_GRANT = "grpc_obo.grant"
ATTR_SCOPES = "grpc_obo.scopes"
ATTR_ATTEMPT = "grpc_obo.attempt"
ATTR_STEP = "grpc_obo.authority.step"
ATTR_RETRY = "grpc_obo.retry"
ATTR_ENTRA_ERROR = "grpc_obo.entra.error"
ATTR_ENTRA_CODES = "grpc_obo.entra.error_codes"
ATTR_CORRELATION = "grpc_obo.entra.correlation_id"
ATTR_CLAIMS = "grpc_obo.claims_challenge"
ATTR_ERROR = "error.type"  # OpenTelemetry's: a low-cardinality class of failure
ATTR_URL = "url.full"

METRIC_VALIDATION = "grpc_obo.validation.duration"
METRIC_EXCHANGE = "grpc_obo.obo.duration"
METRIC_KEYS = "grpc_obo.keys.fetch.duration"
METRIC_ACTIVE = "grpc_obo.obo.active"
METRIC_REFUSALS = "grpc_obo.server.refusals"

# Seconds: a cached verification is microseconds, an RSA check ~0.1 ms, an exchange with
# Entra tens to hundreds of ms, a retried one seconds.
_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# Values of `grpc_obo.token.source`.
SOURCE_CACHE = "cache"
SOURCE_AUTHORITY = "authority"
SOURCE_SINGLE_FLIGHT = "single_flight"
