"""grpc_obo's spans in the real chain: client -> Original API -> (On-Behalf-Of) -> Downstream API.

Real dev authority, real MSAL, real grpc.aio servers on loopback, opentelemetry-instrumentation-grpc
around grpc_obo in each order, the OpenTelemetry SDK with in-memory exporters on private
providers (tests/telemetry/otel.py). What these pin: one trace per call with the right parents,
no span for a verified-token cache hit, refusals as answers (not span errors), faults as errors,
claims challenges flagged without their value, and what happens without any instrumentation.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from tests.telemetry.otel import (  # noqa: F401 - the *_fixture names are pytest fixtures
    CLIENT,
    DOWNSTREAM,
    ECHO,
    GRPC_OBO_SPANS,
    ORIGINAL,
    RPC_KINDS,
    RPC_TIMEOUT,
    SPAN_ACQUIRE,
    SPAN_AUTHORITY,
    SPAN_KEYS,
    SPAN_VALIDATE,
    ChainFactory,
    Recorder,
    TracedChain,
    attrs,
    call_kind,
    chains_fixture,
    is_child,
    recorder_fixture,
    service_of,
    validator_options,
)

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE

# A first chained call, fully instrumented: client CLIENT, Original SERVER, its validate, the
# outbound CLIENT, acquire, authority set-up + token, Downstream SERVER, its validate.
FIRST_CALL_SPANS = 9


def only(spans: list[ReadableSpan], what: str = "") -> ReadableSpan:
    assert len(spans) == 1, f"expected one {what}, got {[s.name for s in spans]}"
    return spans[0]


def identity_of(span: ReadableSpan) -> dict[str, Any]:
    prefixes = ("grpc_obo.user", "grpc_obo.client")
    return {k: v for k, v in attrs(span).items() if k.startswith(prefixes)}


def alice_identity(chain: TracedChain, caller_app: str) -> dict[str, str]:
    alice = chain.authority.world.user("alice")
    return {
        "grpc_obo.user.oid": alice.oid,
        "grpc_obo.user.tid": alice.tenant_id,
        "grpc_obo.client.id": chain.authority.world.app(caller_app).client_id,
    }


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


# -- one trace per call ----------------------------------------------------------------------------


@pytest.mark.parametrize("client_order", ["otel_first", "grpc_obo_first"])
async def test_first_call_is_one_trace_with_validate_and_acquire_under_the_rpc_spans(
    chains: ChainFactory, recorder: Recorder, client_order: str
) -> None:
    chain = await chains(client_order=client_order, server_order="otel_first")

    await chain.call(chain.token("alice"))
    spans = await recorder.expect(FIRST_CALL_SPANS)

    assert len(spans) == FIRST_CALL_SPANS, recorder.tree()
    assert len({s.context.trace_id for s in spans}) == 1, recorder.tree()
    client = only(recorder.client(CLIENT, "UnaryUnary"), "client span")
    assert client.parent is None  # the test's channel started the trace
    original = only(recorder.server(ORIGINAL, "UnaryUnary"), "Original server span")
    outbound = only(recorder.client(ORIGINAL, "UnaryUnary"), "outbound client span")
    downstream = only(recorder.server(DOWNSTREAM, "UnaryUnary"), "Downstream server span")
    validates = recorder.named(SPAN_VALIDATE)
    # Validation runs before the instrumentation's server span starts: each validate span is
    # that server span's sibling, under the caller's client span (see test_span_timing.py).
    [validate_original] = [v for v in validates if is_child(v, client)]
    [validate_downstream] = [v for v in validates if is_child(v, outbound)]
    acquire = recorder.one(SPAN_ACQUIRE)
    requests = recorder.named(SPAN_AUTHORITY)

    assert is_child(original, client)
    assert is_child(outbound, original)
    assert is_child(downstream, outbound)
    assert service_of(validate_original) == ORIGINAL
    assert service_of(validate_downstream) == DOWNSTREAM
    assert service_of(acquire) == ORIGINAL
    for validate in (validate_original, validate_downstream):
        assert validate.kind == SpanKind.INTERNAL
        assert attrs(validate)["grpc_obo.result"] == "accepted"
        assert validate.status.status_code == StatusCode.UNSET
    assert attrs(acquire)["grpc_obo.token.source"] == "authority"
    assert attrs(acquire)["grpc_obo.grant"] == "on_behalf_of"
    assert attrs(acquire)["grpc_obo.scopes"] == (chain.downstream_scope,)
    assert acquire.status.status_code == StatusCode.UNSET
    # The exchange: MSAL's one-time set-up (discovery) and the token request, both under acquire.
    assert sorted(attrs(r)["grpc_obo.authority.step"] for r in requests) == ["set-up", "token"]
    for request in requests:
        assert is_child(request, acquire)
        assert request.kind == SpanKind.CLIENT
        assert attrs(request)["grpc_obo.attempt"] == 1
        assert request.status.status_code == StatusCode.UNSET
    if client_order == "otel_first":
        # The global instrumentor's order: our interceptor runs inside the CLIENT span.
        assert is_child(acquire, outbound)
    else:
        # grpc_obo's interceptors first: the token is acquired before the CLIENT span starts.
        assert is_child(acquire, original)
        assert acquire.end_time <= outbound.start_time


async def test_validate_span_has_its_real_times_and_precedes_its_server_span(
    chains: ChainFactory, recorder: Recorder
) -> None:
    chain = await chains()

    await chain.call(chain.token("alice"))
    await recorder.expect(FIRST_CALL_SPANS)

    for service, caller in ((ORIGINAL, CLIENT), (DOWNSTREAM, ORIGINAL)):
        server = only(recorder.server(service, "UnaryUnary"))
        client = only(recorder.client(caller, "UnaryUnary"))
        [validate] = [v for v in recorder.named(SPAN_VALIDATE) if is_child(v, client)]
        # Validation ran in intercept_service, before the instrumentation started its span;
        # the span keeps those times, as the server span's sibling under the caller's span.
        assert is_child(server, client)
        assert service_of(validate) == service
        assert validate.start_time < validate.end_time <= server.start_time


async def test_server_instrumentation_after_grpc_obo_keeps_one_trace_via_traceparent(
    chains: ChainFactory, recorder: Recorder
) -> None:
    """interceptors=[grpc_obo, otel]: validate is a sibling of the SERVER span (parented by the
    caller's traceparent), the SERVER span gets no identity attributes, and a refused call has
    no SERVER span at all (grpc_obo answers before the instrumentation's wrapper runs)."""
    chain = await chains(client_order="otel_first", server_order="grpc_obo_first")

    await chain.call(chain.token("alice"))
    spans = await recorder.expect(FIRST_CALL_SPANS)

    assert len({s.context.trace_id for s in spans}) == 1, recorder.tree()
    client = only(recorder.client(CLIENT, "UnaryUnary"))
    original = only(recorder.server(ORIGINAL, "UnaryUnary"))
    outbound = only(recorder.client(ORIGINAL, "UnaryUnary"))
    downstream = only(recorder.server(DOWNSTREAM, "UnaryUnary"))
    validates = recorder.named(SPAN_VALIDATE)
    assert any(is_child(v, client) for v in validates), recorder.tree()
    assert any(is_child(v, outbound) for v in validates), recorder.tree()
    assert is_child(original, client) and is_child(downstream, outbound)
    assert is_child(recorder.one(SPAN_ACQUIRE), outbound)  # the handler runs inside SERVER
    for validate in validates:
        assert identity_of(validate)  # the caller's identity is on the validate span only
    assert identity_of(original) == {} and identity_of(downstream) == {}

    recorder.clear()
    error = await refused(chain.call(None))
    assert error.code() == UNAUTHENTICATED
    await recorder.expect(2)
    assert recorder.server(ORIGINAL) == []
    client = only(recorder.client(CLIENT, "UnaryUnary"))
    assert is_child(recorder.one(SPAN_VALIDATE), client)


# -- the verified-token cache and the token cache --------------------------------------------------


async def test_second_call_of_a_user_has_no_validate_span_and_acquires_from_the_cache(
    chains: ChainFactory, recorder: Recorder
) -> None:
    chain = await chains()
    token = chain.token("alice")
    await chain.call(token)
    await recorder.expect(FIRST_CALL_SPANS)
    recorder.clear()

    await chain.call(token)
    spans = await recorder.expect(5)

    assert recorder.named(SPAN_VALIDATE) == []  # neither hop: verified-token cache hits
    assert recorder.named(SPAN_AUTHORITY) == []
    acquire = recorder.one(SPAN_ACQUIRE)
    assert attrs(acquire)["grpc_obo.token.source"] == "cache"
    assert acquire.status.status_code == StatusCode.UNSET
    assert len({s.context.trace_id for s in spans}) == 1


async def test_a_verified_token_cache_hit_creates_no_span_at_all(
    chains: ChainFactory, recorder: Recorder
) -> None:
    chain = await chains()
    token = chain.token("alice")
    await chain.call(token)
    await recorder.expect(FIRST_CALL_SPANS)
    recorder.clear()

    await chain.call(token)
    spans = await recorder.expect(5)

    # client, Original SERVER, outbound CLIENT, Downstream SERVER, and acquire (a cache read is
    # still an acquisition); nothing for the two validations that the cache answered.
    assert sorted(s.name for s in spans) == sorted([f"/{ECHO}/UnaryUnary"] * 4 + [SPAN_ACQUIRE])
    assert len(recorder.server(ORIGINAL)) == len(recorder.server(DOWNSTREAM)) == 1


async def test_caller_identity_is_on_both_server_spans_on_every_call(
    chains: ChainFactory, recorder: Recorder
) -> None:
    chain = await chains()
    token = chain.token("alice")

    for call in ("first (cache miss)", "second (cache hit)"):
        recorder.clear()
        await chain.call(token)
        await recorder.expect(5)
        original = only(recorder.server(ORIGINAL, "UnaryUnary"))
        downstream = only(recorder.server(DOWNSTREAM, "UnaryUnary"))
        assert identity_of(original) == alice_identity(chain, "client"), call
        # After On-Behalf-Of the calling app is the Original API (azp of the exchanged token).
        assert identity_of(downstream) == alice_identity(chain, "original"), call
        for server in (original, downstream):
            assert attrs(server)["grpc_obo.identity.kind"] == "user"


async def test_concurrent_first_calls_of_a_user_share_one_exchange_as_single_flight(
    chains: ChainFactory, recorder: Recorder
) -> None:
    chain = await chains(client_order="grpc_obo_first")
    token = chain.token("alice")
    chain.authority.faults.latency = 0.3  # keeps the first exchange in flight for the second

    await asyncio.gather(chain.call(token), chain.call(token))
    await recorder.wait_count(SPAN_ACQUIRE, 2)
    await recorder.settle()

    sources = sorted(attrs(a)["grpc_obo.token.source"] for a in recorder.named(SPAN_ACQUIRE))
    assert sources == ["authority", "single_flight"]
    assert chain.authority.requests.count(grant="obo", user="alice") == 1
    token_requests = [
        r for r in recorder.named(SPAN_AUTHORITY) if attrs(r)["grpc_obo.authority.step"] == "token"
    ]
    assert len(token_requests) == 1


# -- refusals are answers, faults are errors -------------------------------------------------------


def refusal_spans(recorder: Recorder, method: str) -> tuple[ReadableSpan, ReadableSpan]:
    server = only(recorder.server(ORIGINAL, method), f"server span of {method}")
    caller = only(recorder.client(CLIENT, method), f"client span of {method}")
    # Validation ran before the server span existed: its sibling, under the caller's span.
    [validate] = [v for v in recorder.named(SPAN_VALIDATE) if is_child(v, caller)]
    assert is_child(server, caller)
    return server, validate


@pytest.mark.parametrize("kind", RPC_KINDS)
async def test_a_call_without_token_is_unauthenticated_and_no_span_is_an_error(
    chains: ChainFactory, recorder: Recorder, kind: str
) -> None:
    chain = await chains()

    error = await refused(call_kind(chain.stub, kind, (), hold_requests=True))
    await recorder.expect(3)

    assert error.code() == UNAUTHENTICATED
    assert dict(error.trailing_metadata() or ())["www-authenticate"] == "Bearer"
    server, validate = refusal_spans(recorder, kind)
    assert attrs(validate)["error.type"] == "MissingTokenError"
    assert attrs(validate)["grpc_obo.refusal.reason"] == "missing_token"
    assert attrs(validate)["grpc_obo.result"] == "refused"
    assert identity_of(validate) == {}
    assert validate.status.status_code == StatusCode.UNSET
    assert server.status.status_code == StatusCode.UNSET
    assert attrs(server)["rpc.grpc.status_code"] == UNAUTHENTICATED.value[0]
    assert recorder.named(SPAN_ACQUIRE) == []


@pytest.mark.parametrize("kind", RPC_KINDS)
async def test_a_token_without_the_scope_is_permission_denied_and_no_span_is_an_error(
    chains: ChainFactory, recorder: Recorder, kind: str
) -> None:
    chain = await chains()
    token = chain.token("alice", scopes=["Other.Scope"])

    error = await refused(call_kind(chain.stub, kind, chain.auth(token), hold_requests=True))
    await recorder.expect(3)

    assert error.code() == PERMISSION_DENIED
    server, validate = refusal_spans(recorder, kind)
    assert attrs(validate)["error.type"] == "InsufficientScopeError"
    assert attrs(validate)["grpc_obo.refusal.reason"] == "insufficient_scope"
    # The token was valid: whose call was refused is known and recorded.
    assert identity_of(validate) == alice_identity(chain, "client")
    assert validate.status.status_code == StatusCode.UNSET
    assert server.status.status_code == StatusCode.UNSET


@pytest.mark.parametrize("kind", RPC_KINDS)
async def test_unreachable_signing_keys_are_unavailable_and_validate_is_an_error(
    chains: ChainFactory, recorder: Recorder, kind: str
) -> None:
    chain = await chains(start_validators=False)
    chain.authority.faults.jwks_down = True

    error = await refused(
        call_kind(chain.stub, kind, chain.auth(chain.token("alice")), hold_requests=True)
    )
    await recorder.wait_count(SPAN_VALIDATE, 1)
    await recorder.settle()

    assert error.code() == UNAVAILABLE
    server, validate = refusal_spans(recorder, kind)
    assert attrs(validate)["error.type"] == "KeySourceUnavailableError"
    assert validate.status.status_code == StatusCode.ERROR
    assert server.status.status_code == StatusCode.ERROR  # the instrumentation's, for UNAVAILABLE
    jwks = [s for s in recorder.named(SPAN_KEYS) if attrs(s)["url.full"].endswith("/keys")]
    assert jwks, recorder.tree()
    for fetch in jwks:
        assert fetch.status.status_code == StatusCode.ERROR
        assert "error.type" in attrs(fetch)


# -- signing key fetches ---------------------------------------------------------------------------


async def test_key_fetches_are_client_spans_with_public_urls_in_the_callers_trace(
    chains: ChainFactory, recorder: Recorder
) -> None:
    chain = await chains(start_validators=False)

    await chain.call(chain.token("alice"))
    await recorder.wait_count(SPAN_KEYS, 4)
    await recorder.settle()

    fetches = recorder.named(SPAN_KEYS)
    options = validator_options(chain.authority, "original")
    urls = sorted(attrs(f)["url.full"] for f in fetches)
    discovery = options.discovery_url
    assert urls.count(discovery) == 2  # one per API: each validator discovers its keys
    assert len(urls) == 4 and all(u.startswith(chain.authority.base_url + "/") for u in urls)
    assert all("?" not in u and "@" not in u for u in urls)
    client = only(recorder.client(CLIENT, "UnaryUnary"))
    outbound = only(recorder.client(ORIGINAL, "UnaryUnary"))
    for fetch in fetches:
        assert fetch.kind == SpanKind.CLIENT
        assert fetch.status.status_code == StatusCode.UNSET
        assert "error.type" not in attrs(fetch)
        # Started while validating in intercept_service, before any server span: under the
        # validate span, itself under the caller's span (a sibling of the server span).
        [validate] = [v for v in recorder.named(SPAN_VALIDATE) if is_child(fetch, v)]
        assert service_of(validate) == service_of(fetch)
        assert is_child(validate, client) or is_child(validate, outbound), recorder.tree()
    assert len({s.context.trace_id for s in recorder.spans()}) == 1

    recorder.clear()
    await chain.call(chain.token("alice"))  # a new token: validated, keys known
    await recorder.expect(5)
    assert recorder.named(SPAN_KEYS) == []


# -- the exchange ----------------------------------------------------------------------------------


CHALLENGE = (
    '{"access_token":{"capolids":{"essential":true,'
    '"values":["5eC12e70-0000-4000-8000-00000000ca01"]}}}'
)


async def test_claims_challenge_at_the_exchange_is_flagged_without_its_value(
    chains: ChainFactory, recorder: Recorder
) -> None:
    chain = await chains(client_order="grpc_obo_first")
    chain.authority.faults.require_claims("alice", claims=CHALLENGE)

    error = await refused(chain.call(chain.token("alice")))
    await recorder.wait_count(SPAN_ACQUIRE, 1)
    await recorder.settle()

    assert error.code() == UNAUTHENTICATED
    assert "insufficient_claims" in dict(error.trailing_metadata() or ())["www-authenticate"]
    original = only(recorder.server(ORIGINAL, "UnaryUnary"))
    acquire = recorder.one(SPAN_ACQUIRE)
    assert is_child(acquire, original)
    assert attrs(acquire)["grpc_obo.claims_challenge"] is True
    assert attrs(acquire)["error.type"] == "ClaimsChallengeError"
    assert attrs(acquire)["grpc_obo.entra.error"] == "interaction_required"
    assert all(isinstance(c, int) for c in attrs(acquire)["grpc_obo.entra.error_codes"])
    # The user must act: an answer (UNAUTHENTICATED with a challenge), not the service's fault.
    assert acquire.status.status_code == StatusCode.UNSET
    assert original.status.status_code == StatusCode.UNSET
    [token_request] = [
        r for r in recorder.named(SPAN_AUTHORITY) if attrs(r)["grpc_obo.authority.step"] == "token"
    ]
    assert is_child(token_request, acquire)
    assert attrs(token_request)["grpc_obo.claims_challenge"] is True
    assert attrs(token_request)["grpc_obo.retry"] is False
    for span in recorder.spans():
        for value in attrs(span).values():
            assert "capolids" not in str(value) and "5eC12e70" not in str(value)
        for event in span.events:
            assert "capolids" not in str(dict(event.attributes or {}))


async def test_an_unavailable_authority_makes_acquire_and_every_attempt_errors(
    chains: ChainFactory, recorder: Recorder
) -> None:
    chain = await chains(client_order="grpc_obo_first")
    chain.authority.faults.fail(503, user="alice", times=None)

    error = await refused(chain.call(chain.token("alice")))
    await recorder.wait_count(SPAN_ACQUIRE, 1)
    await recorder.settle()

    assert error.code() == UNAVAILABLE
    acquire = recorder.one(SPAN_ACQUIRE)
    assert attrs(acquire)["error.type"] == "AuthorityUnavailableError"
    assert acquire.status.status_code == StatusCode.ERROR
    attempts = [
        r for r in recorder.named(SPAN_AUTHORITY) if attrs(r)["grpc_obo.authority.step"] == "token"
    ]
    assert sorted(attrs(a)["grpc_obo.attempt"] for a in attempts) == [1, 2]  # FAST_RETRY: 2
    for attempt in attempts:
        assert is_child(attempt, acquire)
        assert attempt.status.status_code == StatusCode.ERROR
        assert attrs(attempt)["grpc_obo.retry"] is True
    assert only(recorder.server(ORIGINAL)).status.status_code == StatusCode.ERROR


async def test_a_failed_acquisition_inside_the_client_instrumentation_stays_in_the_trace(
    chains: ChainFactory, recorder: Recorder
) -> None:
    """Under the global client instrumentor's order a failed acquisition raises inside its
    CLIENT span. opentelemetry-instrumentation-grpc 0.66b ends that span only for grpc errors,
    so it may never be exported: the acquire span then points at a parent Jaeger never sees
    (shown as a warning there), though it stays in the call's trace."""
    chain = await chains(client_order="otel_first")
    chain.authority.faults.require_claims("alice", claims=CHALLENGE)

    await refused(chain.call(chain.token("alice")))
    await recorder.wait_count(SPAN_ACQUIRE, 1)
    await recorder.settle()

    original = only(recorder.server(ORIGINAL, "UnaryUnary"))
    acquire = recorder.one(SPAN_ACQUIRE)
    assert acquire.context.trace_id == original.context.trace_id
    outbound = recorder.client(ORIGINAL, "UnaryUnary")
    if outbound:  # the instrumentation ended its span: a proper child
        assert is_child(acquire, outbound[0]) and is_child(outbound[0], original)
    else:  # its span was left open: the parent is not among the exported spans
        assert acquire.parent is not None
        assert acquire.parent.span_id not in recorder.by_id()


# -- without any instrumentation -------------------------------------------------------------------


def traceparent_of(span: Any) -> tuple[tuple[str, str], ...]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return tuple(carrier.items())


async def test_without_instrumentation_validate_follows_the_callers_traceparent(
    chains: ChainFactory, recorder: Recorder
) -> None:
    chain = await chains(client_order="none", server_order="none", test_channel_traced=False)
    caller = recorder.tracer(CLIENT).start_span("test.caller")
    try:
        await chain.call(chain.token("alice"), metadata=traceparent_of(caller))
    finally:
        caller.end()
    await recorder.wait_count(SPAN_VALIDATE, 2)
    await recorder.settle()

    spans = recorder.spans()
    assert {s.name for s in spans} <= GRPC_OBO_SPANS | {"test.caller"}, recorder.tree()
    validates = recorder.named(SPAN_VALIDATE)
    test_span = recorder.one("test.caller")
    first = [v for v in validates if is_child(v, test_span)]
    assert len(first) == 1, recorder.tree()  # the Original's: the caller's traceparent parents it
    assert identity_of(first[0]) == alice_identity(chain, "client")
    # The Original API (the relay) neither traces nor propagates: with no current span in its
    # handler, acquire starts a trace of its own, and the Downstream's validate (no traceparent
    # arrived) another.
    acquire = recorder.one(SPAN_ACQUIRE)
    assert acquire.parent is None
    assert attrs(acquire)["grpc_obo.token.source"] == "authority"
    assert all(is_child(r, acquire) for r in recorder.named(SPAN_AUTHORITY))
    [second] = [v for v in validates if v is not first[0]]
    assert second.parent is None


async def test_without_instrumentation_acquire_nests_under_the_applications_current_span(
    chains: ChainFactory, recorder: Recorder
) -> None:
    chain = await chains(
        client_order="none",
        server_order="none",
        test_channel_traced=False,
        handler_span="app.handler",
    )
    caller = recorder.tracer(CLIENT).start_span("test.caller")
    try:
        await chain.call(chain.token("alice"), metadata=traceparent_of(caller))
    finally:
        caller.end()
    await recorder.wait_count(SPAN_VALIDATE, 2)
    await recorder.wait_count("app.handler", 1)
    await recorder.settle()

    test_span = recorder.one("test.caller")
    handler = recorder.one("app.handler")
    acquire = recorder.one(SPAN_ACQUIRE)
    assert is_child(acquire, handler)  # the current span when the outbound call was made
    validates = recorder.named(SPAN_VALIDATE)
    assert any(is_child(v, test_span) for v in validates), recorder.tree()
    assert any(is_child(v, handler) for v in validates), recorder.tree()  # via traceparent
    # The handler's span is not the caller's child (nothing extracted the caller's context for
    # it), so this is two traces: the caller's with the Original's validate, the handler's.
    assert handler.parent is None
