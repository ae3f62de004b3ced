"""The private recorder behind `Telemetry`: spans and metrics for validation, key fetches and
exchanges, with explicit times where grpc's order of events needs them (see `validating`).

`recorder_for(settings)` gives one `Recorder` per settings object (equal settings share one), so
a server and a client given the same `Telemetry` record through the same instruments. The
hooks (`validating`, `key_fetch`, `acquisition`, `hit`, ...) are what the server, client,
validation and exchange parts call; none of them is public.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from grpc_obo._common import LRU
from grpc_obo._errors import ConfigurationError
from grpc_obo._telemetry._names import (
    _BUCKETS,
    ATTR_ATTEMPT,
    ATTR_CLIENT_ID,
    ATTR_ERROR,
    ATTR_GRANT,
    ATTR_KIND,
    ATTR_OID,
    ATTR_RESULT,
    ATTR_RETRY,
    ATTR_SCOPES,
    ATTR_SOURCE,
    ATTR_STEP,
    ATTR_TID,
    ATTR_URL,
    METRIC_ACTIVE,
    METRIC_EXCHANGE,
    METRIC_KEYS,
    METRIC_REFUSALS,
    METRIC_VALIDATION,
    SOURCE_CACHE,
    SPAN_ACQUIRE,
    SPAN_AUTHORITY,
    SPAN_KEYS,
    SPAN_VALIDATE,
)
from grpc_obo._telemetry._redact import (
    _failure_attributes,
    _guid_or_other,
    _is_fault,
    _public_url,
)
from grpc_obo._telemetry._settings import IdentityMode, Telemetry
from grpc_obo._version import __version__

__all__ = ["Recorder", "Validation", "recorder_for"]

_MAX_HASHED = 10_000

# NOTE: weak keys: a recorder lives as long as some holder of its settings does. A recorder
# never refers to its settings (that would keep every key alive).
_RECORDERS: weakref.WeakKeyDictionary[Telemetry, Recorder] = weakref.WeakKeyDictionary()
_DEFAULT = Telemetry()  # the global providers: what a part given no settings records through


def recorder_for(settings: Telemetry | None) -> Recorder:
    """The recorder for `settings` (the global providers for None), built on first use."""
    if settings is None:
        settings = _DEFAULT
    elif not isinstance(settings, Telemetry):
        raise ConfigurationError("telemetry must be a grpc_obo.Telemetry", setting="telemetry")
    recorder = _RECORDERS.get(settings)
    if recorder is None:
        recorder = _RECORDERS[settings] = Recorder(settings)
    return recorder


class Recorder:
    """Records what `Telemetry` settings ask for; built by `recorder_for`, never by users."""

    def __init__(self, settings: Telemetry) -> None:
        tracer_provider = settings.tracer_provider
        self.identities: IdentityMode = settings.identities
        self._key = settings.identity_key
        # The HMAC of each identifier seen lately: a user's calls hash their oid once.
        self._hashed: LRU[str, str] = LRU(_MAX_HASHED)
        # NOTE: the metric attributes of a cache hit, built once per grant (never mutated):
        # every outbound call records one, and a dict per call is garbage the collector chases.
        self._hit_attributes: dict[str, dict[str, str]] = {}
        self.tracer = trace.get_tracer("grpc_obo", __version__, tracer_provider=tracer_provider)
        self._silent = isinstance(tracer_provider, trace.NoOpTracerProvider)
        meter = metrics.get_meter("grpc_obo", __version__, meter_provider=settings.meter_provider)
        self._validation = meter.create_histogram(
            METRIC_VALIDATION,
            unit="s",
            description="Bearer token validations that did work (not verified-token cache hits)",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        self._exchange = meter.create_histogram(
            METRIC_EXCHANGE,
            unit="s",
            description="On-Behalf-Of and app-only token acquisitions, by token source",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        self._keys = meter.create_histogram(
            METRIC_KEYS,
            unit="s",
            description="Discovery and JWKS fetches for signing keys",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        self._refusals = meter.create_counter(
            METRIC_REFUSALS,
            unit="{call}",
            description="Calls refused by the server interceptor, by error.type",
        )
        self._active = meter.create_up_down_counter(
            METRIC_ACTIVE,
            unit="{exchange}",
            description="Token requests to the authority in flight",
        )

    def __repr__(self) -> str:
        return f"Recorder(identities={self.identities!r})"

    # -- identity ------------------------------------------------------------------------------

    def _identifier(self, value: str) -> str:
        if self._key is None:
            return value
        hashed = self._hashed.get(value)
        if hashed is None:
            hashed = hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).hexdigest()
            self._hashed.put(value, hashed)
        return hashed

    def identity_attributes(
        self, *, oid: str | None, tid: str, client_id: str | None, kind: str
    ) -> dict[str, str]:
        """The span attributes for a verified caller (empty when identities are omitted)."""
        if self.identities == "omit":
            return {ATTR_KIND: kind}
        attributes = {ATTR_KIND: kind, ATTR_TID: self._identifier(_guid_or_other(tid))}
        if oid:
            attributes[ATTR_OID] = self._identifier(_guid_or_other(oid))
        if client_id:
            attributes[ATTR_CLIENT_ID] = self._identifier(_guid_or_other(client_id))
        return attributes

    # -- server --------------------------------------------------------------------------------

    def annotate_caller(
        self, *, oid: str | None, tid: str, client_id: str | None, kind: str
    ) -> None:
        """The caller's attributes on the current span; costs nothing when it is not recorded.

        Not when grpc_obo's own telemetry is switched off (a no-op tracer provider given): the
        identities then stay off every span, the instrumentation's included.
        """
        if self._silent:
            return
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(
                self.identity_attributes(oid=oid, tid=tid, client_id=client_id, kind=kind)
            )

    def annotate_current(self, attributes: Mapping[str, str]) -> None:
        """Put the caller's attributes on the current span (the RPC's server span)."""
        if self._silent:
            return
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(attributes)

    def refusal(
        self,
        *,
        attributes: Mapping[str, str],
        error: BaseException,
        metadata: Iterable[tuple[str, Any]] = (),
    ) -> None:
        """Record a refusal decided without validation work (no token, or a verified token the
        policy refuses): counted, and a `grpc_obo.validate` span without duration, but not in
        the duration histogram. Called where the decision is made, in `intercept_service`
        (see `validating` for the span's parent)."""
        now = time.time_ns()
        span = self.tracer.start_span(
            SPAN_VALIDATE,
            context=_parent(metadata),
            kind=SpanKind.INTERNAL,
            attributes={ATTR_RESULT: "refused", **attributes},
            start_time=now,
        )
        self._finish_validation(span, error, worked_s=None, end_ns=now)

    def validation(
        self,
        *,
        start_ns: int,
        end_ns: int,
        attributes: Mapping[str, str],
        error: BaseException | None,
        metadata: Iterable[tuple[str, Any]] = (),
        worked: bool = True,
    ) -> None:
        """Record one validation that ran inside the current span, with its start and end.

        For a front door that validates from inside its request's span (the ASGI middleware);
        the gRPC server validates before its RPC's span exists and uses `validating`.
        Without a current span, the caller's `traceparent` (from `metadata`) parents it.
        """
        span = self.tracer.start_span(
            SPAN_VALIDATE,
            context=_parent(metadata),
            kind=SpanKind.INTERNAL,
            attributes={ATTR_RESULT: "accepted" if error is None else "refused", **attributes},
            start_time=start_ns,
        )
        worked_s = (end_ns - start_ns) / 1e9 if worked else None
        self._finish_validation(span, error, worked_s=worked_s, end_ns=end_ns)

    @contextlib.contextmanager
    def validating(self, metadata: Iterable[tuple[str, Any]]) -> Iterator[Validation]:
        """A validation that does work (a token the verified-token cache did not know): its
        span, current while it runs, so that a key fetch it starts nests under it.

        NOTE: it runs in `intercept_service`, before an instrumentation's server span exists
        (opentelemetry-instrumentation-grpc's aio server interceptor starts it when the handler
        runs). A child of that span would start before its parent, which backends flag (Jaeger:
        clock skew) and draw outside it, so the span's parent is what is current here: the
        caller's trace context from `metadata` (the caller's client span). The validation is a
        sibling of the server span that follows; that span gets the caller's identity from the
        handler (`annotate_current`). A caller that sends no trace context gets a trace of its
        own for the validation: no span of the RPC exists yet that could contain it.
        """
        record = Validation()
        parent = _parent(metadata)
        start = time.time_ns()
        span = self.tracer.start_span(
            SPAN_VALIDATE, context=parent, kind=SpanKind.INTERNAL, start_time=start
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            yield record
        except BaseException as exc:  # cancelled: ended, not counted
            otel_context.detach(token)
            span.set_attributes(_failure_attributes(exc))
            span.end()
            raise
        otel_context.detach(token)
        end = time.time_ns()
        span.set_attribute(ATTR_RESULT, "accepted" if record.error is None else "refused")
        if record.attributes:
            span.set_attributes(record.attributes)
        self._finish_validation(span, record.error, worked_s=(end - start) / 1e9, end_ns=end)

    def _finish_validation(
        self, span: trace.Span, error: BaseException | None, *, worked_s: float | None, end_ns: int
    ) -> None:
        metric = {ATTR_RESULT: "accepted" if error is None else "refused"}
        if error is not None:
            failure = _failure_attributes(error)
            metric[ATTR_ERROR] = failure[ATTR_ERROR]
            span.set_attributes(failure)
            self._refusals.add(1, {ATTR_ERROR: failure[ATTR_ERROR]})
            if _is_fault(error):
                span.set_status(Status(StatusCode.ERROR))
        if worked_s is not None:
            self._validation.record(worked_s, metric)
        span.end(end_time=end_ns)

    # -- signing keys --------------------------------------------------------------------------

    @contextlib.contextmanager
    def key_fetch(self, url: str) -> Iterator[_Outcome]:
        """A discovery or JWKS fetch: a span (the URL is public) and its duration."""
        outcome = _Outcome()
        started = time.perf_counter()
        with self.tracer.start_as_current_span(
            SPAN_KEYS,
            kind=SpanKind.CLIENT,
            attributes={ATTR_URL: _public_url(url)},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield outcome
            except BaseException as exc:
                outcome.fail(exc)
                raise
            finally:
                metric = {ATTR_RESULT: "failed" if outcome.error_type else "ok"}
                if outcome.error_type:
                    metric[ATTR_ERROR] = outcome.error_type
                    span.set_attribute(ATTR_ERROR, outcome.error_type)
                    span.set_status(Status(StatusCode.ERROR))
                self._keys.record(time.perf_counter() - started, metric)

    # -- exchange ------------------------------------------------------------------------------

    def hit(self, grant: str, scopes: Iterable[str]) -> None:
        """A token straight from the cache: its metric, and a span only when tracing records.

        NOTE: the hot path of every outbound call; without a recording span it costs one
        histogram record.
        """
        if trace.get_current_span().is_recording():
            with self.acquisition(grant, scopes):
                return
        attributes = self._hit_attributes.get(grant)
        if attributes is None:  # one per grant: the grants are a fixed vocabulary
            attributes = self._hit_attributes[grant] = {
                ATTR_SOURCE: SOURCE_CACHE,
                ATTR_GRANT: grant,
            }
        self._exchange.record(0.0, attributes)

    @contextlib.contextmanager
    def acquisition(self, grant: str, scopes: Iterable[str]) -> Iterator[_Acquisition]:
        """One token acquisition for an outbound call: from the cache or the authority."""
        record = _Acquisition()
        started = time.perf_counter()
        with self.tracer.start_as_current_span(
            SPAN_ACQUIRE,
            kind=SpanKind.INTERNAL,
            attributes={ATTR_GRANT: grant, ATTR_SCOPES: sorted(scopes)},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield record
            except BaseException as exc:
                record.fail(exc)
                raise
            finally:
                metric = {ATTR_SOURCE: record.source, ATTR_GRANT: grant}
                span.set_attribute(ATTR_SOURCE, record.source)
                if record.error_type:
                    metric[ATTR_ERROR] = record.error_type
                    span.set_attributes(record.failure)
                    if record.fault:
                        span.set_status(Status(StatusCode.ERROR))
                self._exchange.record(time.perf_counter() - started, metric)

    @contextlib.contextmanager
    def authority_request(self, attempt: int, step: str = "token") -> Iterator[_Outcome]:
        """One round trip to the authority (MSAL, in a worker thread that inherits this span).

        `step` is "set-up" (MSAL reads the authority's discovery document once per tenant) or
        "token" (the token request itself).
        """
        outcome = _Outcome()
        self._active.add(1)
        try:
            with self.tracer.start_as_current_span(
                SPAN_AUTHORITY,
                kind=SpanKind.CLIENT,
                attributes={ATTR_ATTEMPT: attempt, ATTR_STEP: step},
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    yield outcome
                except BaseException as exc:
                    outcome.fail(exc)
                    raise
                finally:
                    if outcome.error_type:
                        span.set_attributes(outcome.failure)
                        span.set_attribute(ATTR_RETRY, outcome.retry)
                        span.set_status(Status(StatusCode.ERROR))
        finally:
            self._active.add(-1)


class Validation:
    """What one validation found, filled in by the server while its span is open."""

    __slots__ = ("attributes", "error")

    def __init__(self) -> None:
        self.attributes: Mapping[str, str] = {}  # the caller's, once a token was verified
        self.error: BaseException | None = None  # why the call was refused


class _Outcome:
    """What a key fetch or an authority round trip learned, in exportable form only."""

    __slots__ = ("error_type", "failure", "retry")

    def __init__(self) -> None:
        self.error_type: str | None = None
        self.failure: dict[str, Any] = {}
        self.retry = False

    def fail(self, error: BaseException | str, *, retry: bool = False) -> None:
        if isinstance(error, str):
            self.failure = {ATTR_ERROR: error}
        else:
            self.failure = _failure_attributes(error)
        self.error_type = self.failure[ATTR_ERROR]
        self.retry = retry


class _Acquisition(_Outcome):
    __slots__ = ("fault", "source")

    def __init__(self) -> None:
        super().__init__()
        self.source = SOURCE_CACHE
        self.fault = False

    def fail(self, error: BaseException | str, *, retry: bool = False) -> None:
        super().fail(error, retry=retry)
        self.fault = isinstance(error, BaseException) and _is_fault(error)


def _parent(metadata: Iterable[tuple[str, Any]]) -> Context | None:
    """The current context, or the caller's trace context from `metadata` when none is active."""
    if trace.get_current_span().get_span_context().is_valid:
        return None
    carrier = {
        key: value for key, value in metadata if isinstance(value, str) and key != "authorization"
    }
    return propagate.extract(carrier) if carrier else None
